"""The command line on real files, and the bad-input matrix: one-line errors, non-zero exit, no partial output."""

import json
import os
import stat

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import cli
from lightsaft_infer.audio import read_audio

SR = 44100
UMASK = os.umask(0)
os.umask(UMASK)  # the process's umask, read back unchanged


def _song(seconds=1.5, channels=2, seed=0):
    return (0.2 * np.random.default_rng(seed).standard_normal((int(seconds * SR), channels))).astype(np.float32)


def _run(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def test_separate_writes_named_stems(tmp_path, small_weights, capsys):
    song = tmp_path / "my song.wav"
    x = _song()
    sf.write(song, x, SR, subtype="PCM_24")
    code, out, err = _run(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(small_weights), "--backend", "onnx", "-q"], capsys)
    assert code == 0, err
    assert _files_under(tmp_path / "out") == [f"my song/{s}.wav" for s in ("bass", "drums", "other", "vocals")]
    for s in ("vocals", "drums", "bass", "other"):
        y, rate = sf.read(tmp_path / "out" / "my song" / f"{s}.wav", always_2d=True)
        assert y.shape == x.shape and rate == SR and np.abs(y).max() > 0
        # written through a private temporary file, but readable by others as open() would make it
        assert stat.S_IMODE(os.stat(tmp_path / "out" / "my song" / f"{s}.wav").st_mode) == 0o666 & ~UMASK
    assert "RTF" in out


def _bad_inputs(tmp):
    """name -> (path, expected fragment of the message)."""
    cases = {}
    cases["missing"] = (tmp / "missing.wav", "no such file")
    (tmp / "adir.wav").mkdir()
    cases["directory"] = (tmp / "adir.wav", "is a directory")
    corrupt = tmp / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    cases["corrupt"] = (corrupt, "cannot be read as audio")
    text = tmp / "text.wav"
    text.write_text("hello")
    cases["not audio"] = (text, "cannot be read as audio")
    nan = _song()
    nan[1234, 1] = np.nan
    sf.write(tmp / "nan.wav", nan, SR, subtype="FLOAT")
    cases["nan"] = (tmp / "nan.wav", "NaN or infinite samples (first at sample 1234)")
    inf = _song()
    inf[5, 0] = np.inf
    sf.write(tmp / "inf.wav", inf, SR, subtype="FLOAT")
    cases["inf"] = (tmp / "inf.wav", "NaN or infinite")
    sf.write(tmp / "six.wav", _song(channels=6), SR)
    cases["6 channels"] = (tmp / "six.wav", "has 6 channels")
    sf.write(tmp / "empty.wav", np.zeros((0, 2), np.float32), SR)
    cases["empty"] = (tmp / "empty.wav", "holds no samples")
    return cases


@pytest.mark.parametrize("case", ["missing", "directory", "corrupt", "not audio", "nan", "inf", "6 channels", "empty"])
def test_bad_audio_gives_one_line_error_and_no_output(case, tmp_path, small_weights, capsys):
    path, fragment = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    code, out, err = _run(["separate", str(path), "-o", str(out_dir), "-w", str(small_weights), "--backend", "onnx", "-q"], capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("lightsaft-infer: error")]
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], err
    assert not out_dir.exists() or _files_under(out_dir) == []


def test_one_bad_file_does_not_stop_the_others(tmp_path, small_weights, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, _song(1.0), SR)
    code, _, err = _run(["separate", str(tmp_path / "nope.wav"), str(good), "-o", str(tmp_path / "out"),
                         "-w", str(small_weights), "--backend", "onnx", "-q"], capsys)  # fmt: skip
    assert code == 1 and "nope.wav: no such file" in err
    assert len(_files_under(tmp_path / "out" / "good")) == 4


@pytest.mark.parametrize("case", ["missing", "not safetensors", "no config", "wrong suffix"])
def test_bad_weights_give_one_line_error(case, tmp_path, capsys):
    from safetensors.numpy import save_file

    song = tmp_path / "s.wav"
    sf.write(song, _song(0.5), SR)
    weights = {"missing": tmp_path / "none.safetensors", "not safetensors": tmp_path / "junk.safetensors",
               "no config": tmp_path / "bare.safetensors", "wrong suffix": tmp_path / "model.pt"}[case]  # fmt: skip
    if case == "not safetensors":
        weights.write_bytes(b"\x00" * 100)
    elif case == "no config":
        save_file({"x": np.zeros(1, np.float32)}, str(weights), metadata={"format": "lightsaft-infer", "format_version": "1"})
    elif case == "wrong suffix":
        weights.write_bytes(b"pickle")
    code, _, err = _run(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(weights), "--backend", "torch"], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and str(weights) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("subtype,fmt", [("PCM_16", "WAV"), ("PCM_24", "WAV"), ("PCM_32", "WAV"), ("FLOAT", "WAV"),
                                         ("DOUBLE", "WAV"), ("PCM_16", "FLAC"), ("VORBIS", "OGG")])  # fmt: skip
def test_readable_formats(subtype, fmt, tmp_path):
    path = tmp_path / f"x.{fmt.lower()}"
    x = _song(0.3)
    sf.write(path, x, SR, subtype=subtype, format=fmt)
    y, rate = read_audio(path)
    assert rate == SR and y.shape == x.shape and y.dtype == np.float32
    if fmt != "OGG":  # lossy
        assert np.abs(y - x).max() < 1e-3


def test_mono_and_48k_files_come_back_mono_48k(tmp_path, small_weights, capsys):
    song = tmp_path / "mono48.wav"
    sf.write(song, _song(0.7, channels=1), 48000, subtype="PCM_16")
    code, _, err = _run(["separate", str(song), "-o", str(tmp_path / "out"), "-w", str(small_weights), "--backend", "onnx", "-q"], capsys)
    assert code == 0, err
    info = sf.info(tmp_path / "out" / "mono48" / "vocals.wav")
    assert (info.channels, info.samplerate, info.frames) == (1, 48000, sf.info(song).frames)


def test_convert_info_and_export(tmp_path, upstream, capsys):
    out = tmp_path / "w" / "small.safetensors"
    code, _, err = _run(["convert", str(upstream / "lightsaft_small.ckpt"), "-o", str(out), "--onnx"], capsys)
    assert code == 0, err
    assert out.exists() and out.with_suffix(".onnx").exists()
    for path in (out, out.with_suffix(".onnx")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~UMASK
    code, text, _ = _run(["info", str(out.with_suffix(".onnx"))], capsys)
    assert code == 0 and json.loads(text)["num_frame"] == 256


def test_bench_reports_budgets(tmp_path, small_weights, capsys):
    report_path = tmp_path / "bench.json"
    code, out, err = _run(["bench", "-w", str(small_weights), "--durations", "2", "--backends", "onnx",
                           "--no-reference", "--json", str(report_path)], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    r = report["songs"][0]["paths"]["onnx"]
    assert r["ok"], r
    assert r["wall_s"] > 0 and r["peak_rss_mb"] > 10 and abs(r["rtf"] - r["wall_s"] / 2) < 1e-9
    assert report["songs"][0]["budget_round1_s"] == 240 and abs(report["songs"][0]["budget_round2_s"] - 3.14) < 1e-9
    assert "onnx" in out and "margin" in out


def test_stems_are_written_all_or_nothing(tmp_path):
    from lightsaft_infer.audio import write_stems
    from lightsaft_infer.errors import AudioError

    good, bad = tmp_path / "vocals.wav", tmp_path / "drums.mp4"
    with pytest.raises(AudioError) as err:
        write_stems({good: _song(0.1), bad: _song(0.1)}, SR)
    assert str(err.value).startswith(str(bad)) and ".part" not in str(err.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # ~45 s: each path in a fresh process, OpenVINO compiling its model in each
def test_bench_scores_a_real_song_and_compares_paths(tmp_path, capsys):
    """On the demo song (FLAC reference stems), with bench's default paths (the exact one and the fast path
    predict.py would fall back to): SDR per path, the fast path's difference from the exact one. The other
    fast paths' closeness to the exact one is test_fast_paths's."""
    from .conftest import REPO

    from lightsaft_infer.bench import default_bench_backends

    paths = default_bench_backends(REPO / "weights" / "default.onnx")  # with the test extras: onnx, openvino-int8
    report_path = tmp_path / "bench.json"
    code, out, err = _run(["bench", "--durations", "1", "--no-reference",
                           "--song", str(REPO / "data" / "test" / "synth-test-000"), "--json", str(report_path),
                           "--plot", str(tmp_path / "bench.png")], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    demo = report["songs"][-1]["paths"]
    assert sorted(demo) == sorted(paths), demo
    assert demo["onnx"]["ok"] and np.isfinite(demo["onnx"]["mdx_sdr"]["mean"]), demo
    # bf16 is close to, not equal to, fp32; int8 further off per sample, and on one song its SDR
    # may move either way (issue 13's 0.05 dB goal is for the mean over the 50 test songs). On this
    # song int8 measured -0.152 dB with the step-4600 weights, -0.399 dB with step 8400's (drums -1.1),
    # -0.120 dB with step 10200's (-0.687 with its first TFC block in int8 too)
    for fast in paths[1:]:
        assert demo[fast]["ok"] and "sdr_change_vs_exact_db" in demo[fast], demo
        assert 0 < demo[fast]["max_diff_vs_exact"] < (0.05 if "bf16" in fast else 0.5), fast
        assert abs(demo[fast]["sdr_change_vs_exact_db"]) < (0.05 if "bf16" in fast else 0.5), fast
    assert set(report["fits_240s_up_to_s"]) == set(paths)
    assert (tmp_path / "bench.png").stat().st_size > 10_000 and "longest song that fits 240 s" in out
