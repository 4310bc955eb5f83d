"""What this CPU can do, for choosing paths and for naming the machine beside every figure.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the flags are unknown and every
reduced-precision path is treated as not worthwhile until it is measured.
"""

from __future__ import annotations

import functools
import platform

#: Flags that decide which paths can be fast: bfloat16 arithmetic (AVX512-BF16, AMX), int8 dot
#: products (AVX512-VNNI, AVX-VNNI) and the vector width.
RELEVANT = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset]:
    """``(model name, flags)`` of the first CPU."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = " ".join(value.split())
                elif key == "flags":
                    flags = frozenset(value.split())
                if key == "" and flags:  # end of the first processor's block
                    break
    except OSError:
        pass
    return model, flags


def has_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively; without it torch's bf16 convolutions fall back to a
    scalar GEMM (12x slower than fp32 on AVX2-only Zen 3) — never a fast path there."""
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (what makes int8 inference pay)."""
    flags = cpu_info()[1]
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def describe() -> str:
    """e.g. ``"AMD EPYC (avx2 fma; no AVX-512, VNNI or BF16)"``, for logs and benchmark tables."""
    model, flags = cpu_info()
    present = [f for f in RELEVANT if f in flags]
    missing = [name for name, ok in (("AVX-512", "avx512f" in flags), ("VNNI", has_vnni()), ("BF16", has_bf16())) if not ok]
    return f"{model} ({' '.join(present) or 'flags unknown'}" + (f"; no {', '.join(missing)})" if missing else ")")


def worthwhile_paths() -> str:
    """Which reduced-precision paths can pay on this CPU (each is still timed at setup before use)."""
    paths = ["openvino-int8 (" + ("VNNI int8 dot products" if has_vnni() else "no VNNI: a smaller gain") + ")"]
    if has_bf16():
        paths += ["openvino-bf16", "torch-bf16"]
    else:
        paths.append("no bf16 path (no AVX512-BF16 / AMX: bf16 would be emulated, slower than fp32)")
    return ", ".join(paths)
