"""batch, round two: never twice (output inside the tree, concurrent runs), never lost (damaged manifests,
changed inputs, cut stems), never refused whole (case collisions, unreadable folders)."""

import json
import os
import subprocess
import sys
import time

import pytest
import soundfile as sf

from lightsaft_infer import cli

from .conftest import REPO
from .test_never_fail import _one_error
from .test_predict import STEMS
from .test_round_two import SR, _song


# -- 2. batch: never twice, never lost, never refused whole ------------------------------------------
def _batch(tree, out, weights, *extra):
    return ["batch", str(tree), "-o", str(out), "-w", str(weights), "-q", *extra]


def _records(out):
    return [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines() if l.strip()]


def _songs(tree, names, seconds=1.0):
    for i, name in enumerate(names):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tree / name, _song(seconds, seed=i), SR)


def test_an_output_inside_the_input_tree_is_never_separated_again(tmp_path, small_weights):
    same = tmp_path / "same"
    _songs(same, ["a.wav"])
    (tmp_path / "link").symlink_to(same)
    for _ in range(3):
        assert cli.main(_batch(same, same, small_weights)) == 0
    assert [r["key"] for r in _records(same)] == ["a.wav"]
    # the same output reached through a symlink, and an input root reached through one
    sl = tmp_path / "sl"
    sl.symlink_to(same)
    for _ in range(2):
        assert cli.main(_batch(tmp_path / "link", sl, small_weights)) == 0
    assert [r["key"] for r in _records(same)] == ["a.wav"]


@pytest.mark.slow  # ~20 s: two batch processes on six songs
def test_two_runs_on_one_output_never_separate_a_song_twice(tmp_path, small_weights):
    tree, out = tmp_path / "in", tmp_path / "out"
    _songs(tree, [f"s{i}.wav" for i in range(6)], seconds=3.0)
    cmd = [sys.executable, "-m", "lightsaft_infer.cli", *_batch(tree, out, small_weights)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    second = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    done = [r["key"] for r in _records(out) if r["state"] == "done"]
    assert sorted(done) == [f"s{i}.wav" for i in range(6)], done  # each once, whoever did it
    assert not os.listdir(out / ".claims")


def test_a_damaged_manifest_is_named_line_by_line_and_never_stops_a_run(tmp_path, small_weights, capsys):
    tree, out = tmp_path / "in", tmp_path / "out"
    _songs(tree, ["a.wav", "b.wav"])
    assert cli.main(_batch(tree, out, small_weights)) == 0
    text = (out / "manifest.jsonl").read_bytes()
    b_line = [l for l in text.splitlines() if b'"b.wav"' in l][0]
    damaged = (text.replace(b_line + b"\n", b"") + b'{"key": [1]}\n{"key": 5}\n\xff\n[]\n'
               + b'{"key": "gone.wav", "folder": "gone", "source": "/nowhere/gone.wav", "state": "done"}\n'
               + b_line[: len(b_line) // 2])  # fmt: skip  # b's record cut by a power loss
    (out / "manifest.jsonl").write_bytes(damaged)
    capsys.readouterr()
    assert cli.main(_batch(tree, out, small_weights)) == 0
    err = capsys.readouterr().err
    warned = [l for l in err.splitlines() if "manifest.jsonl: line" in l]
    assert len(warned) == 5 and all("skipped" in l for l in warned) and "Traceback" not in err, err
    records = _records_lenient(out)
    assert [r["key"] for r in records if r.get("state") == "done"] == ["a.wav", "gone.wav", "b.wav"]  # b again, once
    assert (out / "manifest.jsonl").read_bytes().endswith(b"\n")


def _records_lenient(out):
    records = []
    for line in (out / "manifest.jsonl").read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            records.append(record)
    return records


def test_names_alike_but_for_case_refuse_only_themselves(tmp_path, small_weights, capsys):
    tree, out = tmp_path / "in", tmp_path / "out"
    _songs(tree, ["Song.wav", "song.wav", "other.wav"])
    assert cli.main(_batch(tree, out, small_weights)) == 1
    err = capsys.readouterr().err
    assert len([l for l in err.splitlines() if "differing only in case" in l]) == 2, err
    assert sorted(os.listdir(out / "other")) == sorted(f"{s}.wav" for s in STEMS)


def test_a_folder_that_cannot_be_read_is_named(tmp_path, small_weights, capsys):
    tree = tmp_path / "in"
    _songs(tree, ["a.wav", "locked/b.wav"])
    os.chmod(tree / "locked", 0)
    try:
        assert cli.main(_batch(tree, tmp_path / "out", small_weights)) == 0
    finally:
        os.chmod(tree / "locked", 0o755)
    err = capsys.readouterr().err
    if os.geteuid() == 0:  # root reads every folder: nothing to name, and b is separated (the next test simulates it)
        assert "folder not read" not in err and (tmp_path / "out" / "locked" / "b" / "vocals.wav").is_file()
    else:
        assert "locked: folder not read" in err and not (tmp_path / "out" / "locked").exists(), err


def lock_folders_named_locked(monkeypatch):
    """As root every folder reads: make the batch's walk report folders named ``locked`` as unreadable."""
    from lightsaft_infer import batch

    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        for folder, dirs, files in real_walk(top, onerror=onerror, **kw):
            if "locked" in dirs:
                dirs.remove("locked")
                onerror(PermissionError(13, "Permission denied", os.path.join(folder, "locked")))
            yield folder, dirs, files

    monkeypatch.setattr(batch.os, "walk", walk)


def test_unreadable_folders_are_named_even_as_root(tmp_path, monkeypatch):
    """As root every folder reads: the walk's error is simulated to check what the scan says."""
    from lightsaft_infer import batch

    tree = tmp_path / "in"
    _songs(tree, ["a.wav", "locked/b.wav"])
    lock_folders_named_locked(monkeypatch)
    warnings = []
    jobs = batch.find_jobs([tree], tmp_path / "out", warnings)
    assert [j.key for j in jobs] == ["a.wav"] and len(warnings) == 1 and "locked: folder not read (permission denied)" in warnings[0]


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, small_weights, capsys):
    _songs(tmp_path / "in", ["a.wav"])
    (tmp_path / "afile").write_text("not a folder")
    assert cli.main(_batch(tmp_path / "in", tmp_path / "afile" / "out", small_weights)) == 1
    _one_error(capsys.readouterr().err, "afile/out", "cannot be written")


def test_a_changed_input_or_a_cut_stem_is_separated_again(tmp_path, small_weights):
    tree, out = tmp_path / "in", tmp_path / "out"
    _songs(tree, ["a.wav", "b.wav"])
    assert cli.main(_batch(tree, out, small_weights)) == 0
    sf.write(tree / "a.wav", _song(1.5, seed=9), SR)  # a new version of a
    stem = out / "b" / "vocals.wav"
    stem.write_bytes(stem.read_bytes()[: stem.stat().st_size // 2])  # b's stem cut
    assert cli.main(_batch(tree, out, small_weights)) == 0
    assert [r["key"] for r in _records(out) if r["state"] == "done"] == ["a.wav", "b.wav", "a.wav", "b.wav"]
    assert sf.info(out / "a" / "vocals.wav").frames == int(1.5 * SR) and sf.info(stem).frames == SR
    assert cli.main(_batch(tree, out, small_weights)) == 0  # and now nothing is done again
    assert len(_records(out)) == 4
