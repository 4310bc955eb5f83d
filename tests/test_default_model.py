"""The shipped default model and the demo song: what a user gets out of the box."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer.backends import default_weights
from lightsaft_infer.mdx import mdx_sdr
from lightsaft_infer.separator import Separator

from .conftest import REPO

STEMS = ("vocals", "drums", "bass", "other")
DEMO = REPO / "data" / "test"


def test_default_weights_are_the_mdx_configuration_on_both_backends():
    assert default_weights() == REPO / "weights" / "default.safetensors"
    for backend in ("onnx", "torch"):
        sep = Separator.from_file(backend=backend)  # no path: the default model
        c = sep.config
        assert (c.block, c.n_fft, c.hop_length, c.num_frame, c.n_blocks, c.internal_channels, c.num_tdfs, c.dk,
                c.embedding_dim) == ("lightsaft", 2048, 1024, 256, 9, 16, 16, 64, 64)  # fmt: skip


def test_demo_song_is_small_and_consistent():
    songs = [p for p in DEMO.iterdir() if p.is_dir()]
    assert len(songs) == 1
    song = songs[0]
    total = sum(f.stat().st_size for f in song.iterdir())
    assert total <= 10 * 2**20
    mix, rate = sf.read(song / "mixture.wav", dtype="int16")
    assert rate == 44100 and mix.shape[1] == 2 and len(mix) <= 20 * rate
    summed = sum(sf.read(song / f"{s}.flac", dtype="int16")[0].astype(np.int32) for s in STEMS)
    np.testing.assert_array_equal(summed, mix)


@pytest.mark.slow  # ~20 s: the README's first command as a newcomer types it (CI runs it with -m slow)
def test_readme_first_command_separates_the_demo_song(tmp_path):
    """``python predict.py`` with no configuration: default model, demo song, time/budget and SDR printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTSAFT_", "TEST_DATASET", "RESULTS_DATASET"))}
    env["RESULTS_DATASET_PATH"] = str(tmp_path / "results")  # keep the checkout clean
    proc = subprocess.run([sys.executable, "predict.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "budget 240 s: margin" in proc.stdout and "mean MDX SDR over 1 songs" in proc.stdout
    song = next(p for p in DEMO.iterdir() if p.is_dir())
    mix = sf.read(song / "mixture.wav", dtype="float32")[0]
    model, floor = {}, {}
    for s in STEMS:
        ref = sf.read(song / f"{s}.flac", dtype="float32")[0]
        model[s] = mdx_sdr(ref, sf.read(tmp_path / "results" / song.name / f"{s}.wav", dtype="float32")[0])
        floor[s] = mdx_sdr(ref, mix / 4)
    # Measured 2026-11-23 with the default weights (step 10200): model 2.19 / 4.38 / 3.75 / 5.75 dB
    # against mix/4's 0.61 / -3.21 / 1.12 / 2.16 (vocals, drums, bass, other): mean +3.85 dB
    # (step 8400: 1.93 / 3.99 / 3.69 / 5.60, +3.63 dB; step 4600: 1.44 / 4.31 / 3.40 / 5.33, +3.45 dB).
    assert np.mean(list(model.values())) > np.mean(list(floor.values())) + 2.5, (model, floor)
    for s in STEMS:
        assert model[s] > floor[s] + 0.5, (s, model, floor)


def test_shipped_fast_paths_were_made_from_the_shipped_weights():
    """``default.onnx`` and ``default.int8.xml`` derive from ``default.safetensors``: the ONNX graph computes
    what the fp32 weights do, and the int8 IR records the fp32 weights' SHA-256."""
    import pytest

    from lightsaft_infer.backends import OnnxBackend, TorchBackend, module_available
    from lightsaft_infer.stft import STFT
    from lightsaft_infer.weights import load_weights, weights_digest

    weights = REPO / "weights"
    onnx = OnnxBackend(weights / "default.onnx")
    mix, _ = sf.read(DEMO / "synth-test-000" / "mixture.wav", dtype="float32", always_2d=True)
    spec = STFT(onnx.config.n_fft, onnx.config.hop_length).analyse(mix[: onnx.config.window_samples].T[None])
    exact = onnx(spec)
    if module_available("torch"):
        np.testing.assert_allclose(TorchBackend.from_file(weights / "default.safetensors")(spec), exact, rtol=0, atol=1e-4)
    ov = pytest.importorskip("openvino")
    from lightsaft_infer.backends import INT8_DIGEST_KEY

    model = ov.Core().read_model(str(weights / "default.int8.xml"))
    assert model.get_rt_info(list(INT8_DIGEST_KEY)).astype(str) == weights_digest(load_weights(weights / "default.safetensors")[1])
    # and by the quantiser's default recipe: no activation quantiser feeds a layer it keeps in float (the
    # layer groups as training.sensitivity names them, which is what --keep-float takes)
    from training.quantize import CONFIG_KEY, DEFAULT_KEEP_FLOAT
    from training.sensitivity import layer_of

    assert model.get_rt_info([CONFIG_KEY[0], "float_layers"]).astype(str) == ",".join(DEFAULT_KEEP_FLOAT)
    quantisers = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(quantisers) > 100
    fed = {layer_of(t.get_node().get_friendly_name())
           for op in quantisers for out in op.outputs() for t in out.get_target_inputs()}
    assert not fed & set(DEFAULT_KEEP_FLOAT), fed & set(DEFAULT_KEEP_FLOAT)
