"""A stranger's first ten minutes: what the README promises, optional features that say what to
install, the default model found after a regular install, and the Docker image's recipe."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer.backends import BACKENDS

from .conftest import REPO
from .test_evaluate import _split
from .test_predict import _make_songs, _predict

README = (REPO / "README.md").read_text()
DEMO = REPO / "data" / "test" / "synth-test-000"


def _one_line(err, *fragments):
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments) and "Traceback" not in err, err


def _without(monkeypatch, *missing):
    """Make ``module_available`` answer False for ``missing`` (as on a machine without those extras)."""
    import lightsaft_infer.backends as backends

    real = backends.module_available
    monkeypatch.setattr(cli, "module_available", lambda name: name not in missing and real(name))


def test_evaluate_with_a_progress_bar(tmp_path, small_weights, capsys):
    root = _split(tmp_path, songs=1, seconds=1.0)
    assert cli.main(["evaluate", str(root), "--no-bss", "-w", str(small_weights.with_suffix(".onnx"))]) == 0
    assert "| model | MDX SDR (mean)" in capsys.readouterr().out


def test_evaluate_without_museval_says_what_to_install_before_any_work(tmp_path, monkeypatch, capsys):
    _without(monkeypatch, "museval")
    root = _split(tmp_path, songs=1, seconds=1.0)
    assert cli.main(["evaluate", str(root), "-w", str(tmp_path / "no-model.safetensors")]) == 1
    _one_line(capsys.readouterr().err, "museval", "lightsaft-infer[eval]", "--no-bss")


def test_bench_plot_without_matplotlib_fails_up_front(tmp_path, monkeypatch, capsys):
    import lightsaft_infer.bench as bench

    _without(monkeypatch, "matplotlib")
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("the benchmark ran before the check"))
    assert cli.main(["bench", "--durations", "1", "--plot", str(tmp_path / "x.png")]) == 1
    _one_line(capsys.readouterr().err, "matplotlib", "lightsaft-infer[plot]")


def test_export_without_torch_says_what_to_install(tmp_path, small_weights, monkeypatch, capsys):
    _without(monkeypatch, "torch")
    assert cli.main(["export", str(small_weights), "-o", str(tmp_path / "x.onnx")]) == 1
    _one_line(capsys.readouterr().err, "torch", "lightsaft-infer[torch]")
    assert not (tmp_path / "x.onnx").exists()


def test_predict_says_when_openvino_is_missing(tmp_path, small_weights):
    _make_songs(tmp_path / "test", seconds=(1.0,))
    blocker = tmp_path / "noov"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None\n")
    proc = _predict(tmp_path, small_weights.with_suffix(".onnx"), {"PYTHONPATH": str(blocker)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    setup = next(l for l in proc.stdout.splitlines() if l.startswith("setup:"))
    assert "no fast path: OpenVINO is not installed (pip install 'lightsaft-infer[openvino]')" in setup, setup


def test_backend_help_names_every_backend():
    text = cli.build_parser()._subparsers._group_actions[0].choices["separate"].format_help()
    for backend in BACKENDS:
        assert backend in " ".join(text.split()), backend


def test_mp3_input_is_separated(tmp_path, small_weights, capsys):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    x = (0.1 * np.random.default_rng(0).standard_normal((44100, 2))).astype(np.float32)
    sf.write(tmp_path / "song.mp3", x, 44100, format="MP3")
    assert cli.main(["separate", str(tmp_path / "song.mp3"), "-o", str(tmp_path / "out"), "-w",
                     str(small_weights.with_suffix(".onnx")), "-q"]) == 0  # fmt: skip
    assert sf.info(tmp_path / "out" / "song" / "vocals.wav").frames == sf.info(tmp_path / "song.mp3").frames
    assert ".mp3" in README.lower() or "mp3" in README


def test_readme_states_the_demo_song_and_what_it_needs():
    duration = sf.info(DEMO / "mixture.wav").duration
    assert f"{duration:.0f} s demo song" in README, "the README must give the demo song's real length"
    assert "28 s" not in README
    assert "authors" in README and "checkpoint" in README  # where their checkpoints come from, and without them


def test_no_import_circle_between_backends_and_export():
    import ast

    def imported(module):
        tree = ast.parse((REPO / "lightsaft_infer" / f"{module}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "export" in imported("backends")  # the backends read exports
    assert "backends" not in imported("export"), "export.py imports backends, which imports export"


def test_dockerfile_owns_app_without_a_chown_layer():
    text = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^RUN .*chown", text, flags=re.M) and "COPY --chown=1000:1000 weights" in text


def test_the_default_model_travels_with_the_package():
    """setup.py ships weights/ inside the package, so that a regular install finds it from any folder
    (the slow test below installs it for real)."""
    text = (REPO / "setup.py").read_text()
    assert '"lightsaft_infer.default_model": "weights"' in text
    data = set(re.findall(r'"(default\.[\w.]+)"', text))
    assert data == {p.name for p in (REPO / "weights").glob("default.*")}, data


@pytest.mark.slow
def test_a_regular_install_finds_the_default_model_from_any_folder(tmp_path):
    """``pip install .`` (not -e) into a venv, then ``lightsaft-infer separate`` run from another folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(REPO)],
                         capture_output=True, text=True)  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    x = (0.1 * np.random.default_rng(0).standard_normal((44100, 2))).astype(np.float32)
    sf.write(elsewhere / "song.wav", x, 44100)
    env = {k: v for k, v in os.environ.items() if k not in ("LIGHTSAFT_WEIGHTS", "PYTHONPATH")}
    proc = subprocess.run([str(venv / "bin" / "lightsaft-infer"), "separate", "song.wav", "-q"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(elsewhere / "separated" / "song")) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert "site-packages" in subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from lightsaft_infer.backends import default_weights; print(default_weights())"],
        cwd=elsewhere, env=env, capture_output=True, text=True).stdout  # fmt: skip
