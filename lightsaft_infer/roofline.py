"""How close the exact path runs to this CPU's limit: the network's FLOPs per window against the
measured peak of a plain matrix product on the same cores, in the same runtime.

The peak is ONNX Runtime's own single-precision GEMM (the MLAS kernels its convolutions also use)
on ``n × n`` fp32 matrices with the exact path's thread count, best of several runs; the network's
work is counted from the export's shapes (``2·MAC`` of every Conv, ConvTranspose, MatMul and Gemm;
elementwise operations are not counted, so the fraction is a lower bound of how busy the FMA units
are). Needs the ``onnx`` package (the ``torch`` extra) to read shapes; the separator does not.
"""

from __future__ import annotations

import time

import numpy as np

#: Operations whose multiply-adds are counted.
COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _shapes(model) -> dict:
    """``{tensor name: shape tuple}`` for every tensor whose shape is fully known."""
    shapes = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def node_flops(node, shapes: dict) -> int:
    """FLOPs (``2·MAC``) of one counted node; 0 for other nodes. A ValueError when a counted node's
    shapes are unknown (the count would be silently short)."""
    if node.op_type not in COUNTED:
        return 0
    try:
        if node.op_type == "Conv":
            w, y = shapes[node.input[1]], shapes[node.output[0]]  # (Cout, Cin/g, kh, kw), (N, Cout, H, W)
            return 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        if node.op_type == "ConvTranspose":
            x, w = shapes[node.input[0]], shapes[node.input[1]]  # (N, Cin, H, W), (Cin, Cout/g, kh, kw)
            return 2 * int(np.prod(x)) * int(np.prod(w[1:]))
        a, y = shapes[node.input[0]], shapes[node.output[0]]  # MatMul / Gemm: K is A's last axis
        k = a[0] if node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute) else a[-1]
        return 2 * int(np.prod(y)) * int(k)
    except KeyError as missing:
        raise ValueError(f"{node.op_type} node {node.name!r}: shape of {missing} unknown") from None


def window_flops(onnx_path) -> dict:
    """``{"flops": total, "by_op": {op: flops}}`` of one window (all sources) of an export."""
    import onnx

    from .export import FRAMES_AXIS, read_onnx_config

    config = read_onnx_config(onnx_path)
    model = onnx.load(str(onnx_path))
    for dim in model.graph.input[0].type.tensor_type.shape.dim:
        if dim.dim_param == FRAMES_AXIS:
            dim.dim_value = config.num_frame
        elif dim.dim_param:
            dim.dim_value = 1  # batch
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(model)
    by_op: dict = {}
    for node in model.graph.node:
        f = node_flops(node, shapes)
        if f:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + f
    return {"flops": sum(by_op.values()), "by_op": by_op}


def _matmul_model(n: int):
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def gemm_peak(threads: int, n: int = 2048, repeats: int = 7) -> float:
    """The best GFLOP/s of ONNX Runtime's fp32 MatMul of two ``n × n`` matrices on ``threads`` threads."""
    import onnxruntime as ort

    from .backends import onnx_session_options

    session = ort.InferenceSession(_matmul_model(n), onnx_session_options(threads), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    session.run(None, feed)  # warm-up: thread pool, pages
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def window_seconds(backend, repeats: int = 3) -> float:
    """The median time of one window (all sources) on ``backend``, after one warm-up call."""
    c = backend.config
    spec = np.random.default_rng(1).standard_normal((1, 4, c.num_frame, c.n_bins)).astype(np.float32)
    backend(spec)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        backend(spec)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def roofline(onnx_path, backends=("onnx",), threads: int | None = None, repeats: int = 3) -> dict:
    """The report: FLOPs per window, the GEMM peak, and per backend its seconds per window, GFLOP/s and
    fraction of the peak. The peak is measured before and after the windows (the better one is kept: this
    machine's speed drifts by several percent within minutes)."""
    from .backends import open_backend
    from .cpu import describe
    from .threads import cpu_threads

    threads = cpu_threads(threads)
    work = window_flops(onnx_path)
    peak = gemm_peak(threads)
    paths = {}
    for name in backends:
        seconds = window_seconds(open_backend(onnx_path, name, threads), repeats)
        paths[name] = {"s_per_window": seconds, "gflops": work["flops"] / seconds / 1e9}
    peak = max(peak, gemm_peak(threads))
    for entry in paths.values():
        entry["fraction_of_peak"] = entry["gflops"] / peak
    return {"cpu": describe(), "threads": threads, "weights": str(onnx_path), "gflop_per_window": work["flops"] / 1e9,
            "gflop_by_op": {k: v / 1e9 for k, v in work["by_op"].items()}, "gemm_peak_gflops": peak, "paths": paths}


def format_roofline(report: dict) -> str:
    lines = [f"{report['weights']}: {report['gflop_per_window']:.1f} GFLOP per window ("
             + ", ".join(f"{k} {v:.1f}" for k, v in sorted(report["gflop_by_op"].items())) + ")",
             f"GEMM peak: {report['gemm_peak_gflops']:.1f} GFLOP/s (ONNX Runtime fp32 MatMul 2048³, "
             f"{report['threads']} threads) on {report['cpu']}"]
    for name, p in report["paths"].items():
        lines.append(f"  {name:>14}: {p['s_per_window']:.3f} s per window, {p['gflops']:.1f} GFLOP/s, "
                     f"{100 * p['fraction_of_peak']:.0f} % of the GEMM peak")
    return "\n".join(lines)
