"""Chunk scheduler and overlap-add, with a stand-in identity network."""

import numpy as np
import pytest

from lightsaft_infer.chunking import plan_chunks
from lightsaft_infer.separator import Separator

from .conftest import IdentityBackend

W = 1024 * 255  # MDX window: 261,120 samples
SETTINGS = [("authors", 0.0), ("overlap", 0.0), ("overlap", 0.125), ("overlap", 0.25), ("overlap", 0.5)]
LENGTHS = [1, 1000, W, W + 1, 3 * 60 * 44100 + 123]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("mode,overlap", SETTINGS)
@pytest.mark.parametrize("length", LENGTHS)
def test_identity_network_returns_the_input(mode, overlap, length, mdx_config, rng):
    x = (0.3 * rng.standard_normal((length, 2))).astype(np.float32)
    sep = Separator(IdentityBackend(mdx_config), mode=mode, overlap=overlap, batch_size=3)
    stems = sep.separate(x, 44100)
    assert set(stems) == {"vocals", "drums", "bass", "other"}
    for stem in stems.values():
        assert stem.shape == x.shape and stem.dtype == np.float32
        np.testing.assert_allclose(stem, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode,overlap", SETTINGS)
@pytest.mark.parametrize("length", [1, W - 2 * 8192, W, 10 * W + 7])
def test_cross_fade_weights_sum_to_one(mode, overlap, length):
    plan = plan_chunks(length, W, 1024, mode, overlap)
    total = np.zeros(plan.padded_length)
    for s in plan.starts():
        total[s : s + W] += plan.weights()
    covered = total[plan.trim : plan.trim + length]
    assert covered.min() > 0
    if mode == "authors" or overlap == 0:
        np.testing.assert_array_equal(covered, 1.0)
    else:  # the interior (away from the unpartnered ramps at the ends) sums to one without normalising
        inner = covered[plan.fade : length - plan.fade]
        np.testing.assert_allclose(inner, 1.0, atol=1e-6)


def test_authors_mode_uses_their_window_positions():
    plan = plan_chunks(264600, W, 1024, "authors")
    assert (plan.trim, plan.fade, plan.stride) == (8192, 0, W - 2 * 8192)
    assert plan.n_windows == 2  # floor(264600 / 244736) + 1, as in the authors' loop


def test_overlap_costs_more_windows():
    n = [plan_chunks(240 * 44100, W, 1024, "overlap", o).n_windows for o in (0.0, 0.125, 0.25, 0.5)]
    assert n == sorted(n) and n[0] < n[-1]


def test_mono_and_other_rates_come_back_in_kind(mdx_config, rng):
    x = (0.3 * rng.standard_normal(48000)).astype(np.float32)  # 1 s mono at 48 kHz
    stems = Separator(IdentityBackend(mdx_config)).separate(x, 48000)
    for stem in stems.values():
        assert stem.shape == (48000, 1)
        # resampled to 44.1 kHz and back: the band below 20 kHz survives; compare a smooth version
        err = np.abs(np.convolve(stem[:, 0] - x, np.ones(16) / 16, "valid"))
        assert err[200:-200].max() < 0.02


def test_empty_input_gives_empty_stems(mdx_config):
    stems = Separator(IdentityBackend(mdx_config)).separate(np.zeros((0, 2), np.float32), 44100)
    assert all(s.shape == (0, 2) for s in stems.values())


@pytest.mark.parametrize("bad", [dict(overlap=0.7), dict(overlap=-0.1), dict(trim=W), dict(mode="fast")])
def test_bad_chunk_settings_are_refused(bad, mdx_config):
    with pytest.raises(ValueError):
        Separator(IdentityBackend(mdx_config), **bad)


def test_streamed_file_equals_in_memory_separation(tmp_path, mdx_config, rng):
    """separate_file reads and writes window by window; the stems equal separate()'s, mono and stereo."""
    import soundfile as sf

    class Scaled(IdentityBackend):  # each source a different multiple of the input: order matters
        def __call__(self, spec):
            return super().__call__(spec) * np.arange(1, 5, dtype=np.float32)[None, :, None, None, None]

    sep = Separator(Scaled(mdx_config))
    for channels in (2, 1):
        x = (0.1 * rng.standard_normal((3 * mdx_config.window_samples + 777, channels))).astype(np.float32)
        sf.write(tmp_path / "mix.wav", x, 44100, subtype="FLOAT")
        paths = {s: tmp_path / f"{s}.wav" for s in mdx_config.sources}
        result = sep.separate_file(tmp_path / "mix.wav", paths)
        assert result.windows == {"exact": sep.plan(len(x)).n_windows}
        memory = sep.separate(x, 44100)
        for k, s in enumerate(mdx_config.sources):
            y = sf.read(paths[s], dtype="float32", always_2d=True)[0]
            assert y.shape == x.shape
            np.testing.assert_allclose(y, memory[s], atol=1e-6)
            np.testing.assert_allclose(y, (k + 1) * x, atol=1e-5)


def test_bad_sample_late_in_a_streamed_file_leaves_no_stems(tmp_path, mdx_config):
    import soundfile as sf

    from lightsaft_infer.errors import AudioError

    x = np.zeros((3 * mdx_config.window_samples, 2), np.float32)
    x[-100, 1] = np.nan  # found only when the last window is read, after stems were partly written
    sf.write(tmp_path / "mix.wav", x, 44100, subtype="FLOAT")
    paths = {s: tmp_path / "out" / f"{s}.wav" for s in mdx_config.sources}
    (tmp_path / "out").mkdir()
    with pytest.raises(AudioError) as err:
        Separator(IdentityBackend(mdx_config)).separate_file(tmp_path / "mix.wav", paths)
    assert str(err.value).startswith(str(tmp_path / "mix.wav")) and f"sample {len(x) - 100}" in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []  # no stems, no temporary files
