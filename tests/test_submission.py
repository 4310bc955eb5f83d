"""``lightsaft-infer submission``: both graders' layouts for a fixture network, run from their own folder in a
fresh virtual environment made from their own requirements (offline), as the kits' contracts run them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lightsaft_infer import cli

from .conftest import REPO

OFFLINE = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LIGHTSAFT_SHIFTS": "0"}


def _text_files(folder):
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".json", ".md", ".txt", ".sh", ".yaml", "") :
            yield path


@pytest.fixture
def network(converted_v2):
    return converted_v2["v2_light"].with_suffix(".onnx")  # a published network's configuration, random weights


@pytest.mark.slow  # ~25 s each: a venv and a whole demo song per challenge (CI's slow run)
@pytest.mark.parametrize("challenge", ["mdx21", "mdx23"])
def test_a_submission_is_written_and_runs_as_the_grader_runs_it(challenge, network, tmp_path, monkeypatch, capsys):
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "sub"
    assert cli.main(["submission", "-w", str(network), "--challenge", challenge, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    common = {"aicrowd.json", "requirements.txt", ".gitattributes", "README.md", "weights/default.onnx",
              "weights/default.safetensors", "lightsaft_infer/separator.py", "lightsaft_infer/grading.py"}
    kit = ({"predict.py", "run.sh", "apt.txt"} if challenge == "mdx21" else
           {"my_submission/user_config.py", "my_submission/aicrowd_wrapper.py", "my_submission/lightsaft_model.py",
            "evaluate_locally.py"})  # fmt: skip
    assert common | kit <= files, sorted(files)
    assert not any(f.startswith(("training/", "tests/", "data/")) or "__pycache__" in f or "evaluator_outputs" in f
                   for f in files), sorted(files)  # fmt: skip
    meta = json.loads((out / "aicrowd.json").read_text())
    assert meta["external_dataset_used"] is False  # the authors' configuration: trained on MUSDB18, not synthetic data
    if challenge == "mdx23":
        assert meta["challenge_id"] == "music-demixing-track-mdx-23" and meta["gpu"] is False
        assert {"labelnoise", "bleeding", "authors", "description"} <= set(meta)
        assert "synth-test-000: 20.0 s in" in printed and "budget 31.4 s: margin" in printed and "SDR bass" in printed
    else:
        assert meta["challenge_id"] == "evaluations-api-music-demixing"
        assert "synth-test-000: 20.0 s of audio" in printed and "Evaluation completed" in printed
    assert "*.onnx filter=lfs" in (out / ".gitattributes").read_text()
    requirements = (out / "requirements.txt").read_text()
    assert "torch" not in requirements and "lightsaft" not in requirements  # installable from public indexes
    for path in _text_files(out):  # no path of the machine it was built on
        text = path.read_text(errors="replace")
        assert str(tmp_path) not in text and str(REPO) not in text and os.path.expanduser("~") + "/" not in text, path


def test_the_mdx23_model_returns_four_stems_for_odd_input(network, tmp_path, monkeypatch):
    """What the MDX'23 wrapper can hand over: mono ``(samples,)``, 48 kHz, 0.1 s, silence."""
    monkeypatch.setenv("LIGHTSAFT_SHIFTS", "0")
    out = tmp_path / "sub"
    assert cli.main(["submission", "-w", str(network), "--challenge", "mdx23", "-o", str(out), "--no-check"]) == 0
    probe = """
import json, sys
import numpy as np
from my_submission.user_config import MySeparationModel
import lightsaft_infer
assert lightsaft_infer.__file__.startswith(sys.path[0]), lightsaft_infer.__file__  # the submission's own copy
model = MySeparationModel()
rng = np.random.default_rng(0)
cases = {"mono": (0.1 * rng.standard_normal(44100 * 3), 44100), "48k": (0.1 * rng.standard_normal((48000 * 2, 2)), 48000),
         "short": (0.1 * rng.standard_normal((4410, 2)), 44100), "silence": (np.zeros((44100 * 2, 2)), 44100)}
report = {}
for name, (x, rate) in cases.items():
    arrays, rates = model.separate_music_file(x, rate)
    assert sorted(arrays) == sorted(model.instruments) == sorted(rates)
    report[name] = [[list(arrays[k].shape), rates[k], bool(np.isfinite(arrays[k]).all())] for k in sorted(arrays)]
print(json.dumps(report))
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    want = {"mono": ([44100 * 3], 44100), "48k": ([48000 * 2, 2], 48000), "short": ([4410, 2], 44100),
            "silence": ([44100 * 2, 2], 44100)}  # fmt: skip
    for name, (shape, rate) in want.items():
        assert report[name] == [[shape, rate, True]] * 4, (name, report[name])


def test_a_network_too_slow_for_the_budget_is_written_with_a_warning(network, monkeypatch):
    from lightsaft_infer import submission
    from lightsaft_infer.separator import Separator

    def slow(self, names=None):  # a deliberately slowed backend: 10 s a window
        self.costs = {"exact": 10.0, "fill": 0.001}
        return self.costs

    monkeypatch.setattr(Separator, "calibrate", slow)
    for challenge, budget in (("mdx21", "240"), ("mdx23", "377")):
        warning = submission.budget_warning(network, challenge)
        assert warning and f"over the {budget} s budget" in warning and "fast path" in warning, warning


def test_an_existing_folder_is_refused(network, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep.txt").write_text("mine")
    assert cli.main(["submission", "-w", str(network), "--challenge", "mdx21", "-o", str(tmp_path / "sub")]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert os.listdir(tmp_path / "sub") == ["keep.txt"]
