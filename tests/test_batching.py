"""All sources batched from one STFT equal one run per source."""

import numpy as np
import pytest
import torch

from lightsaft_infer.backends import OnnxBackend, TorchBackend
from lightsaft_infer.network import ConditionedUNet
from lightsaft_infer.separator import Separator
from lightsaft_infer.weights import load_weights

from .conftest import FIXTURES


@pytest.mark.parametrize("name", FIXTURES)
def test_four_conditions_batched_equal_four_runs(name, converted):
    config, tensors = load_weights(converted[name])
    net = ConditionedUNet.from_tensors(config, tensors)
    rng = np.random.default_rng(7)
    spec = rng.standard_normal((2, 4, 2 * config.frame_multiple, config.n_bins)).astype(np.float32)  # two windows
    with torch.inference_mode():
        single = np.stack([np.stack([net(torch.from_numpy(spec[b : b + 1]), torch.tensor([c]))[0].numpy()
                                     for c in range(4)]) for b in range(2)])  # fmt: skip
    for backend in (TorchBackend.from_file(converted[name]), OnnxBackend(converted[name].with_suffix(".onnx"))):
        batched = backend(spec)
        assert batched.shape == single.shape
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)


def test_window_batch_size_does_not_change_stems(small_weights):
    x = (0.2 * np.random.default_rng(3).standard_normal((400_000, 2))).astype(np.float32)
    one = Separator.from_file(small_weights, backend="onnx", batch_size=1).separate(x, 44100)
    three = Separator.from_file(small_weights, backend="onnx", batch_size=3).separate(x, 44100)
    for k in one:
        np.testing.assert_allclose(one[k], three[k], rtol=0, atol=1e-6)


@pytest.mark.slow  # ~13 s: every backend on one song; per-window parity stays in the default run
def test_backends_agree_in_overlap_mode(small_weights):
    x = (0.2 * np.random.default_rng(4).standard_normal((300_000, 2))).astype(np.float32)
    a = Separator.from_file(small_weights, backend="torch").separate(x, 44100)
    b = Separator.from_file(small_weights, backend="onnx").separate(x, 44100)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5)


def test_split_tfc_equals_dense_tfc(small_weights):
    """The ONNX form of a TFC (sum of per-part convolutions, no Concat) equals the authors' concatenating form."""
    from lightsaft_infer.network import TFC, _FrozenTFC

    config, tensors = load_weights(small_weights)
    net = ConditionedUNet.from_tensors(config, tensors)
    for block in (net.encoders[0], net.decoders[0]):  # input of C and of 2·C channels
        c_in = block.tfc.H[0][0].in_channels
        x = torch.from_numpy(np.random.default_rng(5).standard_normal((1, c_in, 32, 64)).astype(np.float32))
        C = config.internal_channels
        parts = (C,) * (c_in // C)  # the decoder takes (upsampled, skip) apart
        frozen = _FrozenTFC(block.tfc, parts)
        xs = torch.split(x, C, 1)
        with torch.inference_mode():
            dense = TFC.forward(block.tfc, x).numpy()
            np.testing.assert_allclose(frozen.split_forward(*xs).numpy(), dense, rtol=0, atol=1e-5)
            np.testing.assert_allclose(frozen(*xs).numpy(), dense, rtol=0, atol=1e-5)
            np.testing.assert_allclose(_FrozenTFC(block.tfc)(x).numpy(), dense, rtol=0, atol=1e-5)


def test_onnx_graph_concatenates_only_the_outputs(small_weights):
    """No Concat inside the exported network, not even for the decoders' skips: only the stack of
    the sources' outputs (and of the batch) at the end."""
    import onnx

    model = onnx.load(str(small_weights.with_suffix(".onnx")))
    concats = [node for node in model.graph.node if node.op_type == "Concat"]
    assert len(concats) <= 2, [node.name for node in concats]
    outputs = {name for node in concats for name in node.output}
    assert not [n.name for n in model.graph.node if n.op_type == "Conv" and outputs & set(n.input)]



def test_onnx_sessions_fix_the_frame_axis_and_fuse_every_tfc_sum(small_weights, tmp_path):
    """Each window size runs in a session with the frame axis fixed, where ONNX Runtime fuses the
    dense-TFC sums into the convolutions in the decoders too; the result equals the symbolic session."""
    import onnx
    import onnxruntime as ort

    from lightsaft_infer.backends import onnx_session_options

    path = small_weights.with_suffix(".onnx")
    backend = OnnxBackend(path, threads=1)
    frames = 2 * backend.config.frame_multiple
    options = onnx_session_options(1, frames)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    tfc_adds = [n.name for n in optimized.graph.node if n.op_type == "Add" and "/tfcs." in n.name]
    assert not tfc_adds, tfc_adds[:5]

    spec = np.random.default_rng(3).standard_normal((2, 4, frames, backend.config.n_bins)).astype(np.float32)
    symbolic = ort.InferenceSession(str(path), onnx_session_options(1), providers=["CPUExecutionProvider"])
    expected = np.concatenate([symbolic.run(None, {"spec": spec[b : b + 1]})[0] for b in range(2)])
    np.testing.assert_allclose(backend(spec), expected, rtol=0, atol=1e-5)
    # other window sizes get their own session; at most one besides the model's window is kept
    longer = np.concatenate([spec[:1], spec[1:]], axis=2)  # (1, 4, 2·frames, F)
    for n in (frames, 2 * frames, frames):
        out = backend(longer[:, :, :n])
        assert out.shape == (1, len(backend.config.sources), 4, n, backend.config.n_bins)
    assert set(backend._sessions) == {backend.config.num_frame, frames}
