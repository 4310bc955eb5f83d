"""Write ``weights/MODEL_CARD.md`` and the loss-curve PNG from a training run and an evaluation.

    python -m training.model_card --run RUN_DIR --corpus ROOT --eval eval.json --out weights/
    python -m training.model_card --transfer test.json shift.json [--postfilter-eval NAME=JSON ...] --out weights/

Every number in the card comes from these files (the run's ``log.jsonl``, the
corpus on disk, the ``lightsaft-infer evaluate --json`` report), so the card
cannot drift from what was measured.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform

import numpy as np
import soundfile as sf

STEMS = ("vocals", "drums", "bass", "other")


def corpus_facts(root: str) -> dict:
    out = {}
    for split in ("train", "valid", "test"):
        songs = sorted(glob.glob(os.path.join(root, split, "*", "mixture.wav")))
        seconds = [sf.info(s).duration for s in songs]
        out[split] = {"songs": len(songs), "minutes": round(sum(seconds) / 60, 1),
                      "min_s": round(min(seconds), 1) if seconds else 0, "max_s": round(max(seconds), 1) if seconds else 0}
    return out


def loss_curve(log: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    steps = [r["step"] for r in log]
    ax.plot(steps, [r["train_loss"] for r in log], label="train (running mean)")
    ax.plot(steps, [r["valid_loss"] for r in log], "o-", ms=3, label="valid (fixed excerpts)")
    ax.set_xlabel("step")
    ax.set_ylabel("complex-spectrogram MSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("LightSAFT (MDX configuration) on the synthetic corpus", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def phases(log: list) -> str:
    """Markdown bullets: the step ranges trained with one learning rate / condition sampling / training set."""
    rows, prev_step = [], 0
    for r in log:
        songs = r["train_songs"]
        if r.get("train_recipes"):
            songs = " + ".join(f"{n} {recipe}" for recipe, n in r["train_recipes"].items())
        # a corpus that grows during a phase (same recipes) does not start a new one
        data = tuple(r["train_recipes"]) if r.get("train_recipes") else songs
        key = (r.get("lr", 1e-3), tuple(r["condition_p"]) if r.get("condition_p") else None, data,
               bool(r.get("timbre")), r.get("ema"), r.get("saturate"), r.get("fx"), r.get("reverb"))
        if rows and rows[-1][0] == key:
            rows[-1][2], rows[-1][4] = r["step"], songs
        else:
            rows.append([key, prev_step, r["step"], songs, songs])
        prev_step = r["step"]
    out = []
    for (lr, p, _, timbre, ema, saturate, fx, reverb), a, b, first, last in rows:
        sampling = "uniform (the authors')" if p is None else "/".join(f"{v:g}" for v in p)
        songs = f"{last}" if first == last else f"{first} growing to {last}"
        extra = ((", timbre augmentation (re-pitch, random EQ)" if timbre else "")
                 + (f", saturation of each stem with probability {saturate:g}" if saturate else "")
                 + (f", an effects chain (drive, modulation, echoes) on each stem with probability {fx:g}" if fx else "")
                 + (f", a synthetic reverb on each stem with probability {reverb:g}" if reverb else "")
                 + (f", weights' EMA {ema:g}" if ema else ""))
        out.append(f"  - steps {a}–{b}: lr {lr:g}, targets {sampling}, {songs} train songs{extra}")
    return "\n".join(out)


def trained_on_wide(log: list) -> bool:
    """Whether any phase of ``log`` trained on the wide recipe (``train_recipes``)."""
    return any(recipe.startswith("wide") for r in log for recipe in (r.get("train_recipes") or {}))


def wide_paragraph(log: list) -> str:
    """The wide recipe's description, if any phase of ``log`` trained on it."""
    if not trained_on_wide(log):
        return ""
    return """
Later phases add the **wide recipe** (`training/wide.py`, the default of `python -m training.corpus`
for train/valid): domain-randomised sources, so that a stem is defined by its role in the song
rather than by a timbre. Vocals from espeak-ng in ten languages and ten festival voices (diphone, HTS,
cluster units) with random formant shift, breathiness, vibrato, portamento, sibilance, doubles and
harmonies, spoken/rapped phrases and delay throws; drums from 14 recorded Hydrogen kits beside the GM
kits, with ghost notes, cymbal washes, room mics and bus compression; synthesised basses (FM,
subtractive, sub) and keys (supersaw, Karplus-Strong, organ, FM, PWM), guitars through an amp and
cabinet simulation, and choir pads and voice leads in *other*; random stereo width and a
codec-like band limit on the mix. The valid split used to pick the checkpoint then holds 14 wide and
14 GM-recipe songs, weighted equally. The test split stays GM-recipe, so its figures compare
across models.
""" + later_versions_paragraph(log)


def later_versions_paragraph(log: list) -> str:
    """What the wide recipe's later versions (2 and 3), the effects chain and the effects validation set added,
    if the log used them."""
    recipes = {recipe for r in log for recipe in (r.get("train_recipes") or {})}
    if not {"wide v2", "wide v3"} & recipes:
        return ""
    from training.train import FX_VALID

    fx = [r["fx"] for r in log if r.get("fx")]
    valid_fx = any(key.endswith(FX_VALID) for r in log for key in (r.get("valid_losses") or {}))
    return ("\nThe wide recipe's **version 2** (`recipe_version` in `song.json`) adds operator FM to the basses and "
            "keys (two operators with half-, absolute- and quarter-sine and square waveforms, FM or additive, "
            "percussive or held) and draws synthesised parts for *other* more often; its train songs are "
            "20–40 s long, so that many songs fit the time there was to render them."
            + (f" Phases with `--fx` put each training stem through a random effects chain with probability "
               f"{', then '.join(f'{p:g}' for p in dict.fromkeys(fx))}: drive into a cabinet-like low-pass, a chorus, "
               "flanger or phaser, and feedback echoes, "
               "written in numpy/scipy (the families of the shift split's effects, not its pedalboard code)."
               if fx else "")
            + (" From then on the checkpoint is chosen on three validation sets weighted equally: the wide and GM "
               "valid songs, and the wide ones again with that effects chain on some of their stems (a fixed, "
               "seeded draw)."
               if valid_fx else "")
            + (" Songs of **version 3** join later: it gives 30 % of the singers a third voice engine, a "
               "source-filter singer with no speech engine and no WORLD vocoder (`training/formant.py`: Rosenberg "
               "glottal pulses with jitter, shimmer and aspiration, five formants gliding between vowel targets, "
               "fricative, plosive and nasal onsets), so that *a voice* is not one engine's or one vocoder's sound."
               if "wide v3" in recipes else "")
            + "\n")


def read_log(run: str, history: str | None = None) -> list:
    """The run's ``log.jsonl``, after ``history`` (the log of the weights it was initialised from, e.g.
    ``weights/training_log.jsonl``) with the run's steps and seconds counted on from the history's end."""
    before = [json.loads(line) for line in open(history)] if history else []
    step0, seconds0 = (before[-1]["step"], before[-1]["seconds"]) if before else (0, 0.0)
    run_log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    return before + [{**r, "step": r["step"] + step0, "seconds": r["seconds"] + seconds0, "run": True} for r in run_log]


def best_record(log: list) -> dict:
    """The run's best record on the validation sets of its last record (the history's, or a resumed run's earlier
    ones, may have been other sets, whose figures do not compare): the highest validation SDR, as training chooses
    ``best.safetensors``, among the records that have one; the lowest loss in a log from before the SDR."""
    run = [r for r in log if r.get("run")]
    sets = sorted(run[-1].get("valid_losses") or {})
    same = [r for r in run if sorted(r.get("valid_losses") or {}) == sets]
    if "valid_sdr" in run[-1]:
        return max((r for r in same if "valid_sdr" in r), key=lambda r: r["valid_sdr"])
    return min(same, key=lambda r: r["valid_loss"])


def eval_table(report: dict) -> str:
    from lightsaft_infer.evaluate import format_table

    return format_table(report, STEMS)


def validation_figure(record: dict) -> str:
    """``record``'s validation figure: its SDR (what chooses the best checkpoint) where it has one, else its loss."""
    if "valid_sdr" in record:
        return f"validation SDR {record['valid_sdr']:.2f} dB"
    return f"validation loss {record['valid_loss']:.4f}"


def validation_line(log: list, weights_step: int | None = None) -> str:
    """Which checkpoint the weights are: the best by validation (the default), or ``weights_step``."""
    best = best_record(log)
    figure = validation_figure(best)
    line = f"Best {figure} at step {best['step']}"
    if weights_step is None or weights_step == best["step"]:
        return line + " (these weights)."
    shipped = next(r for r in log if r["step"] == weights_step)
    return (line + f"; these weights are step {weights_step} ({validation_figure(shipped)}), not "
            "the best by validation: see the phases below for why.")


def render(run: str, corpus: str, eval_path: str, out_dir: str, hardware: str, frames: int, batch: int,
           extra: str = "", history: str | None = None, weights_step: int | None = None) -> str:
    log = read_log(run, history)
    report = json.load(open(eval_path))
    facts = corpus_facts(corpus)
    loss_curve(log, os.path.join(out_dir, "loss_curve.png"))
    summary = report["summary"]
    gain = {s: summary["model"][s]["mdx"] - summary["mix/4"][s]["mdx"] for s in STEMS}
    bss_songs = sum(1 for r in report["per_song"] if r["model"]["vocals"].get("bss") is not None)
    sources = ("General-MIDI SoundFont instruments and a vocoded speech \"singer\"" + (
        ", then also the domain-randomised *wide recipe* below: speech-synthesiser voices, recorded drum kits, "
        "synthesised basses and keys, simulated guitar amplifiers" if trained_on_wide(log) else ""))
    split_lines = "\n".join(
        f"| {k} | {v['songs']} | {v['minutes']} | {v['min_s']}–{v['max_s']} s |" for k, v in facts.items())
    return f"""# Model card: `weights/default` (LightSAFT, MDX configuration, trained on synthetic music)

**Read this first.** These weights were trained *only on synthetic music* generated in this
repository ({sources}), because neither the
authors' checkpoints nor MUSDB18-HQ can be downloaded where this package is built. They make the
package work out of the box and show that the training pipeline learns, but they are **not** a
model for real recordings: expect poor separation of real vocals (real voices, lyrics, effects),
real drum kits and mixed/mastered commercial music. For real use, convert the authors' published
checkpoint or train on MUSDB18-HQ (below).

## Model
- Network: LightSAFT conditioned U-Net, the MDX submission's configuration (n_fft 2048, hop 1024,
  256-frame windows, 9 blocks, 16 channels, 16 latent sources, dk 64, embedding 64; 4,159,844
  parameters), exactly the authors' architecture (`lightsaft_infer.network.ConditionedUNet`).
- Files: `default.safetensors` (engine format, config in the metadata) and `default.onnx` (the
  frozen all-sources graph for ONNX Runtime).

## Training data: the synthetic corpus (`python -m training.corpus`)
MUSDB18-HQ layout, stereo 44.1 kHz 16-bit, the mixture the exact integer sum of the stems.
Songs composed procedurally (tempo, key, meter, chord progressions, intro/verse/chorus/break/outro
sections with stems silent in some, drum grooves with fills, bass following the harmony, comping,
pads, arpeggios and counter-melodies), rendered with FluidSynth from three GM SoundFonts
(FluidR3_GM, MuseScore_General_Lite, TimGM6mb); vocals are espeak-ng syllables re-pitched onto the
melody with the WORLD vocoder (vibrato, glides, formant shift, breathiness, chorus doubling) plus
sometimes a GM choir layer; per-stem EQ/compression/reverb (pedalboard) and one master limiter gain
applied to all stems. The test split uses instrument programs, drum kits and voices that train
and valid never use.
{wide_paragraph(log)}
| split | songs | minutes | song length |
|---|---|---|---|
{split_lines}

(The generator defaults to MUSDB18's size, 100/14/50 songs of 1–3 min; the corpus above is what
was generated for this model in the time available, seed 0.)

## Training (`python -m training.train`)
- Recipe: complex-spectrogram MSE of the conditioned target, Adam, a random condition
  per example, on-the-fly remixing (each stem from a random song and offset, or with probability
  0.5 all from one place), random gain 0.25–1.25 per stem, random channel swap.
- Phases (learning rate; probability of each target vocals/drums/bass/other; train songs):
{phases(log)}
- Windows of {frames} frames (the net is convolutional in time), batch {batch}, bf16 autocast.
- Steps: {log[-1]['step']} ({log[-1]['seconds'] / 3600:.2f} h wall, including pauses while the
  machine ran other jobs) on {hardware}. {validation_line(log, weights_step)}
{extra}

![loss curve](loss_curve.png)

## Evaluation on the synthetic test split (`lightsaft-infer evaluate`)
{report['songs']} test songs, separated by the same `Separator` users run ({report.get('model', '')}).
MDX SDR is the challenge formula, mean over songs; BSS-Eval v4 SDR (museval, median over 1 s frames,
median over songs) was computed on {bss_songs} songs. `mix/4` = every stem estimated as the mixture
divided by four; `IRM` = ideal ratio mask with the same STFT (an oracle upper bound for masking).

{eval_table(report)}

Improvement over mix/4 in MDX SDR: {", ".join(f"{s} {gain[s]:+.2f} dB" for s in STEMS)}.

These numbers measure separation of *this synthetic music with unseen instruments and voices*;
they say nothing about real recordings (see the top of this card).

## Using other weights
- The authors' checkpoint (PyTorch Lightning file, read without running pickled code):
  `lightsaft-infer convert epoch=NNN.ckpt -o weights/mine.safetensors --onnx`, then
  `LIGHTSAFT_WEIGHTS=weights/mine.safetensors python predict.py` (or `--weights` on the CLI).
- Train on MUSDB18-HQ: `python -m training.train /path/to/musdb18hq runs/musdb` (it reads the same
  layout; put the 14 conventional validation tracks in `valid/`), then copy
  `runs/musdb/best.safetensors` and `best.onnx` where you want them.

Generated by `python -m training.model_card` on {platform.node() or 'this machine'}.
"""


TRANSFER = "## Transfer: the shift split"


def gains_over_mix4(report: dict) -> dict:
    """``{stem or "mean": model's MDX SDR minus mix/4's}`` from an evaluate report's summary."""
    s = report["summary"]
    return {k: s["model"][k]["mdx"] - s["mix/4"][k]["mdx"] for k in STEMS + ("mean",)}


def transfer_section(test: dict, shift: dict, postfilters: dict | None = None, study: dict | None = None) -> str:
    """Markdown: the in-distribution test split beside the shift split (held-out sources), per stem, with
    mix/4 and the IRM oracle; ``postfilters`` ({name: shift report}) adds the post-filters' model rows;
    ``study`` ({"shift-stdfx": report, "test-shiftfx": report}, optionally "shift-stdfx-espeak" and "test-flite";
    ``corpus --study``) the transfer study's cross-over splits, which divide the shift split's loss between its
    sources and its effects, and the sources' between the singer and the rest."""
    def rows(report, label):
        s = report["summary"]
        out = []
        for system in ("model", "mix/4", "IRM"):
            cells = " | ".join(f"{s[system][k]['mdx']:.2f}" for k in STEMS + ("mean",))
            out.append(f"| {label} ({report['songs']} songs) | {system} | {cells} |")
        gains = " | ".join(f"{s['model'][k]['mdx'] - s['mix/4'][k]['mdx']:+.2f}" for k in STEMS + ("mean",))
        out.append(f"| {label} | gain over mix/4 | {gains} |")
        return out

    lines = [TRANSFER, "",
             "MDX SDR (mean over songs). The shift split (`python -m training.corpus ROOT --shift N`) is rendered",
             "only from sources no training song uses: other SoundFonts (OPL3 FM synthesis, the csound GM bank),",
             "flite instead of espeak-ng for the singer, and a held-out effects chain and codec-like band limit.",
             "", "| split | system | " + " | ".join(STEMS) + " | mean |", "|---|---|" + "---|" * 5]  # fmt: skip
    lines += rows(test, "test") + rows(shift, "shift")
    for name, report in (postfilters or {}).items():
        model = report["summary"]["model"]
        lines.append(f"| shift | model + {name} post-filter | " + " | ".join(f"{model[k]['mdx']:.2f}" for k in STEMS + ("mean",)) + " |")

    shift_gain, test_gain = gains_over_mix4(shift), gains_over_mix4(test)
    kept = {k: shift_gain[k] / test_gain[k] for k in STEMS + ("mean",) if test_gain[k] > 0}
    worst = sorted((k for k in STEMS if k in kept), key=kept.get)[:2]
    lines += ["", f"On sources it has never heard the model keeps {kept['mean']:.0%} of its in-distribution gain over "
              f"mix/4, least for {worst[0]} ({kept[worst[0]]:.0%}) and {worst[1]} ({kept[worst[1]]:.0%}), while the "
              "IRM oracle stays high: the drop is the model's, not the material's. What it was trained on is listed "
              "under *Training data*; on anything else, real recordings above all, expect the shift split's figures "
              "or worse."]  # fmt: skip
    if study:
        lines += ["", study_paragraph(test, shift, study)]
    return "\n".join(lines) + "\n"


def study_paragraph(test: dict, shift: dict, study: dict) -> str:
    """Markdown: gain over mix/4 per stem on test, shift and the two cross-over splits, and what the shift
    split's held-out effects and held-out sources each cost; with the singer-swap splits (``shift-stdfx-espeak``,
    ``test-flite``) also what the held-out singer costs. Each cross-over split is compared with the same songs of
    its own split (``synth-test-shiftfx-007`` with ``synth-test-007``), shift-stdfx-espeak with shift-stdfx."""
    keys = STEMS + ("mean",)

    def same_songs(report, study_split):
        """Gains over mix/4 on the songs of ``report`` that the study split re-rendered."""
        songs = {r["song"].replace(f"-{study_split}-", "-" + study_split.split("-")[0] + "-")
                 for r in study[study_split]["per_song"]}
        rows = [r for r in report["per_song"] if r["song"] in songs]
        g = {k: float(np.mean([r["model"][k]["mdx"] - r["mix/4"][k]["mdx"] for r in rows])) for k in STEMS}
        return {**g, "mean": float(np.mean([g[k] for k in STEMS]))}

    same_test, same_shift = same_songs(test, "test-shiftfx"), same_songs(shift, "shift-stdfx")
    test_g, shift_g = gains_over_mix4(test), gains_over_mix4(shift)
    shiftfx_g, stdfx_g = gains_over_mix4(study["test-shiftfx"]), gains_over_mix4(study["shift-stdfx"])
    rows = [("test: unseen programs/voices, standard effects", test["songs"], test_g),
            ("test-shiftfx: those test songs, shift effects", study["test-shiftfx"]["songs"], shiftfx_g),
            ("shift-stdfx: those shift songs, standard effects", study["shift-stdfx"]["songs"], stdfx_g),
            ("shift: held-out sources and effects", shift["songs"], shift_g)]  # fmt: skip
    singers = "shift-stdfx-espeak" in study and "test-flite" in study
    if singers:
        espeak_g, flite_g = gains_over_mix4(study["shift-stdfx-espeak"]), gains_over_mix4(study["test-flite"])
        rows += [("shift-stdfx-espeak: those shift songs, standard effects, the test split's singers",
                  study["shift-stdfx-espeak"]["songs"], espeak_g),
                 ("test-flite: those test songs, the shift split's singers (flite)", study["test-flite"]["songs"],
                  flite_g)]
    out = ["The transfer study (`python -m training.corpus ROOT --study N`) re-renders the first N songs of the test "
           "and shift splits through the other split's effects chain" + (", or sung by the other split's singers (a "
           "voice of the same sex, its style kept)" if singers else "") + ". Gain over mix/4 (MDX SDR, dB):", "",
           "| split | songs | " + " | ".join(STEMS) + " | mean |", "|---|---|" + "---|" * 5]
    for label, songs, g in rows:
        out.append(f"| {label} | {songs} | " + " | ".join(f"{g[k]:+.2f}" for k in keys) + " |")

    def listed(d):
        return ", ".join(f"{k} {d[k]:.2f}" for k in keys)

    fx_shift = {k: stdfx_g[k] - same_shift[k] for k in keys}
    fx_test = {k: same_test[k] - shiftfx_g[k] for k in keys}
    src = {k: test_g[k] - stdfx_g[k] for k in keys}
    out += ["", f"On the same songs, the shift split's held-out effects (drive, chorus/phaser, delay, codec band limit) "
            f"cost the shift songs {listed(fx_shift)} dB, and the test songs {listed(fx_test)} dB; with the standard "
            f"effects, the held-out sources (OPL3/csound SoundFonts, flite) still cost {listed(src)} dB against the "
            "test split."]  # fmt: skip
    if singers:
        same_flite = same_songs(test, "test-flite")
        on_test = {k: same_flite[k] - flite_g[k] for k in keys}
        on_shift = {k: espeak_g[k] - stdfx_g[k] for k in keys}
        out[-1] += (" The held-out singer alone (flite's voices instead of the test split's espeak-ng ones, all else "
                    f"the same) costs the test songs {listed(on_test)} dB, and the shift songs with the standard "
                    f"effects {listed(on_shift)} dB.")
    return "\n".join(out)


def replace_section(card: str, section: str) -> str:
    """``card`` with its transfer section replaced by ``section`` (or inserted before "## Using other weights")."""
    marker = "## Using other weights"
    if TRANSFER in card:
        head, rest = card.split(TRANSFER, 1)
        i = rest.find("\n## ")
        return head + section + ("\n" + rest[i + 1 :] if i >= 0 else "")
    if marker in card:
        return card.replace(marker, section + "\n" + marker)
    return card + "\n" + section


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("--run")
    p.add_argument("--corpus")
    p.add_argument("--eval", help="JSON from lightsaft-infer evaluate --json")
    p.add_argument("--transfer", nargs=2, metavar=("TEST_JSON", "SHIFT_JSON"),
                   help="only (re)write the card's transfer section from evaluate reports of the two splits")
    p.add_argument("--postfilter-eval", nargs="*", default=[], metavar="NAME=SHIFT_JSON",
                   help="with --transfer: the shift split evaluated with post-filters")
    p.add_argument("--study", nargs="+", metavar="JSON",
                   help="with --transfer: the transfer study's splits (corpus --study), in this order: shift-stdfx, "
                        "test-shiftfx, and optionally shift-stdfx-espeak, test-flite")
    p.add_argument("--out", default="weights")
    p.add_argument("--hardware", default=f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--extra", default="", help="a paragraph added to the training section")
    p.add_argument("--weights-step", type=int, default=None,
                   help="the step the shipped weights are, when not the best by validation")
    p.add_argument("--history", default=None,
                   help="training log of the weights the run started from (--init), e.g. weights/training_log.jsonl")
    a = p.parse_args(argv)
    if a.transfer:
        test, shift = (json.load(open(path)) for path in a.transfer)
        filters = {n: json.load(open(f)) for n, f in (item.split("=", 1) for item in a.postfilter_eval)}
        if a.study and len(a.study) not in (2, 4):
            p.error("--study takes 2 or 4 reports: shift-stdfx test-shiftfx [shift-stdfx-espeak test-flite]")
        names = ("shift-stdfx", "test-shiftfx", "shift-stdfx-espeak", "test-flite")
        study = dict(zip(names, (json.load(open(x)) for x in a.study))) if a.study else None
        path = os.path.join(a.out, "MODEL_CARD.md")
        card = open(path).read() if os.path.exists(path) else ""
        with open(path, "w") as f:  # everything read first: a bad report leaves the card as it was
            f.write(replace_section(card, transfer_section(test, shift, filters, study)))
        return 0
    if not (a.run and a.corpus and a.eval):
        p.error("--run, --corpus and --eval are needed to write the whole card")
    text = render(a.run, a.corpus, a.eval, a.out, a.hardware, a.frames, a.batch, a.extra, a.history,
                  a.weights_step)
    with open(os.path.join(a.out, "MODEL_CARD.md"), "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
