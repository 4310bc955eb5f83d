"""Post-filters: stems keep their shape, sum to the mixture where they promise to, and run inside the
separator (and so inside the deadline guard's window cost)."""

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer import postfilter as pf
from lightsaft_infer.separator import Separator

from .conftest import IdentityBackend

SUMS_TO_MIXTURE = ("consistency", "softmask", "wiener")


@pytest.mark.parametrize("name", pf.POSTFILTERS)
def test_shapes_and_sum_to_the_mixture(name):
    pytest.importorskip("norbert") if name == "wiener" else None
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((2, 4, 16, 33)).astype(np.float32)
    est = (0.3 * rng.standard_normal((2, 4, 4, 16, 33))).astype(np.float32)
    out = pf.apply(name, mix, est, iterations=2)
    assert out.shape == est.shape and out.dtype == np.float32 and np.isfinite(out).all()
    total = pf._complex(out).sum(axis=1)
    error = float(np.abs(total - pf._complex(mix)).max())
    if name in SUMS_TO_MIXTURE:
        assert error < 1e-4, error
    else:
        np.testing.assert_array_equal(out, est)  # none: the network's own output, untouched
        assert error > 0.1


def test_filters_that_reweight_keep_each_source_where_it_is():
    """A source that has all of a bin's energy keeps that bin; a silent source stays silent."""
    mix = np.zeros((1, 4, 8, 9), np.float32)
    mix[0, 0] = 1.0
    est = np.zeros((1, 4, 4, 8, 9), np.float32)
    est[0, 2, 0] = 0.8  # only bass estimated, too quiet
    for name in ("consistency", "softmask"):
        out = pf._complex(pf.apply(name, mix, est))
        if name == "softmask":
            np.testing.assert_allclose(out[0, 2, 0].real, 1.0, atol=1e-6)  # rescaled to the mixture
            assert np.abs(out[0, [0, 1, 3]]).max() == 0
        else:
            np.testing.assert_allclose(out[0, 2, 0].real, 0.85, atol=1e-6)  # 0.8 + residual 0.2 / 4


def test_separator_with_a_postfilter_writes_stems_that_add_up(tmp_path, mdx_config):
    """Identity network (every stem = the mixture): consistency brings each to mixture / 4."""
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((44100 * 3, 2))).astype(np.float32)
    stems = Separator(IdentityBackend(mdx_config), postfilter="consistency").separate(x, 44100)
    total = sum(stems.values())
    assert all(v.shape == x.shape for v in stems.values())
    np.testing.assert_allclose(total, x, atol=1e-4)
    np.testing.assert_allclose(stems["vocals"], x / 4, atol=1e-4)


def test_cli_postfilter_option_and_unknown_names(tmp_path, small_weights, capsys):
    song = tmp_path / "s.wav"
    x = (0.1 * np.random.default_rng(2).standard_normal((44100 * 2, 2))).astype(np.float32)
    sf.write(song, x, 44100, subtype="FLOAT")
    assert cli.main(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(small_weights.with_suffix(".onnx")),
                     "--postfilter", "softmask", "-q"]) == 0  # fmt: skip
    total = sum(sf.read(tmp_path / "out" / "s" / f"{s}.wav", dtype="float32")[0] for s in ("vocals", "drums", "bass", "other"))
    np.testing.assert_allclose(total, x, atol=1e-3)
    assert "softmask post-filter" in capsys.readouterr().err
    with pytest.raises(ValueError):
        Separator.from_file(small_weights.with_suffix(".onnx"), postfilter="median")
