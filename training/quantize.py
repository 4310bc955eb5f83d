"""Post-training int8 quantisation of an ONNX export for the ``openvino-int8`` fast path.

    python -m training.quantize /work/corpus/train --weights weights/default.onnx
    # -> weights/default.int8.xml + .bin beside the weights

NNCF's static quantisation (preset MIXED: symmetric int8 weights per channel,
asymmetric activations; fast bias correction) calibrated on music windows:
``--songs`` mixtures under ROOT (``*/mixture.wav``), ``--per-song`` windows
each at seeded random offsets, as the separator would feed them (STFT of one
window). ``first_conv``, ``last_conv`` and (``--keep-float``, by default) the
first TFC block stay in floating point: the raw spectrogram's dynamic range
does not fit 8 bits. The model configuration goes
into the IR's runtime info, so the file describes itself. Needs ``nncf``
(training requirements); the runtime needs only OpenVINO.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import time

import numpy as np

#: Key of the SHA-256 of the fp32 weights (``weights.weights_digest`` of NAME.safetensors) it was made from.
from lightsaft_infer.backends import INT8_DIGEST_KEY as DIGEST_KEY

#: Layers kept in floating point (regular expressions over OpenVINO's node names from the ONNX export).
FLOAT_LAYERS = (".*first_conv.*", ".*last_conv.*")
#: Layer groups also kept in float by default (chosen by ``training.sensitivity``; see docs/benchmark.md):
#: the first TFC block sees the spectrogram's full dynamic range. With the step-10200 weights keeping it in
#: float (bf16 where the CPU has it) lifts the int8 model from 12.4 to 17.1 dB of the exact path on test
#: windows at no cost per window; with step 4600's it bought only 1 dB (and, bypassed in the IR, cost 12%).
DEFAULT_KEEP_FLOAT: list = ["tfcs.0"]
#: The same rule for every family: the first block after ``first_conv`` stays in float. The frozen v1 graph
#: names its blocks ``tfcs.N`` in order (encoders first); the v2 graph keeps its condition-free encoder as
#: ``encoders.N`` and names only the decoder's TFCs ``tfcs.N``, so its first block is ``encoders.0``.
FIRST_BLOCK = {"lasaft-v1": DEFAULT_KEEP_FLOAT, "lasaft-v2": ["encoders.0"]}


def default_keep_float(config) -> list:
    """The layer groups :func:`quantize` keeps in float unless told otherwise: the family's first block."""
    return list(FIRST_BLOCK.get(config.family, DEFAULT_KEEP_FLOAT))
#: Key of the model configuration in the IR's runtime info.
CONFIG_KEY = ("lightsaft", "config")


def calibration_windows(mixtures, config, per_song: int = 2, seed: int = 0) -> list:
    """``per_song`` windows of each mixture as network input, each ``(1, 4, num_frame, n_bins)`` float32."""
    import soundfile as sf

    from lightsaft_infer.stft import STFT

    stft, W = STFT(config.n_fft, config.hop_length), config.window_samples
    rng = np.random.default_rng(seed)
    windows = []
    for path in mixtures:
        x, _ = sf.read(path, dtype="float32", always_2d=True)
        x = np.repeat(x, 2, axis=1) if x.shape[1] == 1 else x[:, :2]
        x = np.pad(x, ((0, max(0, W - len(x))), (0, 0)))
        for _ in range(per_song):
            start = int(rng.integers(0, len(x) - W + 1))
            windows.append(stft.analyse(x[start : start + W].T[None]))
    return windows


def source_digest(onnx_path) -> str:
    """The digest of the fp32 weights behind ``NAME.onnx``: those of ``NAME.safetensors`` beside it (the
    export's source; ``export_onnx`` writes both from one set of tensors)."""
    from lightsaft_infer.weights import load_weights, weights_digest

    source = os.path.splitext(onnx_path)[0] + ".safetensors"
    if not os.path.exists(source):
        raise SystemExit(f"{source}: the fp32 weights of {onnx_path} are needed beside it (their hash goes into the int8 model)")
    return weights_digest(load_weights(source)[1])


def layer_patterns(groups) -> list:
    """NNCF ignored-scope patterns for layer groups as ``training.sensitivity`` names them (``tfcs.0``:
    block 0's TFC in every source branch)."""
    return [rf".*/{re.escape(g)}(_\d+)?/.*" for g in groups]


def save_ir(model, out_xml, config, digest: str, extra: dict | None = None) -> None:
    """Write an OpenVINO ``model`` to ``out_xml`` (+ ``.bin``) atomically, the ``.bin`` first (a reader opens the
    ``.xml``), with the model ``config``, the fp32 weights' ``digest`` and ``extra`` ``lightsaft`` entries in its
    runtime info."""
    import openvino as ov

    from lightsaft_infer.files import atomic_path, publish

    model.set_rt_info(config.to_json(), list(CONFIG_KEY))
    model.set_rt_info(digest, list(DIGEST_KEY))
    for key, value in (extra or {}).items():
        model.set_rt_info(value, [CONFIG_KEY[0], key])
    os.makedirs(os.path.dirname(os.path.abspath(out_xml)), exist_ok=True)
    tmp = atomic_path(out_xml, ".xml")
    tmp_bin = tmp[: -len(".xml")] + ".bin"
    try:
        ov.save_model(model, tmp, compress_to_fp16=False)
        publish(tmp_bin, os.path.splitext(out_xml)[0] + ".bin")
        publish(tmp, out_xml)
    finally:
        for leftover in (tmp, tmp_bin):
            if os.path.exists(leftover):
                os.unlink(leftover)


def quantize(onnx_path, mixtures, out_xml, per_song: int = 2, seed: int = 0, digest: str | None = None,
             extra: dict | None = None, keep_float=()) -> dict:
    """Quantise ``onnx_path`` with windows of ``mixtures``; write ``out_xml`` (+ ``.bin``) atomically.
    ``digest``: of the fp32 weights the IR stands for (default: ``NAME.safetensors`` beside the export; a
    QAT student passes its teacher's); ``extra``: more ``lightsaft`` runtime-info entries."""
    import nncf
    import openvino as ov

    from lightsaft_infer.export import read_onnx_config

    config = read_onnx_config(onnx_path)
    digest = digest or source_digest(onnx_path)  # before the minutes of calibration: a missing source fails at once
    os.makedirs(os.path.dirname(os.path.abspath(out_xml)), exist_ok=True)
    windows = calibration_windows(mixtures, config, per_song, seed)
    model = ov.Core().read_model(os.fspath(onnx_path))
    model.reshape([1, 4, config.num_frame, config.n_bins])
    t = time.perf_counter()
    quantized = nncf.quantize(
        model, nncf.Dataset(windows), subset_size=len(windows), preset=nncf.QuantizationPreset.MIXED,
        fast_bias_correction=True, ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_LAYERS) + layer_patterns(keep_float)),
    )  # fmt: skip
    seconds = time.perf_counter() - t
    extra = dict(extra or {})
    if keep_float:
        extra["float_layers"] = ",".join(keep_float)
    save_ir(quantized, out_xml, config, digest, extra)
    return {"windows": len(windows), "songs": len(mixtures), "seconds": seconds, "output": os.fspath(out_xml)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder with <song>/mixture.wav (a training split: not the songs you test on)")
    p.add_argument("--weights", required=True, help="the ONNX export to quantise (NAME.onnx)")
    p.add_argument("-o", "--output", default=None, help="default: NAME.int8.xml beside the weights")
    # one window each of the first 32 songs (sorted): in this project's corpus 16 GM-recipe and 16 wide-recipe songs,
    # the recipes the default weights were trained on (the other sets tried scored within 0.5 dB of it)
    p.add_argument("--songs", type=int, default=32)
    p.add_argument("--per-song", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-float", nargs="*", default=None,
                   help="layer groups left in floating point (names as training.sensitivity reports them; "
                        "default: the network's first block, tfcs.0 for v1, encoders.0 for v2)")
    args = p.parse_args(argv)
    mixtures = sorted(glob.glob(os.path.join(args.root, "*", "mixture.wav")))[: args.songs]
    if not mixtures:
        p.error(f"{args.root}: no <song>/mixture.wav")
    out = args.output or os.path.splitext(args.weights)[0] + ".int8.xml"
    keep_float = args.keep_float
    if keep_float is None:
        from lightsaft_infer.export import read_onnx_config

        keep_float = default_keep_float(read_onnx_config(args.weights))
    report = quantize(args.weights, mixtures, out, args.per_song, args.seed, keep_float=keep_float)
    print(f"{report['output']}: int8, calibrated on {report['windows']} windows of {report['songs']} songs "
          f"in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
