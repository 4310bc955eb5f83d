"""``lightsaft-infer bench``: whole-song timings against the MDX budgets.

For each duration a stereo test song is generated and written to a WAV (and
``--song DIR`` adds a real song with its reference stems); then each path
separates it from file to files in a fresh process (so peak RSS is that
path's own): the authors' reference path (one ``torch.stft`` → net →
``torch.istft`` per chunk and per source, batch 1, with the separator's trim
as their ``K``; skipped for songs longer than ``reference_max`` seconds) and :class:`Separator` on each backend — the
exact ones (``onnx``, ``torch``) and the fast ones (``openvino-int8``,
``openvino-bf16``, ``torch-bf16``; by default the one ``predict.py`` would fall
back to). Reported
per song and path: setup, wall time (read + separate + write), real-time
factor, peak RSS, the 240 s and 1.57 × duration budgets and the margin, the
speed-up over the reference, and for every path its largest difference from
the first exact path's stems and the change of mean MDX SDR against the
reference stems (songs with stems only). Per path, the longest song that
fits 240 s is extrapolated from the RTF of the longest song measured.
"""

from __future__ import annotations

import json
import multiprocessing
import math
import os
import platform
import resource
import tempfile
import time

import numpy as np

from .chunking import DEFAULT_OVERLAP, plan_for
from .mdx import mdx_sdr, reference_stem, song_budget

STEMS = ("vocals", "drums", "bass", "other")


def synth_song(duration: float, sample_rate: int = 44100, seed: int = 0) -> np.ndarray:
    """A deterministic music-like stereo test signal ``(samples, 2)``: bass, chords, kick, hi-hat, a lead."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    beat = 0.5  # 120 bpm
    song = np.zeros((n, 2), np.float32)
    roots = 55.0 * 2 ** (np.array([0, 5, 7, 3]) / 12)  # A, D, E, C
    bar = (t // (4 * beat)).astype(int) % 4
    root = roots[bar]
    song += (0.25 * np.sin(2 * np.pi * root * t))[:, None].astype(np.float32)  # bass
    chord = sum(np.sin(2 * np.pi * root * 4 * r * t) for r in (1, 1.26, 1.5)) / 3
    song[:, 0] += 0.12 * chord.astype(np.float32)
    song[:, 1] += 0.09 * chord.astype(np.float32)
    phase = t % beat
    song += (0.5 * np.sin(2 * np.pi * 60 * phase) * np.exp(-phase * 30))[:, None].astype(np.float32)  # kick
    hat = (t % (beat / 2)) < 0.03
    song += (0.05 * hat[:, None] * rng.standard_normal((n, 2))).astype(np.float32)  # hi-hat
    note = 440 * 2 ** (rng.integers(0, 12, size=int(duration / beat) + 1) / 12)
    lead = np.sin(2 * np.pi * np.cumsum(note[(t // beat).astype(int)]) / sample_rate + 0.3 * np.sin(2 * np.pi * 5 * t))
    song[:, 0] += 0.08 * lead.astype(np.float32)
    song[:, 1] += 0.12 * lead.astype(np.float32)
    return song


def _measure(kind, weights, song, out_dir, options, queue):
    """Child process: separate ``song`` with ``kind`` and report timings and peak RSS."""
    try:
        start = time.perf_counter()
        stems = {s: os.path.join(out_dir, f"{kind}-{s}.wav") for s in ("vocals", "drums", "bass", "other")}
        if kind == "reference":
            import torch

            from .audio import read_audio, write_stems
            from .families import build_network
            from .reference import separate_reference
            from .threads import cpu_threads
            from .weights import load_weights

            torch.set_num_threads(cpu_threads(options.get("threads")))
            config, tensors = load_weights(os.path.splitext(weights)[0] + ".safetensors")
            net = build_network(config, tensors)
            setup = time.perf_counter() - start
            t0 = time.perf_counter()
            audio, rate = read_audio(song)
            t1 = time.perf_counter()
            out = separate_reference(net, audio, trim=options["trim"])  # the separator's trim, resolved by run_bench
            t2 = time.perf_counter()
            write_stems({stems[k]: v for k, v in out.items()}, rate)
            t3 = time.perf_counter()
            timing = {"read": t1 - t0, "separate": t2 - t1, "write": t3 - t2}
        else:
            from .separator import Separator

            sep = Separator.from_file(weights, backend=kind, threads=options.get("threads"), mode=options["mode"],
                                      overlap=options["overlap"], trim=options.get("trim"),
                                      postfilter=options.get("postfilter", "none"),
                                      iterations=options.get("iterations", 1), shifts=options.get("shifts", 0))  # fmt: skip
            sep.warm_up()  # the setup figure: load + one window, as predict.py does before the first song
            setup = time.perf_counter() - start
            r = sep.separate_file(song, stems)
            timing = {"read": r.read, "separate": r.separate, "write": r.write}
            windows = sum(r.windows.values())
            if windows:  # the network's cost per window (STFTs and overlap-add included): compares backends
                timing["per_window"] = r.separate / windows
        peak = _peak_rss_mb()
        queue.put({"ok": True, "setup_s": setup, **{k + "_s": v for k, v in timing.items()}, "peak_rss_mb": peak})
    except Exception as err:  # reported in the table, never fatal for the other paths
        queue.put({"ok": False, "error": f"{type(err).__name__}: {err}"})


def _peak_rss_mb() -> float:
    """This process's own peak RSS. ``VmHWM`` belongs to the process's own address space; Linux's
    ``ru_maxrss`` carries the parent's high-water mark over fork and exec, so a child started by a
    parent that once held large arrays would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: the best there is


#: Shortest and longest song ``bench`` generates (s): three hours of stereo float is 3.8 GB.
MIN_S, MAX_S = 1.0, 3 * 3600.0


def failed_paths(report: dict) -> list:
    """``"song: path (error)"`` for every path that failed in a bench report."""
    return [f"{e['song']}: {k} ({r.get('error', 'failed')})" for e in report["songs"] for k, r in e["paths"].items()
            if not r["ok"]]


def _run_child(kind, weights, song, out_dir, options):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, weights, song, out_dir, options, queue))
    proc.start()
    try:
        result = queue.get()
    finally:
        proc.join()
    return result


def default_bench_backends(weights=None) -> list:
    """The exact ONNX Runtime path and the fast path ``predict.py`` would fall back to."""
    from .backends import default_fast_backend

    fast = default_fast_backend(weights)
    return ["onnx"] + ([fast] if fast else [])


def run_bench(weights=None, durations=(60.0, 240.0), backends=None, reference=True,
              mode="overlap", overlap=DEFAULT_OVERLAP, json_path=None, threads=None, printer=print, song_dir=None,
              reference_max=240.0, plot_path=None, trim=None, postfilter="none", iterations=1, shifts=0) -> dict:  # fmt: skip
    """Run the benchmark; print a table and return (and optionally write) the JSON report."""
    import soundfile as sf

    from .backends import EXACT_BACKENDS, default_weights, torch_available
    from .cpu import describe as cpu_describe
    from .threads import cpu_threads

    for duration in durations:  # generated in memory: a nonsense length is refused before any work
        if not (isinstance(duration, (int, float)) and math.isfinite(duration) and MIN_S <= duration <= MAX_S):
            raise ValueError(f"bench --durations are seconds from {MIN_S:g} to {MAX_S:g} (a generated song is "
                             f"held in memory), not {duration!r:.40}")
    weights = os.fspath(weights or default_weights())
    backends = default_bench_backends(weights) if backends is None else backends
    options = {"mode": mode, "overlap": overlap, "threads": threads, "trim": trim, "postfilter": postfilter,
               "iterations": iterations, "shifts": shifts}  # fmt: skip
    kinds = (["reference"] if reference and torch_available() else []) + list(backends)
    exact = next((k for k in backends if k in EXACT_BACKENDS), None)
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_threads()} threads granted",
        "cpu": cpu_describe(),
        "weights": weights, "mode": mode, "overlap": overlap, "trim": None, "postfilter": postfilter,
        "iterations": iterations, "shifts": shifts, "exact_path": exact, "songs": [],
    }  # fmt: skip
    safetensors = os.path.splitext(weights)[0] + ".safetensors"
    fade = 0
    if os.path.exists(safetensors):
        from .weights import read_config

        config = read_config(safetensors)
        plan = plan_for(config, 0, mode, overlap, trim)
        options["trim"] = report["trim"] = plan.trim  # resolved once: every path, the reference too, uses it
        report["network"] = config.title
        if mode == "authors":  # the reference path then takes the authors' chunking of the network's code base
            options["trim"] = None
        fade = plan.fade
        from .augment import default_order

        offered = len(default_order(config.hop_length, plan.trim))
        if not 0 <= shifts <= offered:  # refused up front, not as a failed row for every path
            raise ValueError(f"--shifts must be from 0 to {offered} with this chunking, not {shifts}")
    if fade and mode != "authors":  # the reference path has no cross-fade: its stems would differ by design
        kinds = [k for k in kinds if k != "reference"]
    with tempfile.TemporaryDirectory(prefix="lightsaft-bench-") as tmp:
        songs = []
        for duration in durations:
            path = os.path.join(tmp, f"song-{duration:g}s.wav")
            sf.write(path, synth_song(duration), 44100, subtype="PCM_16")
            songs.append((f"synth {duration:g}s", path, None))
        if song_dir is not None:
            songs.append((os.path.basename(os.path.normpath(song_dir)), os.path.join(song_dir, "mixture.wav"), song_dir))
        for name, path, stems_dir in songs:
            duration = sf.info(path).duration
            round1, round2 = song_budget(duration)
            entry = {"song": name, "duration_s": duration, "budget_round1_s": round1, "budget_round2_s": round2,
                     "paths": {}}  # fmt: skip
            outputs = {}
            for kind in kinds:
                if kind == "reference" and duration > reference_max:
                    continue
                out_dir = os.path.join(tmp, f"{kind}-{len(report['songs'])}")
                os.makedirs(out_dir)
                r = _run_child(kind, weights, path, out_dir, options)
                if r["ok"]:
                    r["wall_s"] = r["read_s"] + r["separate_s"] + r["write_s"]
                    r["rtf"] = r["wall_s"] / duration
                    r["margin_s"] = min(round1, round2) - r["wall_s"]
                    outputs[kind] = {s: sf.read(os.path.join(out_dir, f"{kind}-{s}.wav"), dtype="float32")[0] for s in STEMS}
                    if stems_dir is not None:
                        refs = {s: sf.read(reference_stem(stems_dir, s), dtype="float32")[0] for s in STEMS}
                        r["mdx_sdr"] = {s: mdx_sdr(refs[s], outputs[kind][s]) for s in STEMS}
                        r["mdx_sdr"]["mean"] = float(np.mean([r["mdx_sdr"][s] for s in STEMS]))
                entry["paths"][kind] = r
            _compare(entry, outputs, exact)
            report["songs"].append(entry)
    report["fits_240s_up_to_s"] = _longest_fitting(report)
    _remember(weights, report, exact)
    printer(format_table(report))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    if plot_path:
        plot(report, plot_path)
    return report


def _remember(weights, report: dict, exact) -> None:
    """A pulled model's exact-path RTF on the longest song timed, for ``lightsaft-infer models``."""
    from . import cpu
    from .models import record_bench

    timed = [(e["duration_s"], e["paths"][exact]["rtf"]) for e in report["songs"] if e["paths"].get(exact, {}).get("ok")]
    if timed:
        duration, rtf = max(timed)
        try:
            record_bench(weights, rtf, duration, cpu.describe())
        except OSError:  # a read-only cache costs the record, not the benchmark
            pass


def _compare(entry: dict, outputs: dict, exact) -> None:
    """Speed-up over the reference; difference from the exact path's stems and SDR change against it."""
    ref = entry["paths"].get("reference", {})
    base = entry["paths"].get(exact, {})
    for kind, r in entry["paths"].items():
        if not r["ok"]:
            continue
        if ref.get("ok"):
            r["speedup_vs_reference"] = ref["wall_s"] / r["wall_s"]
            if kind != "reference" and "reference" in outputs:
                r["max_diff_vs_reference"] = float(max(np.abs(outputs[kind][s] - outputs["reference"][s]).max() for s in STEMS))
        if kind != exact and exact in outputs:
            r["max_diff_vs_exact"] = float(max(np.abs(outputs[kind][s] - outputs[exact][s]).max() for s in STEMS))
            if "mdx_sdr" in r and "mdx_sdr" in base:
                r["sdr_change_vs_exact_db"] = r["mdx_sdr"]["mean"] - base["mdx_sdr"]["mean"]


def _longest_fitting(report: dict) -> dict:
    """Per path: 240 s / RTF of its longest measured song (separation time grows linearly with length)."""
    out = {}
    for entry in sorted(report["songs"], key=lambda e: e["duration_s"]):
        for kind, r in entry["paths"].items():
            if r["ok"]:
                out[kind] = 240.0 / r["rtf"] if r["rtf"] > 0 else float("inf")
    return out


def plot(report: dict, path) -> None:
    """PNG: wall time against song duration per path, with the 240 s and 1.57 × duration budget lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    songs = sorted(report["songs"], key=lambda e: e["duration_s"])
    longest = max(e["duration_s"] for e in songs)
    kinds = sorted({k for e in songs for k in e["paths"]}, key=lambda k: (k != "reference", k))
    for kind in kinds:
        pts = [(e["duration_s"], e["paths"][kind]["wall_s"]) for e in songs if e["paths"].get(kind, {}).get("ok")]
        if pts:
            ax.plot(*zip(*pts), "o-", label=kind)
    xs = np.array([0, longest * 1.05])
    ax.axhline(240, color="red", ls="--", lw=1, label="round 1 budget (240 s)")
    ax.plot(xs, 1.57 * xs, color="darkred", ls=":", lw=1, label="round 2 budget (1.57 × duration)")
    ax.set_xlabel("song duration (s)")
    ax.set_ylabel("wall time, read + separate + write (s)")
    ax.set_title(f"lightsaft-infer bench {report['date']} ({report['machine']})", fontsize=9)
    ax.set_xlim(0, longest * 1.05)
    ax.set_ylim(0, max(300, 1.2 * max(r["wall_s"] for e in songs for r in e["paths"].values() if r["ok"])))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(report: dict) -> str:
    lines = [f"{report['date']}  {report['machine']}  CPU: {report.get('cpu', '?')}  {report.get('network', '')}",
             f"mode={report['mode']} overlap={report['overlap']} "
             f"trim={report.get('trim')} postfilter={report.get('postfilter', 'none')}  "
             f"exact path: {report['exact_path']}",
             f"{'song':>14} {'path':>13} {'setup s':>8} {'wall s':>8} {'RTF':>6} {'s/window':>8} {'peak MB':>8} "
             f"{'budget':>7} {'margin s':>9} {'speed-up':>9} {'Δ ref':>9} {'Δ exact':>9} {'SDR':>6} {'ΔSDR':>7}"]  # fmt: skip
    for song in report["songs"]:
        budget = min(song["budget_round1_s"], song["budget_round2_s"])
        for kind, r in song["paths"].items():
            head = f"{song['song']:>14} {kind:>13}"
            if not r["ok"]:
                lines.append(f"{head} failed: {r['error']}")
                continue
            speedup = f"{r['speedup_vs_reference']:8.2f}×" if "speedup_vs_reference" in r else f"{'':>9}"
            dref = f"{r['max_diff_vs_reference']:9.1e}" if "max_diff_vs_reference" in r else f"{'':>9}"
            diff = f"{r['max_diff_vs_exact']:9.1e}" if "max_diff_vs_exact" in r else f"{'':>9}"
            sdr = f"{r['mdx_sdr']['mean']:6.2f}" if "mdx_sdr" in r else f"{'':>6}"
            delta = f"{r['sdr_change_vs_exact_db']:+7.3f}" if "sdr_change_vs_exact_db" in r else f"{'':>7}"
            per_window = f"{r['per_window_s']:8.3f}" if "per_window_s" in r else f"{'':>8}"
            lines.append(f"{head} {r['setup_s']:8.1f} {r['wall_s']:8.1f} {r['rtf']:6.3f} {per_window} {r['peak_rss_mb']:8.0f} "
                         f"{budget:7.1f} {r['margin_s']:9.1f} {speedup} {dref} {diff} {sdr} {delta}")  # fmt: skip
    fits = ", ".join(f"{k} {v:.0f} s" for k, v in report.get("fits_240s_up_to_s", {}).items())
    lines.append("Δ ref / Δ exact: largest sample difference from the reference path's / the exact path's stems; "
                 "SDR: mean MDX SDR against the song's stems; ΔSDR: its change against the exact path")
    lines.append(f"longest song that fits 240 s (extrapolated from the longest song measured): {fits}")
    return "\n".join(lines)
