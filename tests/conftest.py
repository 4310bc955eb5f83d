"""Shared fixtures: the authors' reference files from ../shared, converted once per session."""

import os
import pathlib
import subprocess

import numpy as np
import pytest

from lightsaft_infer.backends import Backend
from lightsaft_infer.config import ModelConfig

REPO = pathlib.Path(__file__).resolve().parent.parent
UPSTREAM = REPO.parent / "shared" / "fixtures" / "upstream"
FIXTURES = ("lightsaft_small", "lightsaft_demo", "lasaft_paper")
UPSTREAM_V2 = REPO.parent / "shared" / "fixtures" / "upstream-v2"
#: The networks published after the challenge (README "Checkpoints"): LightSAFT-Net+, LaSAFT-Net-v2 light and
#: large (v2 code base, config.yaml beside), the medium LightSAFT (v1 code base, 6 control layers).
FIXTURES_V2 = ("v1_light", "v2_light", "v2_large", "lightsaft_medium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need_upstream(folder=UPSTREAM):
    if folder.is_dir():
        return
    if IN_CI:  # CI always has ../shared: a missing one is a failure, never a skip
        pytest.fail(f"{folder} is missing in CI")
    pytest.skip(f"reference fixtures not found at {folder} (they live in ../shared beside the checkout)")


def debian_tools_missing() -> list:
    """What corpus generation needs from Debian that this machine lacks (FluidSynth, SoundFonts, espeak-ng)."""
    import ctypes.util
    import shutil

    missing = [] if ctypes.util.find_library("fluidsynth") else ["libfluidsynth3"]
    if not shutil.which("espeak-ng"):
        missing.append("espeak-ng")
    if not any(os.path.exists(p) for p in ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
                                            "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")):  # fmt: skip
        missing.append("a General-MIDI SoundFont (fluid-soundfont-gm)")
    # the wide recipe's recorded drum kits and second speech engine
    if not os.path.isdir("/usr/share/hydrogen/data/drumkits"):
        missing.append("hydrogen-drumkits")
    if not shutil.which("text2wave") or not os.path.isdir("/usr/share/festival/voices/english/ked_diphone"):
        missing.append("festival with its voices (festvox-kdlpc16k, ...)")
    # the shift split's held-out sources
    if not shutil.which("flite"):
        missing.append("flite")
    for path, package in (("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2", "opl3-soundfont"),
                          ("/usr/share/sounds/sf2/sf_GMbank.sf2", "csound-soundfont")):  # fmt: skip
        if not os.path.exists(path):
            missing.append(package)
    return missing


def need_debian_tools():
    """Skip (outside CI) where corpus generation's Debian packages are missing; in CI that is a failure."""
    missing = debian_tools_missing()
    if not missing:
        return
    reason = f"corpus generation needs Debian's {', '.join(missing)} (see training/README.md)"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def upstream():
    _need_upstream()
    return UPSTREAM


@pytest.fixture(scope="session")
def upstream_v2():
    _need_upstream(UPSTREAM_V2)
    return UPSTREAM_V2


@pytest.fixture(scope="session")
def converted_v2(tmp_path_factory, upstream_v2):
    """``name -> NAME.safetensors`` (``NAME.onnx`` beside it) for the four later networks, converted by the
    public CLI exactly as a user would (the v2 code base's config.yaml found beside the checkpoint)."""
    from lightsaft_infer import cli

    out = tmp_path_factory.mktemp("weights-v2")
    paths = {}
    for name in FIXTURES_V2:
        path = out / f"{name}.safetensors"
        assert cli.main(["convert", str(upstream_v2 / f"{name}.ckpt"), "-o", str(path), "--onnx"]) == 0, name
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def converted(tmp_path_factory, upstream):
    """``name -> path of NAME.safetensors`` (with ``NAME.onnx`` beside it) for every fixture checkpoint."""
    from lightsaft_infer.checkpoint import convert_checkpoint
    from lightsaft_infer.export import export_onnx
    from lightsaft_infer.weights import save_weights

    out = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in FIXTURES:
        config, tensors = convert_checkpoint(upstream / f"{name}.ckpt")
        path = out / f"{name}.safetensors"
        save_weights(path, config, tensors)
        export_onnx(path, out / f"{name}.onnx")
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def small_weights(request, tmp_path_factory):
    """A LightSAFT in the MDX configuration (``NAME.safetensors`` with ``NAME.onnx`` beside it): the authors'
    ``lightsaft_small`` fixture converted where ``../shared`` is there (always in CI), else a copy of the
    shipped default model, so that a clone without ``../shared`` still runs every test that needs a model."""
    if UPSTREAM.is_dir() or IN_CI:
        return request.getfixturevalue("converted")["lightsaft_small"]
    import shutil

    out = tmp_path_factory.mktemp("default-weights")
    for suffix in (".safetensors", ".onnx"):
        shutil.copy(REPO / "weights" / f"default{suffix}", out / f"lightsaft_small{suffix}")
    return out / "lightsaft_small.safetensors"


@pytest.fixture(scope="session")
def vectors(upstream):
    return {name: dict(np.load(upstream / f"{name}_vectors.npz")) for name in FIXTURES}


class IdentityBackend(Backend):
    """Stand-in network: every source's estimate is the input spectrogram itself."""

    name = "identity"

    def __init__(self, config: ModelConfig):
        self.config = config

    def __call__(self, spec):
        return np.repeat(spec[:, None], len(self.config.sources), axis=1)


@pytest.fixture(scope="session")
def mdx_config():
    """The MDX LightSAFT configuration (n_fft 2048, 256 frames), no weights needed."""
    return ModelConfig(block="lightsaft", n_fft=2048, hop_length=1024, num_frame=256, n_blocks=9, internal_channels=16,
                       n_internal_layers=5, kernel_size_t=3, kernel_size_f=3, bn_factor=16, min_bn_units=16,
                       tfc_tdf_bias=False, num_tdfs=16, dk=64, embedding_dim=64)  # fmt: skip


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (needs root, as in CI; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)])


#: Exactness tolerances, relative to the reference's peak (a louder or quieter checkpoint scales float32's
#: error with it): spectrograms through the network, and whole songs through chunking and the STFT. Measured
#: (docs/how-it-works.md, "Exactness"): at most 2.8e-6 and 4.7e-6 of the peak on the fixtures; 1.5e-5 on the
#: audit's fresh LightSAFT-Net+ whose stems peak at 1.18, where an absolute 1e-5 failed.
SPEC_REL, WAVE_REL = 1e-5, 2e-5


def assert_exact(actual, reference, rel, what=""):
    """``max |actual - reference| <= rel x max |reference|``."""
    reference = np.asarray(reference)
    err = float(np.abs(np.asarray(actual, dtype=np.float64) - reference).max())
    peak = float(np.abs(reference).max())
    assert err <= rel * peak, f"{what}: error {err:.3g} is {err / peak:.3g} of the peak {peak:.3g} (allowed {rel:g})"
    return err / peak
