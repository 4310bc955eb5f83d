"""The roofline report: the network's work counted from the export's shapes, and the exact path's speed
against the measured GEMM peak of this CPU (``lightsaft-infer bench --roofline``)."""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lightsaft_infer import cli  # noqa: E402
from lightsaft_infer.roofline import _shapes, gemm_peak, node_flops, window_flops  # noqa: E402


def _graph():
    """x (1, 3, 12, 10) -> Conv 8×3×3×5 (pad 1, 2; 12×10 out) -> ConvTranspose 8→4, 2×2 stride 2 -> MatMul by (20, 6)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (8, 3, 3, 5)), ("wt", (8, 4, 2, 2)), ("m", (20, 6)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 2, 1, 2], name="conv"),
             helper.make_node("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2], name="up"),
             helper.make_node("MatMul", ["t", "m"], ["y"], name="mm"),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 10])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def test_flops_are_two_per_multiply_add_of_every_counted_node():
    model = _graph()
    shapes = _shapes(model)
    flops = {n.name: node_flops(n, shapes) for n in model.graph.node}
    assert flops == {
        "conv": 2 * (8 * 12 * 10) * (3 * 3 * 5),  # each output: Cin·kh·kw products
        "up": 2 * (8 * 12 * 10) * (4 * 2 * 2),  # each input: Cout·kh·kw products
        "mm": 2 * (1 * 4 * 24 * 6) * 20,  # (1, 4, 24, 20) @ (20, 6)
        "relu": 0,  # elementwise: not counted
    }
    del shapes["c"]
    with pytest.raises(ValueError, match="ConvTranspose node 'up'"):  # never a silently short count
        node_flops(model.graph.node[1], shapes)


def test_roofline_of_the_exact_path(small_weights, tmp_path, capsys):
    work = window_flops(small_weights.with_suffix(".onnx"))
    # the MDX LightSAFT: every source's convolutions and TDF products, hundreds of GFLOP per window
    assert set(work["by_op"]) == {"Conv", "ConvTranspose", "MatMul"} and 5e10 < work["flops"] < 1e12
    assert gemm_peak(threads=1, n=256, repeats=2) > 0.1
    out = tmp_path / "roofline.json"
    assert cli.main(["bench", "--roofline", "-w", str(small_weights), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    entry = report["paths"]["onnx"]
    assert report["gflop_per_window"] == pytest.approx(work["flops"] / 1e9)
    assert entry["gflops"] == pytest.approx(report["gflop_per_window"] / entry["s_per_window"])
    assert entry["fraction_of_peak"] == pytest.approx(entry["gflops"] / report["gemm_peak_gflops"])
    assert "% of the GEMM peak" in capsys.readouterr().out
