"""Exactness against the authors' recorded outputs (../shared/fixtures/upstream).

Tolerances held, relative to the reference's peak (``conftest.SPEC_REL``, ``WAVE_REL``): 1e-5 on
``spec_out_*`` and 2e-5 on ``wave_out_*``, for the plain network, the frozen all-sources graph on torch and
its ONNX export on ONNX Runtime alike.
"""

import numpy as np
import pytest
import torch

from lightsaft_infer.backends import OnnxBackend, TorchBackend, open_backend
from lightsaft_infer.network import ConditionedUNet
from lightsaft_infer.reference import separate_reference
from lightsaft_infer.separator import Separator
from lightsaft_infer.weights import load_weights

from .conftest import FIXTURES, SPEC_REL, WAVE_REL, assert_exact

TOL = 1e-5  # absolute, only where the two sides are this project's own paths


@pytest.mark.parametrize("name", FIXTURES)
def test_authors_network_matches_spec_out(name, converted, vectors):
    net = ConditionedUNet.from_tensors(*load_weights(converted[name]))
    spec = torch.from_numpy(vectors[name]["spec_in"])
    with torch.inference_mode():
        for c in range(4):
            out = net(spec, torch.tensor([c])).numpy()
            assert_exact(out, vectors[name][f"spec_out_{c}"], SPEC_REL, f"{name} condition {c}")


# OpenVINO fp32 on the two larger fixtures (~45 s of compiling) runs with -m slow, as CI does.
BACKEND_CASES = [
    pytest.param(name, backend, marks=pytest.mark.slow) if backend == "openvino" and name != "lightsaft_small" else (name, backend)
    for name in FIXTURES for backend in ("torch", "onnx", "openvino")
]


@pytest.mark.parametrize("name, backend", BACKEND_CASES)
def test_backend_all_sources_match_spec_out(name, backend, converted, vectors):
    path = converted[name]
    if backend == "openvino":  # an exact path too: OpenVINO's fp32 kernels on the same export
        pytest.importorskip("openvino")
        be = open_backend(path.with_suffix(".onnx"), "openvino")
    else:
        be = TorchBackend.from_file(path) if backend == "torch" else OnnxBackend(path.with_suffix(".onnx"))
    out = be(vectors[name]["spec_in"])  # (1, S, 4, T, F)
    assert out.shape == (1, 4) + vectors[name]["spec_in"].shape[1:]
    for c in range(4):
        assert_exact(out[0, c], vectors[name][f"spec_out_{c}"][0], SPEC_REL, f"{name} {backend} condition {c}")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_authors_chunking_matches_wave_out(backend, small_weights, vectors):
    v = vectors["lightsaft_small"]
    sep = Separator.from_file(small_weights, backend=backend, mode="authors")
    stems = sep.separate(v["wave_in"], 44100)
    for name in ("vocals", "drums", "bass", "other"):
        assert stems[name].shape == v["wave_in"].shape
        assert_exact(stems[name], v[f"wave_out_{name}"], WAVE_REL, f"{backend} {name}")


def test_reference_path_matches_wave_out(small_weights, vectors):
    v = vectors["lightsaft_small"]
    net = ConditionedUNet.from_tensors(*load_weights(small_weights))
    stems = separate_reference(net, v["wave_in"], batch_size=2)
    for name, stem in stems.items():
        assert_exact(stem, v[f"wave_out_{name}"], WAVE_REL, f"reference {name}")


@pytest.mark.slow  # ~37 s: a whole song twice; the per-window parity stays in the default run
def test_default_chunking_equals_reference_path_with_its_trim(small_weights, vectors):
    """The default chunking (trim 2048, no cross-fade) is the authors' scheme with a smaller K:
    the reference path given that K and the separator's default agree."""
    net = ConditionedUNet.from_tensors(*load_weights(small_weights))
    x = vectors["lightsaft_small"]["wave_in"]
    sep = Separator.from_file(small_weights.with_suffix(".onnx"), backend="onnx")
    plan = sep.plan(len(x))
    assert (plan.trim, plan.fade) == (2048, 0)
    ours = sep.separate(x, 44100)
    ref = separate_reference(net, x, trim=plan.trim)
    authors = separate_reference(net, x)
    for name in ours:
        np.testing.assert_allclose(ours[name], ref[name], rtol=0, atol=TOL)
    # and the trim matters: the authors' K = 8192 gives other samples near window edges
    assert max(np.abs(ref[k] - authors[k]).max() for k in ours) > 100 * TOL


def test_parity_fails_for_a_wrong_source_order(small_weights, vectors):
    """The comparison above can fail: swapped conditions differ far beyond the tolerance."""
    out = TorchBackend.from_file(small_weights)(vectors["lightsaft_small"]["spec_in"])
    assert np.abs(out[0, 1] - vectors["lightsaft_small"]["spec_out_0"][0]).max() > 100 * TOL
