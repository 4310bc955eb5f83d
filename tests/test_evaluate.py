"""``lightsaft-infer evaluate``: scores of the model and of the two references on a MUSDB-layout split."""

import json

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer.cli import main
from lightsaft_infer.evaluate import bss_sdr, evaluate, ideal_ratio_mask
from lightsaft_infer.mdx import mdx_sdr
from lightsaft_infer.separator import Separator
from lightsaft_infer.stft import STFT

from .conftest import IdentityBackend

SR = 44100
STEMS = ("vocals", "drums", "bass", "other")


def _split(root, songs=2, seconds=3.0):
    rng = np.random.default_rng(5)
    for i in range(songs):
        d = root / "test" / f"song{i}"
        d.mkdir(parents=True)
        n = int(seconds * SR)
        t = np.arange(n) / SR
        # Stems that differ in spectrum, so that the oracle mask can separate them.
        stems = {
            "vocals": np.sin(2 * np.pi * 440 * t), "drums": rng.standard_normal(n) * (t % 0.5 < 0.05),
            "bass": np.sin(2 * np.pi * 55 * t), "other": np.sin(2 * np.pi * 1320 * t) * 0.5,
        }
        for s, x in stems.items():
            sf.write(d / f"{s}.wav", (0.2 * np.stack([x, 0.8 * x], 1)).astype(np.float32), SR, subtype="FLOAT")
        sf.write(d / "mixture.wav", sum(0.2 * np.stack([x, 0.8 * x], 1) for x in stems.values()).astype(np.float32),
                 SR, subtype="FLOAT")  # fmt: skip
    return root


def test_scores_of_the_model_and_the_references(tmp_path, mdx_config):
    root = _split(tmp_path)
    sep = Separator(IdentityBackend(mdx_config))  # every stem = the mixture
    report = evaluate(sep, root, "test", bss=False)
    assert report["songs"] == 2
    for row in report["per_song"]:
        d = root / "test" / row["song"]
        mix = sf.read(d / "mixture.wav", dtype="float32")[0]
        for s in STEMS:
            ref = sf.read(d / f"{s}.wav", dtype="float32")[0]
            assert abs(row["mix/4"][s]["mdx"] - mdx_sdr(ref, mix / 4)) < 1e-6
            assert abs(row["model"][s]["mdx"] - mdx_sdr(ref, mix)) < 1e-3
            assert row["IRM"][s]["mdx"] > row["mix/4"][s]["mdx"] + 3  # the oracle separates these stems
    summary = report["summary"]
    assert abs(summary["mix/4"]["vocals"]["mdx"] - np.mean([r["mix/4"]["vocals"]["mdx"] for r in report["per_song"]])) < 1e-9


def test_ideal_ratio_mask_of_one_source_is_the_mixture():
    x = np.random.default_rng(0).standard_normal((SR, 2)).astype(np.float32)
    est = ideal_ratio_mask(x, {"a": x, "b": np.zeros_like(x)}, STFT(2048, 1024))
    np.testing.assert_allclose(est["a"], x, atol=1e-4)
    assert np.abs(est["b"]).max() < 1e-4


def test_bss_eval_orders_estimates_by_quality():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((2, 3 * SR, 2))
    good, bad = ref + 0.05 * rng.standard_normal(ref.shape), ref + 0.5 * rng.standard_normal(ref.shape)
    g, b = bss_sdr(ref, good, SR), bss_sdr(ref, bad, SR)
    assert all(x > y + 10 for x, y in zip(g, b)) and abs(g[0] - 26) < 2  # 20·log10(1/0.05) ≈ 26 dB


@pytest.mark.slow  # ~40 s: the whole evaluate command on a split, with BSS-Eval (CI runs it with -m slow)
def test_evaluate_command(tmp_path, small_weights, capsys):
    root = _split(tmp_path, songs=1, seconds=2.0)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(root), "-w", str(small_weights), "--backend", "onnx", "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "| IRM | MDX SDR (mean) |" in text and "| model | BSS-Eval v4 SDR (median) |" in text
    report = json.loads(out.read_text())
    assert report["summary"]["model"]["mean"]["bss"] is not None
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_compare_reports_the_change_per_stem_and_refuses_other_songs():
    from lightsaft_infer.evaluate import compare

    def report(scores):
        return {"per_song": [{"song": name, "model": {s: {"mdx": v} for s, v in zip(("vocals", "drums"), vals)}}
                             for name, vals in scores.items()]}  # fmt: skip

    base = report({"a": (4.0, 2.0), "b": (6.0, 1.0)})
    new = report({"a": (3.9, 2.0), "b": (5.7, 1.2)})
    out = compare(new, base, ("vocals", "drums"))
    assert out["vocals"] == pytest.approx((-0.2, 0.3)) and out["drums"] == pytest.approx((0.1, 0.2))
    assert out["mean"] == pytest.approx((-0.05, 0.05))
    with pytest.raises(ValueError, match="same songs"):
        compare(report({"c": (1.0, 1.0)}), base, ("vocals", "drums"))
