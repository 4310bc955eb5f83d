"""Per-layer int8 sensitivity: which layers' quantisation costs the most, measured one at a time.

    python -m training.sensitivity ROOT --weights weights/default.onnx [--int8 weights/default.int8.xml]
        [--windows 4] [--json out.json]

Starts from an int8 IR (``training.quantize``'s output) and groups its
FakeQuantize nodes by the network layer they feed (``tfcs.3``: block 3's TFC
convolutions, ``values.3`` / ``lasift.3``: its latent-source linear layers,
``mix``: the LightSAFT mixing products, ``residual``: the blocks' skip adds,
``gpocm``: the decoders' gates, …). For every group it compiles two variants:

- ``only``: that group quantised, every other one in fp32 (its own cost);
- ``all-but``: everything quantised except that group (what keeping it in float buys).

FakeQuantize nodes are the activation quantisers; NNCF stores the weights as int8
constants, which stay int8 in every variant, so ``weights_only_db`` (every
FakeQuantize bypassed) is the floor that activations are measured against. Each
variant is scored on music windows (``ROOT/*/mixture.wav``, a training split:
never the songs you test on) as the signal-to-distortion ratio of its four
stems' spectrograms against the exact ONNX Runtime path's, in dB: higher is
closer to exact. The fully quantised model's figure is the baseline.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import time

import numpy as np

from lightsaft_infer.evaluate import write_json

#: Node-name prefixes (from the ONNX export) → layer group; unnamed elementwise ops by kind.
_KINDS = (("Add", "residual"), ("Mul", "gpocm"), ("MatMul", "mix"), ("Sigmoid", "gpocm"), ("Conv", "conv"))


def layer_of(name: str) -> str:
    """``/tfcs.3/Conv_2/WithoutBiases`` → ``tfcs.3``; ``/Add_35`` → ``residual``; ``/Conv_15`` → ``conv``. Also the
    names OpenVINO gives a converted torch module (``training.qat``'s IR): ``__module.lasift.3.0/aten::matmul/MatMul``
    → ``lasift.3``; ``aten::add/Add_5`` → ``residual``."""
    parts = name.lstrip("/").split("/")
    head = parts[0].removeprefix("__module.")
    if head.startswith("aten::"):  # an op of the graph's own forward: named by its kind
        head = parts[-1]
    head = re.sub(r"_\d+$", "", head)  # the per-source copies: tfcs.8_1 → tfcs.8
    module = re.match(r"^([a-z_]+\.\d+)(\.\d+)*$", head)  # lasift.3.0 (a Sequential's first layer) → lasift.3
    if module:
        return module.group(1)
    if head in ("first_conv", "last_conv"):
        return head
    for prefix, kind in _KINDS:
        if head.startswith(prefix):
            return kind
    return "other"


def fake_quantize_groups(model) -> dict:
    """``{group: [FakeQuantize friendly names]}`` of an OpenVINO model, grouped by the layer each feeds."""
    groups: dict = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        consumers = {layer_of(t.get_node().get_friendly_name()) for t in op.output(0).get_target_inputs()}
        group = sorted(consumers)[0] if consumers else "other"
        groups.setdefault(group, []).append(op.get_friendly_name())
    return groups


def without(model, names: set):
    """A copy of ``model`` with the FakeQuantize nodes ``names`` bypassed (their input passed through)."""
    clone = model.clone()
    for op in clone.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.get_friendly_name() in names:
            op.output(0).replace(op.input_value(0))
    return clone


def distortion_db(estimate: np.ndarray, exact: np.ndarray) -> float:
    """Signal-to-distortion of ``estimate`` against ``exact`` over all stems and windows, in dB."""
    return float(10 * np.log10(np.sum(exact**2) / max(np.sum((estimate - exact) ** 2), 1e-30)))


def measure(onnx_path, int8_xml, mixtures, n_windows: int = 4, seed: int = 1, progress=print, only=None) -> dict:
    """The sensitivity report (see the module docstring); ``only``: measure just these groups."""
    import openvino as ov

    from lightsaft_infer.backends import OnnxBackend
    from training.quantize import calibration_windows

    exact = OnnxBackend(onnx_path)
    config = exact.config
    per_song = max(1, -(-n_windows // len(mixtures)))
    windows = calibration_windows(mixtures, config, per_song, seed)[:n_windows]  # other offsets than calibration's seed
    references = [exact(w) for w in windows]
    core = ov.Core()
    base = core.read_model(os.fspath(int8_xml))
    base.reshape([1, 4, config.num_frame, config.n_bins])
    options = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": exact.threads, "PERFORMANCE_HINT": "LATENCY"}

    def score(model) -> float:
        request = core.compile_model(model, "CPU", options).create_infer_request()
        return distortion_db(np.stack([request.infer({0: w})[0] for w in windows]), np.stack(references))

    groups = fake_quantize_groups(base)
    everything = {n for names in groups.values() for n in names}
    t = time.perf_counter()
    report = {"windows": len(windows), "fake_quantize_nodes": len(everything), "int8_db": score(base),
              "weights_only_db": score(without(base, everything)), "layers": {}}  # fmt: skip
    chosen = sorted((g, n) for g, n in groups.items() if only is None or g in only)
    for k, (group, names) in enumerate(chosen):
        only = score(without(base, everything - set(names)))
        all_but = score(without(base, set(names)))
        report["layers"][group] = {"nodes": len(names), "only_db": only, "all_but_db": all_but,
                                   "gain_db": all_but - report["int8_db"]}  # fmt: skip
        progress(f"[{k + 1}/{len(chosen)}] {group:>18}: {len(names):4d} nodes  only {only:6.2f} dB  "
                 f"all-but {all_but:6.2f} dB  ({time.perf_counter() - t:.0f} s)")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder with <song>/mixture.wav (a training split)")
    p.add_argument("--weights", required=True, help="the fp32 ONNX export (NAME.onnx)")
    p.add_argument("--int8", default=None, help="its int8 IR (default NAME.int8.xml)")
    p.add_argument("--songs", type=int, default=4)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    mixtures = sorted(glob.glob(os.path.join(a.root, "*", "mixture.wav")))[: a.songs]
    if not mixtures:
        p.error(f"{a.root}: no <song>/mixture.wav")
    int8 = a.int8 or os.path.splitext(a.weights)[0] + ".int8.xml"
    report = measure(a.weights, int8, mixtures, a.windows)
    ranked = sorted(report["layers"].items(), key=lambda kv: kv[1]["only_db"])
    print(f"int8 (every layer): {report['int8_db']:.2f} dB against the exact path on {report['windows']} windows; "
          f"int8 weights with float activations: {report['weights_only_db']:.2f} dB")
    print("costliest layers quantised alone (lower = costlier):")
    for group, r in ranked[:12]:
        print(f"  {group:>18}  only {r['only_db']:6.2f} dB   keeping it in float: {r['gain_db']:+6.2f} dB")
    if a.json:
        write_json(report, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
