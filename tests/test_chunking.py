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
