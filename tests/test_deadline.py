"""The deadline guard: paths chosen by time left, and predict.py never over a (tiny) budget."""

import time

import numpy as np
import soundfile as sf

from lightsaft_infer.deadline import DeadlineGuard
from lightsaft_infer.separator import Separator

from .conftest import IdentityBackend
from .test_predict import STEMS, _predict

SR = 44100


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_guard_prefers_exact_then_fast_then_fill():
    clock = FakeClock()
    guard = DeadlineGuard(100.0, {"exact": 2.0, "fast": 1.0}, clock=clock, safety=1.0)
    assert guard.choose(remaining=40) == "exact"  # 2 + 39·1 <= 100
    clock.now = 60.5
    assert guard.choose(remaining=40) is None  # 40 fast windows (40 s) do not fit in 39.5 s
    clock.now = 59.5
    assert guard.choose(remaining=40) == "fast"  # 40.5 s left: 40 fast windows fit, one exact and 39 fast do not
    clock.now = 99.5
    assert guard.choose(remaining=1) is None
    guard.observe("fast", 3.0)
    assert guard.costs["fast"] == 2.0  # halfway towards the measurement
    guard.observe(None, 0.0, windows=5)
    assert guard.used == {"fast": 1, "fill": 5}


class SlowIdentity(IdentityBackend):
    """The identity network, taking ``delay`` seconds per call: a path of known cost."""

    def __init__(self, config, delay, gain=1.0):
        super().__init__(config)
        self.delay, self.gain = delay, gain

    def __call__(self, spec):
        time.sleep(self.delay)
        return super().__call__(spec) * self.gain


def test_separator_meets_a_deadline_by_falling_back(tmp_path, mdx_config):
    # exact: identity in 0.4 s/window; fast: 0.9 × identity in 0.1 s/window. 20 windows exact would take 8 s.
    sep = Separator(SlowIdentity(mdx_config, 0.4), fast=SlowIdentity(mdx_config, 0.1, gain=0.9))
    sep.costs = {"exact": 0.4, "fast": 0.1}
    rng = np.random.default_rng(0)
    n = sep.plan(0).stride * 20
    mix = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    sf.write(tmp_path / "mixture.wav", mix, SR, subtype="FLOAT")
    paths = {s: tmp_path / f"{s}.wav" for s in STEMS}
    start = time.perf_counter()
    result = sep.separate_file(tmp_path / "mixture.wav", paths, deadline=start + 2.5)
    took = time.perf_counter() - start
    assert took < 2.5, took
    assert set(result.windows) >= {"fast"} and sum(result.windows.values()) == sep.plan(n).n_windows
    for s in STEMS:
        y, rate = sf.read(paths[s], dtype="float32")
        assert y.shape == mix.shape and rate == SR and np.isfinite(y).all()
        # Every sample is the mixture (exact), 0.9 × mixture (fast), or mixture / 4 (fill), or a cross-fade of them.
        ratio = np.sum(y * mix, axis=1) / np.maximum(np.sum(mix * mix, axis=1), 1e-12)
        assert np.all((ratio > 0.24) & (ratio < 1.01))
    # Without a deadline the same separator takes the exact path everywhere.
    result = sep.separate_file(tmp_path / "mixture.wav", paths)
    assert result.windows == {"exact": sep.plan(n).n_windows}
    np.testing.assert_allclose(sf.read(paths["vocals"], dtype="float32")[0], mix, atol=1e-5)


def test_predict_with_a_tiny_budget_writes_valid_stems_in_time(tmp_path, small_weights):
    song = tmp_path / "test" / "long"
    song.mkdir(parents=True)
    rng = np.random.default_rng(3)
    mix = (0.1 * rng.standard_normal((60 * SR, 2))).astype(np.float32)  # ~12 windows: ~20 s of network
    sf.write(song / "mixture.wav", mix, SR, subtype="FLOAT")
    proc = _predict(tmp_path, small_weights.with_suffix(".onnx"),
                    {"INFERENCE_PER_MUSIC_TIMEOUT_SECONDS": "3", "LIGHTSAFT_FAST": "none"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "timed out" not in (proc.stdout + proc.stderr).lower()
    line = next(l for l in proc.stdout.splitlines() if l.startswith("long:"))
    assert "DEADLINE GUARD" in line and "fill" in line, line
    wall = float(line.split(" s of audio in ")[1].split(" s")[0])
    assert wall < 3.0, line
    for s in STEMS:
        y, rate = sf.read(tmp_path / "results" / "long" / f"{s}.wav", dtype="float32")
        assert y.shape == mix.shape and rate == SR and np.isfinite(y).all() and np.abs(y).max() > 0
