"""The README's two commands, verbatim, in a fresh clone (no ``../shared`` beside it) and a fresh venv.

Slow (it installs torch and every extra, then runs the whole suite once more): left out of the default
run, run by ``.ci/run`` with ``-m slow``. The inner run leaves out the slow tests, so it does not recurse.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO

#: Why a test may skip in a fresh clone: the README names these.
DOCUMENTED_SKIPS = ("reference fixtures not found", "corpus generation needs Debian's", "no bfloat16 support",
                    "has no MP3", "needs a headless Chromium", "mounting a small tmpfs to fill needs root")  # fmt: skip


def readme_commands() -> list:
    """The shell lines of the README's "Two commands" block."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_has_two_one_line_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "python predict.py" in commands[0] and "pytest" in commands[1]


def _fresh_clone(dest):
    """The checkout's files as git sees them (tracked and not ignored), nothing else."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listing):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.slow
def test_the_readme_two_commands_in_a_fresh_clone_and_venv(tmp_path):
    clone = tmp_path / "nothing-beside" / "lightsaft-infer"  # no ../shared next to it
    _fresh_clone(clone)
    assert not (clone.parent.parent / "shared").exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("LIGHTSAFT_")}  # fmt: skip
    env.update(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv), PYTEST_ADDOPTS="-rs")
    logs = []
    for i, command in enumerate(readme_commands()):
        proc = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=2400)
        log = proc.stdout + proc.stderr
        (tmp_path / f"command{i + 1}.log").write_text(log)
        assert proc.returncode == 0, f"README command {i + 1} failed: {command}\n{log[-4000:]}"
        logs.append(proc.stdout)
    assert "Evaluation completed" in logs[0] and "mean MDX SDR over 1 songs" in logs[0], logs[0][-2000:]
    summary = logs[1].strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, summary
    skips = [line for line in logs[1].splitlines() if line.startswith("SKIPPED")]
    undocumented = [line for line in skips if not any(reason in line for reason in DOCUMENTED_SKIPS)]
    assert not undocumented, undocumented
