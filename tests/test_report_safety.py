"""report, round two: a page anyone may open safely. Everything from a file is escaped for its context,
nothing is written or linked outside the output folder, names are URL-encoded, a missing or cut stem is
one line and marked on the page, and memory stays flat for any length."""

import json
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer.batch import input_identity
from lightsaft_infer.report import write_report

from .test_never_fail import _one_error
from .test_round_two import SR, _song

STEMS = ("vocals", "drums", "bass", "other")
pytest.importorskip("matplotlib")


def _fake_batch(out, songs):
    """A batch's output without the model: ``{key: (source file, stems' audio)}``; returns the manifest path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, (source, audio, rate) in songs.items():
        folder = os.path.splitext(key)[0]
        (out / folder).mkdir(parents=True, exist_ok=True)
        for s in STEMS:
            sf.write(out / folder / f"{s}.wav", audio, rate, subtype="PCM_16")
        lines.append({"key": key, "folder": folder, "source": str(source), "state": "done", "duration_s": 1.0,
                      "seconds": 0.5, "rtf": 0.5, "windows": {"exact": 1}, **input_identity(source)})  # fmt: skip
    (out / "manifest.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return out / "manifest.jsonl"


def _one_song(tmp_path, name="song.wav", seconds=0.5):
    source = tmp_path / "in" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    audio = _song(seconds)
    sf.write(source, audio, SR)
    return source, audio


def _edit(manifest, **fields):
    record = json.loads(manifest.read_text().splitlines()[0])
    record.update(fields)
    manifest.write_text(json.dumps(record) + "\n")


def test_hostile_manifest_fields_are_escaped_and_never_leave_the_output(tmp_path):
    source, audio = _one_song(tmp_path)
    out = tmp_path / "out"
    manifest = _fake_batch(out, {"song.wav": (source, audio, SR)})
    _edit(manifest, windows={"exact' autofocus onfocus='alert(1)": 1, "<script>alert(2)</script>": 2},
          key="k\"'><img src=x onerror=alert(3)>")  # fmt: skip
    index = write_report(out, warn=lambda line: None)
    for page in (index, out / "song" / "index.html"):
        text = open(page, encoding="utf-8").read()
        assert "autofocus onfocus='alert" not in text and "<script>alert" not in text and "<img src=x" not in text
        assert "&#x27; autofocus onfocus=&#x27;alert(1)" in text  # shown, as text
    # a folder outside OUT, and a source that the batch never read
    outside = tmp_path / "outside"
    warned = []
    _edit(manifest, folder="../outside/pwned")
    write_report(out, warn=warned.append)
    assert not outside.exists() and any("outside" in w and "not shown" in w for w in warned), warned
    _edit(manifest, folder="song", source="/etc/passwd")
    write_report(out, warn=lambda line: None)
    passwd = open("/etc/passwd", "rb").read()
    assert all(p.read_bytes() != passwd for p in (out / "song").iterdir() if p.is_file())
    assert 'src="mixture' not in (out / "song" / "index.html").read_text(encoding="utf-8")


def test_url_special_names_link_to_their_pages(tmp_path):
    out = tmp_path / "out"
    songs = {}
    for name in ("a#b.wav", "c%41.wav", "d?e.wav", "f g.wav"):
        source, audio = _one_song(tmp_path, name)
        songs[name] = (source, audio, SR)
    _fake_batch(out, songs)
    text = open(write_report(out, warn=lambda line: None), encoding="utf-8").read()
    for folder, href in (("a#b", "a%23b"), ("c%41", "c%2541"), ("d?e", "d%3Fe"), ("f g", "f%20g")):
        assert f"href='{href}/index.html'" in text, href
        assert (out / folder / "index.html").is_file()
    page = (out / "a#b" / "index.html").read_text(encoding="utf-8")
    assert 'src="mixture.wav"' in page and 'src="spectrograms/vocals.png"' in page


def test_missing_and_cut_stems_and_bad_folders_are_one_line_each(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 1
    _one_error(capsys.readouterr().err, "nowhere", "no such folder")
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 1
    _one_error(capsys.readouterr().err, "empty", "holds no manifest.jsonl")
    out = tmp_path / "out"
    a, audio_a = _one_song(tmp_path, "a.wav")
    b, audio_b = _one_song(tmp_path, "b.wav")
    _fake_batch(out, {"a.wav": (a, audio_a, SR), "b.wav": (b, audio_b, SR)})
    os.unlink(out / "a" / "vocals.wav")
    sf.write(out / "b" / "drums.wav", audio_b[:1000], SR)  # cut short
    assert cli.main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len([l for l in err.splitlines() if "incomplete" in l]) == 2, err
    assert "vocals missing" in (out / "a" / "index.html").read_text() and "drums is 1000 samples" in (out / "b" / "index.html").read_text()
    assert "incomplete" in (out / "index.html").read_text()


def test_a_long_song_is_reported_in_flat_memory(tmp_path):
    """10 minutes of mono: holding every track at once (as before) takes > 500 MB; streamed, a few MB."""
    n = 600 * SR
    source = tmp_path / "in" / "long.wav"
    source.parent.mkdir()
    block = (0.1 * np.random.default_rng(0).standard_normal(30 * SR)).astype(np.float32)
    with sf.SoundFile(source, "w", SR, 1, "PCM_16") as f:
        for _ in range(n // len(block)):
            f.write(block)
    out = tmp_path / "out"
    (out / "long").mkdir(parents=True)
    for s in STEMS:
        os.link(source, out / "long" / f"{s}.wav")
    (out / "manifest.jsonl").write_text(json.dumps({"key": "long.wav", "folder": "long", "source": str(source),
                                                    "state": "done", **input_identity(source)}) + "\n")  # fmt: skip
    tracemalloc.start()
    try:
        write_report(out, warn=lambda line: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB"
    assert len([n for n in os.listdir(out / "long" / "spectrograms") if n.endswith(".png")]) == 5
