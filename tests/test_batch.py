"""A whole library: a tree separated resumably (signals, kill -9, reruns), on a 2-worker Dask cluster with
the same stems, and a listening report checked in headless Chromium."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer.batch import find_jobs

from .conftest import IN_CI, REPO

SR = 44100
STEMS = ("vocals", "drums", "bass", "other")


def _tree(root, seconds=1.0):
    """Nested folders, two files named alike in different folders, a same-named pair in one folder, a
    MUSDB-layout song with its stems, and a corrupt file."""
    rng = np.random.default_rng(0)

    def song(path, s=seconds):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal((int(s * SR), 2))).astype(np.float32), SR)

    song(root / "rock" / "song.wav")
    song(root / "jazz" / "live" / "song.wav")
    song(root / "jazz" / "live" / "song.flac")
    song(root / "top.ogg")
    track = root / "musdb" / "test" / "track1"
    for s in STEMS:
        song(track / f"{s}.wav")
    sf.write(track / "mixture.wav", sum(sf.read(track / f"{s}.wav", dtype="float32")[0] for s in STEMS), SR)
    (root / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    return root


def _files(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def _manifest(out):
    return [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines() if l.strip()]


def test_jobs_mirror_the_tree_and_never_share_a_folder(tmp_path):
    root = _tree(tmp_path / "music")
    jobs = {j.key: j.folder for j in find_jobs([root], root / "out")}
    assert jobs == {"broken.wav": "broken", "jazz/live/song.flac": "jazz/live/song.flac",
                    "jazz/live/song.wav": "jazz/live/song.wav", "musdb/test/track1/mixture.wav": "musdb/test/track1",
                    "rock/song.wav": "rock/song", "top.ogg": "top"}  # fmt: skip


def _batch(root, out, weights, *extra):
    return [sys.executable, "-m", "lightsaft_infer.cli", "batch", str(root), "-o", str(out), "-w", str(weights), "-q", *extra]


def _done(out):
    return [r for r in _manifest(out) if r["state"] == "done"] if (out / "manifest.jsonl").exists() else []


def _interrupt_after_first_new_song(cmd, out, sig):
    """Run ``cmd``; send ``sig`` as soon as it has finished one more song than before."""
    before = len(_done(out))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(_done(out)) <= before:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    return proc.returncode


@pytest.mark.slow  # ~35 s: four runs of the CLI (CI runs it with -m slow)
def test_a_tree_twice_and_resumed_after_sigterm_and_kill_9(tmp_path, small_weights):
    root = _tree(tmp_path / "music")
    out = tmp_path / "out"
    cmd = _batch(root, out, small_weights.with_suffix(".onnx"))
    assert _interrupt_after_first_new_song(cmd, out, signal.SIGTERM) == 143
    assert not [f for f in _files(out) if ".part" in f]  # SIGTERM: the song in flight leaves nothing behind
    assert _interrupt_after_first_new_song(cmd, out, signal.SIGKILL) == -9
    k = len(_done(out))
    assert k >= 2
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)  # completes what is left
    assert proc.returncode == 1, proc.stderr  # the broken file
    records = _manifest(out)
    done = [r["key"] for r in records if r["state"] == "done"]
    assert sorted(done) == sorted(set(done)) and len(done) == 5, done  # nothing lost, nothing separated twice
    assert [r["key"] for r in records if r["state"] == "failed"].count("broken.wav") >= 1
    for folder in ("rock/song", "jazz/live/song.wav", "jazz/live/song.flac", "top", "musdb/test/track1"):
        assert sorted(os.listdir(out / folder)) == [f"{s}.wav" for s in sorted(STEMS)], folder
    assert not [f for f in _files(out) if ".part" in f] and not (out / "broken").exists()
    assert f"{5 - k} done, {k} skipped (done before), 1 failed of 6 songs" in proc.stdout, proc.stdout
    lines = len(records)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)  # the second run does no work
    assert "0 done, 5 skipped (done before), 1 failed of 6 songs" in proc.stdout, proc.stdout
    assert [r["key"] for r in _manifest(out)[lines:]] == ["broken.wav"]  # only the failed song was tried again


@pytest.mark.slow  # ~20 s: a local cluster's start and two model loads
def test_a_two_worker_dask_cluster_gives_the_single_process_stems(tmp_path, small_weights):
    pytest.importorskip("distributed")
    root = tmp_path / "music"
    for i in range(3):
        path = root / f"album{i}" / "song.wav"
        path.parent.mkdir(parents=True)
        sf.write(path, (0.1 * np.random.default_rng(i).standard_normal((SR * 2, 2))).astype(np.float32), SR)
    weights = str(small_weights.with_suffix(".onnx"))
    assert cli.main(["batch", str(root), "-o", str(tmp_path / "one"), "-w", weights, "--threads", "1", "-q"]) == 0
    assert cli.main(["batch", str(root), "-o", str(tmp_path / "two"), "-w", weights, "--threads", "1", "-q",
                     "--workers", "2"]) == 0  # fmt: skip
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    for i in range(3):
        for s in STEMS:
            a = sf.read(tmp_path / "one" / f"album{i}" / "song" / f"{s}.wav")[0]
            b = sf.read(tmp_path / "two" / f"album{i}" / "song" / f"{s}.wav")[0]
            np.testing.assert_array_equal(a, b)
    workers = {r["pid"] for r in _manifest(tmp_path / "two")}
    assert os.getpid() not in workers  # separated in the workers' processes, not here


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("the report test needs a headless Chromium (Debian's chromium)")
    return path


def _browser(chromium, tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000"]  # fmt: skip
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a headless browser started twice (~16 s beside the model's conversion)
def test_the_report_plays_and_shows_everything_in_chromium(tmp_path, small_weights):
    chromium = _chromium()
    root = tmp_path / "music"
    demo = REPO / "data" / "test" / "synth-test-000"
    for name, (a, b) in {"demo-intro": (0, 4), "demo-verse": (8, 12)}.items():  # two 4 s MUSDB-layout songs
        (root / name).mkdir(parents=True)
        for track in STEMS + ("mixture",):
            src = demo / (f"{track}.flac" if track != "mixture" else "mixture.wav")
            x, rate = sf.read(src, dtype="float32", start=a * SR, stop=b * SR)
            sf.write(root / name / f"{track}.wav", x, rate, subtype="PCM_16")
    sf.write(root / "plain.wav", np.zeros((SR, 2), np.float32), SR)  # no references
    out = tmp_path / "out"
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"date": "2026-11-22", "machine": "test", "songs": [
        {"duration_s": 60, "paths": {"onnx": {"ok": True, "wall_s": 18.0}}},
        {"duration_s": 240, "paths": {"onnx": {"ok": True, "wall_s": 65.0}}}]}))  # fmt: skip
    assert cli.main(["batch", str(root), "-o", str(out), "-w", str(small_weights.with_suffix(".onnx")), "-q",
                     "--report", "--bench", str(bench)]) == 0  # fmt: skip
    pages = [out / "index.html"] + [out / d / "index.html" for d in ("demo-intro", "demo-verse", "plain")]
    for page in pages:
        dom = _browser(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout
        # the index: the bench plot; a song: mixture, 4 stems (and 4 references), each a player and an image
        expected = 1 if page == out / "index.html" else 18 if "demo" in page.parent.name else 10
        assert f'data-media="ok {expected}/{expected}"' in dom, (page, dom[-600:])
    index = (out / "index.html").read_text()
    assert index.count("<tr>") == 4 and "MDX SDR" not in index and "mean SDR" in index
    assert "src='bench.png'" in index and "src=\"/" not in index and "file://" not in index  # relative links only
    shot = tmp_path / "report.png"
    _browser(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1100,420", (out / "demo-intro" / "index.html").as_uri())
    assert shot.stat().st_size > 20_000
    if os.environ.get("LIGHTSAFT_SAVE_SCREENSHOT"):  # how docs/report.png was made
        shutil.copy(shot, os.environ["LIGHTSAFT_SAVE_SCREENSHOT"])
