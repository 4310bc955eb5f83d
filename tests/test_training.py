"""The synthetic corpus generator and the training loop (on a CI-sized mini corpus)."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
import soundfile as sf

from .conftest import need_debian_tools

# The test extra installs the Python packages; FluidSynth, the SoundFonts and espeak-ng come from Debian
# (.ci/run installs them): without them the corpus tests skip, except in CI, where they fail.
from training import corpus
from training.corpus import POOLS, SPLITS, STEMS, make_song, song_rng
from training.wide import RECIPE_VERSION

SECONDS = (8.0, 10.0)


@pytest.fixture(scope="session")
def mini_corpus(tmp_path_factory):
    need_debian_tools()
    root = tmp_path_factory.mktemp("corpus")
    corpus.generate(str(root), {"train": 2, "valid": 1, "test": 1}, SECONDS, seed=7, workers=1, progress=False)
    return root


def test_layout_and_mixture_is_the_sum_of_the_stems(mini_corpus):
    songs = sorted(p for p in mini_corpus.glob("*/*") if p.is_dir())
    assert [p.parent.name for p in songs].count("train") == 2 and len(songs) == 4
    for song in songs:
        mix, rate = sf.read(song / "mixture.wav", dtype="int16")
        assert rate == 44100 and mix.ndim == 2 and mix.shape[1] == 2 and len(mix) > 5 * 44100
        total = sum(sf.read(song / f"{s}.wav", dtype="int16")[0].astype(np.int32) for s in STEMS)
        np.testing.assert_array_equal(total, mix.astype(np.int32))
        for s in STEMS:  # every stem sounds somewhere
            assert np.abs(sf.read(song / f"{s}.wav", dtype="float32")[0]).max() > 0.01, (song, s)


def test_sections_where_a_stem_is_silent(mini_corpus):
    found = 0
    for song in sorted(p for p in mini_corpus.glob("*/*") if p.is_dir()):
        meta = json.loads((song / "song.json").read_text())
        for section in meta["sections"]:
            for s in set(STEMS) - set(section["stems"]):
                # Skip the start of the section: releases and reverb tails of the previous one (longer in
                # the wide recipe: room mics and delay throws ring up to ~3 s).
                skip = 3.0 if meta.get("recipe") == "wide" else 0.8
                a, b = int((section["start"] + skip) * 44100), int(section["end"] * 44100)
                if b - a < 44100:
                    continue
                x, _ = sf.read(song / f"{s}.wav", dtype="float32", start=a, stop=b)
                assert np.sqrt(np.mean(x ** 2)) < 2e-3, (song.name, section, s)
                found += 1
    assert found > 0


@pytest.fixture(scope="session")
def shift_song(tmp_path_factory):
    need_debian_tools()
    root = tmp_path_factory.mktemp("shift")
    corpus.generate(str(root), {"shift": 1}, (20.0, 22.0), seed=7, workers=1, progress=False)
    return next(root.glob("shift/*"))


def test_the_shift_split_uses_no_source_any_other_split_uses(mini_corpus, shift_song):
    """Provably disjoint, from the recorded song.json files: SoundFonts, speech engine, effects chain."""
    shift = json.loads((shift_song / "song.json").read_text())
    others = [json.loads(p.read_text()) for p in mini_corpus.glob("*/*/song.json")]
    assert {m["split"] for m in others} == {"train", "valid", "test"}
    assert shift["soundfont"] not in {m["soundfont"] for m in others}
    assert shift["soundfont"] in {os.path.basename(p) for p in corpus.SHIFT_SOUNDFONTS}
    assert not {os.path.basename(p) for p in corpus.SHIFT_SOUNDFONTS} & {os.path.basename(p) for p in corpus.SOUNDFONTS}
    assert shift["voice"]["engine"] == "flite" and {m["voice"]["engine"] for m in others} <= {"espeak-ng", "festival",
                                                                                             "formant"}
    assert shift["voice"]["espeak_voice"] in POOLS["shift"]["voices"]
    assert not {m["voice"]["espeak_voice"] for m in others} & set(POOLS["shift"]["voices"])
    assert shift["fx"] == "shift" and {m["fx"] for m in others} == {"standard"}
    # the wide recipe's own sources (Hydrogen kits, numpy synths, the amp simulator) are named per stem
    wide = [m for m in others if m["recipe"] == "wide"]
    assert wide and all(set(m["sources"]) == set(STEMS) for m in wide)
    for m in wide:
        for stem, labels in m["sources"].items():
            for label in labels:
                assert not any(k in label.lower() for k in ("opl", "gmbank", "flite", "shift")), (stem, label)
    mix, rate = sf.read(shift_song / "mixture.wav", dtype="int16")
    total = sum(sf.read(shift_song / f"{s}.wav", dtype="int16")[0].astype(np.int32) for s in STEMS)
    np.testing.assert_array_equal(total, mix.astype(np.int32))  # still the exact sum of its stems
    assert sum(np.abs(sf.read(shift_song / f"{s}.wav", dtype="float32")[0]).max() > 0.01 for s in STEMS) >= 3


def test_the_transfer_study_re_renders_shift_and_test_songs_through_the_other_effects_chain(mini_corpus, shift_song,
                                                                                              tmp_path):
    """shift-stdfx = the shift song through the standard chain; test-shiftfx = the test song through the shift one."""
    corpus.generate(str(tmp_path), {"shift-stdfx": 1}, (20.0, 22.0), seed=7, workers=1, progress=False)
    corpus.generate(str(tmp_path), {"test-shiftfx": 1}, SECONDS, seed=7, workers=1, progress=False)
    for study, original in ((tmp_path / "shift-stdfx" / "synth-shift-stdfx-000", shift_song),
                            (tmp_path / "test-shiftfx" / "synth-test-shiftfx-000", mini_corpus / "test" / "synth-test-000")):
        meta, before = (json.loads((d / "song.json").read_text()) for d in (study, original))
        assert meta.pop("study") == study.parent.name
        assert meta.pop("fx") != before.pop("fx") and meta["split"] == before["split"]
        assert meta == before  # same seed, score, SoundFont, programs and voice: only the effects differ
        mix = sf.read(study / "mixture.wav", dtype="int16")[0].astype(np.int32)
        np.testing.assert_array_equal(mix, sum(sf.read(study / f"{s}.wav", dtype="int16")[0].astype(np.int32)
                                               for s in STEMS))
        assert mix.shape == sf.read(original / "mixture.wav", dtype="int16")[0].shape
        assert not np.array_equal(mix, sf.read(original / "mixture.wav", dtype="int16")[0])


def test_the_singer_swap_splits_change_the_singer_and_nothing_else_of_the_song(mini_corpus):
    """test-flite = the test song sung by a flite voice of the same sex, with the test split's own effects;
    everything drawn for the song (score, SoundFont, programs, the voice's style) stays the same."""
    root = mini_corpus.parent / (mini_corpus.name + "-singers")
    corpus.generate(str(root), {"test-flite": 1}, SECONDS, seed=7, workers=1, progress=False)
    swapped, original = root / "test-flite" / "synth-test-flite-000", mini_corpus / "test" / "synth-test-000"
    meta, before = (json.loads((d / "song.json").read_text()) for d in (swapped, original))
    assert meta.pop("study") == "test-flite"
    voice, was = meta.pop("voice"), before.pop("voice")
    assert voice.pop("engine") == "flite" and was.pop("engine") == "espeak-ng"
    name, was_name = voice.pop("espeak_voice"), was.pop("espeak_voice")
    assert name in POOLS["shift"]["voices"] and was_name in POOLS["unseen"]["voices"]
    assert (name == "slt") == ("+f" in was_name or was_name.endswith("Alicia"))  # the same sex
    assert voice == was and meta == before  # same style, effects chain, score, SoundFont, programs
    vocals, before_vocals = (sf.read(d / "vocals.wav", dtype="float32")[0] for d in (swapped, original))
    assert vocals.shape == before_vocals.shape and np.abs(vocals).max() > 0.01
    assert not np.allclose(vocals, before_vocals, atol=1e-2)  # another voice sings
    drums, before_drums = (sf.read(d / "drums.wav", dtype="float32")[0] for d in (swapped, original))
    assert np.corrcoef(drums[:, 0], before_drums[:, 0])[0, 1] > 0.98  # the same drums (the limiter hears the voice)
    mix = sf.read(swapped / "mixture.wav", dtype="int16")[0].astype(np.int32)
    np.testing.assert_array_equal(mix, sum(sf.read(swapped / f"{s}.wav", dtype="int16")[0].astype(np.int32)
                                           for s in STEMS))
    # and a swap to the test split's voices keeps the sex too
    for was_name, voice in (("slt", "en+f5"), ("rms", "en+m7"), ("awb", "en-us+m5")):
        v = corpus.VoiceSettings(espeak_voice=was_name, formant=1.0, vibrato_hz=5, vibrato_semitones=0.2,
                                 breath=0.1, glide_s=0.05, speed=150, engine="flite")
        assert corpus.swap_singer(v, POOLS["unseen"], {"slt": 0, "rms": 0, "awb": 1}[was_name]) == \
            corpus.dataclasses.replace(v, espeak_voice=voice, engine="espeak-ng")


def test_generation_is_deterministic():
    need_debian_tools()
    a, meta_a = make_song(7, "valid", 0, SECONDS)
    make_song(7, "train", 1, SECONDS)  # state left in the synthesiser must not leak into the next song
    b, meta_b = make_song(7, "valid", 0, SECONDS)
    assert meta_a == meta_b
    for s in STEMS:
        np.testing.assert_array_equal(a[s], b[s])


def test_one_failing_song_does_not_stop_the_corpus_and_is_named(monkeypatch, tmp_path, capsys):
    done = []

    def write_song(root, seed, split, index, seconds, recipe):
        if index == 1:
            raise subprocess.CalledProcessError(-11, ["text2wave"])
        done.append(index)
        return f"{root}/{split}/{index}"

    monkeypatch.setattr(corpus, "write_song", write_song)
    with pytest.raises(RuntimeError, match=r"1 of 4 songs failed: synth-train-001$"):
        corpus.generate(str(tmp_path), {"train": 3, "valid": 1}, SECONDS, progress=False)
    assert done == [0, 0, 2]  # (valid first) the song after it was still written
    assert re.search(r"train/synth-train-001: CalledProcessError: .*text2wave.*SIGSEGV", capsys.readouterr().err)


def test_a_speech_engine_that_crashes_on_a_syllable_falls_back_deterministically():
    """festival's Italian diphone voice segfaults on "la" at a duration stretch of 1.306 (speed 134), which once
    killed a corpus run at its 167th training song; the fallback is the same syllable at the normal stretch."""
    need_debian_tools()
    from training.voice import _speak

    x = _speak("festival", "lp_diphone", 134, "la")
    assert x.ndim == 1 and x.size > 1000 and np.abs(x).max() > 0.01
    np.testing.assert_array_equal(x, _speak("festival", "lp_diphone", 175, "la"))


def test_splits_are_disjoint_in_seeds_and_test_timbres_are_unseen(mini_corpus):
    # every split draws its own seeds; the study splits re-render their source split's songs (same seeds)
    assert set(SPLITS) == set(corpus.SPLIT_ID) | set(corpus.STUDY_SPLITS)
    assert {source for source, *_ in corpus.STUDY_SPLITS.values()} <= set(corpus.SPLIT_ID)
    draws = {(split, i): tuple(song_rng(7, split, i).integers(0, 2**62, 4)) for split in corpus.SPLIT_ID for i in range(50)}
    assert len(set(draws.values())) == len(draws)
    seen, unseen = POOLS["seen"], POOLS["unseen"]
    for key in ("drums", "bass", "other", "choir", "voices"):
        assert not set(seen[key]) & set(unseen[key]), key
    meta = json.loads(next(mini_corpus.glob("test/*/song.json")).read_text())
    for stem in ("drums", "bass", "other"):
        assert set(meta["programs"][stem]) <= set(unseen[stem])
    assert meta["voice"]["espeak_voice"] in unseen["voices"]
    for path in mini_corpus.glob("t*/*/song.json"):  # train (wide recipe) never uses the test split's pools
        meta = json.loads(path.read_text())
        if meta["split"] != "train":
            continue
        assert meta["recipe"] == "wide" and meta["voice"]["espeak_voice"] not in unseen["voices"]
        assert not meta["voice"]["espeak_voice"].endswith(("+m7", "+f5", "+m5", "+f4", "+Alicia", "+Gene"))
        assert set(meta["programs"]["bass"]) <= set(seen["bass"])
        assert not set(meta["programs"]["other"]) & set(unseen["other"] + unseen["choir"])
        assert meta["soundfont"] in {os.path.basename(p) for p in corpus.SOUNDFONTS}


def test_timbre_augmentation_repitches_equalises_and_follows_the_seed(mini_corpus):
    from training.augment import random_eq, repitch, repitch_span
    from training.train import MultitrackSet

    rate, length = 44100, 16384
    for semitones in (-2, -1, 1, 2):  # a 1 kHz tone comes out 2**(s/12) kHz, within one FFT bin
        t = np.arange(repitch_span(length, semitones)) / rate
        tone = np.repeat(np.sin(2 * np.pi * 1000 * t)[:, None], 2, axis=1).astype(np.float32)
        y = repitch(tone, semitones, length)
        assert y.shape == (length, 2) and y.dtype == np.float32
        peak = np.argmax(np.abs(np.fft.rfft(y[:, 0]))) * rate / length
        assert abs(peak - 1000 * 2 ** (semitones / 12)) < rate / length, (semitones, peak)
    noise = np.random.default_rng(1).standard_normal((length, 2)).astype(np.float32) * 0.1
    a, b = random_eq(noise, np.random.default_rng(2)), random_eq(noise, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == noise.shape and not np.allclose(a, noise, atol=1e-3)

    data = MultitrackSet(str(mini_corpus), "train")
    n = 1024 * 31
    runs = [[data.example(np.random.default_rng(seed), n, 0.5, timbre=True)[0] for seed in range(6)]
            for _ in range(2)]
    for x, y in zip(*runs):
        assert x.shape == (4, n, 2) and x.dtype == np.float32
        np.testing.assert_array_equal(x, y)  # seeded: a resumed run sees the same examples
    assert any(not np.array_equal(x, data.example(np.random.default_rng(s), n, 0.5)[0])
               for s, x in enumerate(runs[0]))


def test_saturation_adds_harmonics_keeps_the_level_and_follows_the_seed(mini_corpus, monkeypatch):
    from training.augment import StemEffects, saturate

    rate = 44100
    tone = np.repeat(0.3 * np.sin(2 * np.pi * 100 * np.arange(rate) / rate)[:, None], 2, axis=1).astype(np.float32)
    for seed in range(12):
        y = saturate(tone, np.random.default_rng(seed))
        assert y.shape == tone.shape and y.dtype == np.float32
        np.testing.assert_allclose(np.sqrt(np.mean(y**2)), np.sqrt(np.mean(tone**2)), rtol=1e-4)  # level kept
        spectrum = np.abs(np.fft.rfft(y[:, 0]))  # 1 Hz bins: the 100 Hz tone gains harmonics at 200-500 Hz
        assert spectrum[[200, 300, 400, 500]].max() > 0.01 * spectrum[100], seed
        assert abs(y.mean()) < 1e-3  # no DC from the biased shaper
        np.testing.assert_array_equal(y, saturate(tone, np.random.default_rng(seed)))
    np.testing.assert_array_equal(saturate(np.zeros((64, 2), np.float32), np.random.default_rng(0)), 0)

    data, calls = check_per_stem_option(mini_corpus, monkeypatch, "saturate", saturate, "saturate")
    half = StemEffects(saturate=0.5)
    runs = [[data.example(np.random.default_rng(seed), N_EXAMPLE, 0.5, stem_fx=half)[0] for seed in range(4)]
            for _ in range(2)]
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)
    assert 4 < len(calls) < 4 + 32 and runs[0][0].shape == (4, N_EXAMPLE, 2)


N_EXAMPLE = 1024 * 31


def check_per_stem_option(mini_corpus, monkeypatch, name, function, option):
    """A per-stem effect (``augment.StemEffects.<option>``) in ``MultitrackSet.example``: at probability 0 it
    draws nothing (runs from before it existed see the same examples), at 1 it calls ``training.augment.<name>``
    on every stem. Returns the set and the calls' shapes so far."""
    import training.augment
    from training.augment import StemEffects
    from training.train import MultitrackSet

    data = MultitrackSet(str(mini_corpus), "train")
    plain = [data.example(np.random.default_rng(seed), N_EXAMPLE, 0.5)[0] for seed in range(4)]
    off = [data.example(np.random.default_rng(seed), N_EXAMPLE, 0.5, stem_fx=StemEffects(**{option: 0.0}))[0]
           for seed in range(4)]
    for a, b in zip(plain, off):
        np.testing.assert_array_equal(a, b)
    calls = []
    monkeypatch.setattr(training.augment, name, lambda x, rng: calls.append(x.shape) or function(x, rng))
    data.example(np.random.default_rng(0), N_EXAMPLE, 0.5, stem_fx=StemEffects(**{option: 1.0}))
    assert calls == [(N_EXAMPLE, 2)] * 4
    return data, calls


def test_effects_chain_changes_the_sound_keeps_the_level_and_follows_the_seed(mini_corpus, monkeypatch):
    from training import augment

    rate = 44100
    t = np.arange(rate) / rate
    tone = np.stack([0.3 * np.sin(2 * np.pi * 110 * t), 0.2 * np.sin(2 * np.pi * 165 * t)], axis=1).astype(np.float32)
    seen = set()
    for seed in range(40):
        chosen = []
        for name in ("_phaser", "_modulated_delay", "_echo", "saturate"):  # which effects each seed drew
            real = getattr(augment, name)
            monkeypatch.setattr(augment, name, lambda *a, real=real, name=name: chosen.append(name) or real(*a))
        y = augment.effects(tone, np.random.default_rng(seed))
        monkeypatch.undo()
        assert chosen and y.shape == tone.shape and y.dtype == np.float32 and np.isfinite(y).all()
        np.testing.assert_allclose(np.sqrt(np.mean(y**2)), np.sqrt(np.mean(tone**2)), rtol=1e-4)  # level kept
        assert np.abs(y - tone).max() > 0.05 * np.abs(tone).max(), (seed, chosen)  # it did something audible
        np.testing.assert_array_equal(y, augment.effects(tone, np.random.default_rng(seed)))
        seen.update(chosen)
    assert seen == {"_phaser", "_modulated_delay", "_echo", "saturate"}
    np.testing.assert_array_equal(augment.effects(np.zeros((64, 2), np.float32), np.random.default_rng(0)), 0)

    # an echo is the signal again, later: an impulse comes back at one delay, then fainter
    click = np.zeros((rate, 2), np.float32)
    click[100] = 1.0
    echoed = augment._echo(click, np.random.default_rng(3))
    peaks = np.flatnonzero(np.abs(echoed).max(axis=1) > 1e-6)
    assert peaks[0] == 100 and len(peaks) >= 2 and len(set(np.diff(peaks))) == 1
    # a phaser is all-pass plus dry: the long-term spectrum of noise keeps its level within a few dB
    noise = np.random.default_rng(1).standard_normal((rate, 2)).astype(np.float32) * 0.1
    phased = augment._phaser(noise, np.random.default_rng(2))
    assert 0.5 < np.std(phased) / np.std(noise) < 1.5

    check_per_stem_option(mini_corpus, monkeypatch, "effects", augment.effects, "fx")


def test_reverb_adds_a_decaying_tail_keeps_the_level_and_follows_the_seed(mini_corpus, monkeypatch):
    from training import augment

    rate = 44100
    click = np.zeros((rate, 2), np.float32)
    click[1000] = 0.5
    tails = []
    for seed in range(6):
        y = augment.reverb(click, np.random.default_rng(seed))
        assert y.shape == click.shape and y.dtype == np.float32 and np.isfinite(y).all()
        np.testing.assert_allclose(np.sqrt(np.mean(y**2)), np.sqrt(np.mean(click**2)), rtol=1e-4)  # level kept
        np.testing.assert_array_equal(y, augment.reverb(click, np.random.default_rng(seed)))
        assert np.abs(y[:1000]).max() < 1e-6 * np.abs(y).max()  # causal: nothing before the click (FFT round-off)
        tail = y[1000 + int(0.041 * rate):].astype(np.float64)  # after the longest pre-delay
        energy = [np.mean(tail[i : i + 2205] ** 2) for i in range(0, 6615, 2205)]  # three 50 ms blocks
        assert energy[0] > energy[2] > 0, (seed, energy)  # a tail, and it decays
        assert np.abs(np.corrcoef(tail[:4410, 0], tail[:4410, 1])[0, 1]) < 0.5  # the two channels' tails differ
        tails.append(tail)
    assert not np.allclose(tails[0], tails[1])
    np.testing.assert_array_equal(augment.reverb(np.zeros((64, 2), np.float32), np.random.default_rng(0)), 0)
    check_per_stem_option(mini_corpus, monkeypatch, "reverb", augment.reverb, "reverb")


def test_operator_fm_patches_sound_the_note_and_follow_the_seed():
    from training.synth import BASSES, KEYS, WAVES, Patch

    assert "opfm" in BASSES and "opfm" in KEYS
    rate, waves = 44100, set()
    for seed in range(24):
        patch = Patch("opfm", np.random.default_rng(seed))
        waves.update((patch.p["carrier"], patch.p["modulator"]))
        y = patch.note(45, rate // 2, 100)  # A2, 110 Hz, held half a second
        assert np.isfinite(y).all() and 0.01 < np.abs(y).max() < 4
        np.testing.assert_array_equal(y, Patch("opfm", np.random.default_rng(seed)).note(45, rate // 2, 100))
        # every partial sits on the note's harmonic series (the 0.5 ratio adds the sub-octave's): 55 Hz grid
        spectrum = np.abs(np.fft.rfft(y[: rate // 2] * np.hanning(rate // 2)))
        peak_hz = np.argmax(spectrum) * 2
        assert min(peak_hz % 55, 55 - peak_hz % 55) <= 2, (seed, peak_hz, patch.p)
    assert waves == set(WAVES)


def test_the_formant_singer_sings_the_note_through_its_vowel_without_a_speech_engine(monkeypatch):
    """Glottal pulses at the note's pitch, formants that follow the vowel and the singer's scale, no engine."""
    import pyworld

    from training import wide
    from training.compose import Note
    from training.voice import VoiceSettings, sing

    def no_engine(*a, **k):
        raise AssertionError("the formant singer must not call a speech engine or WORLD")

    monkeypatch.setattr(subprocess, "run", no_engine)
    monkeypatch.setattr(pyworld, "synthesize", no_engine)
    rate = 44100
    held = [Note(0.2, 1.0, 57.0, 110)]  # A3, 220 Hz, for one second

    def voice(name, scale=1.0):
        return VoiceSettings(name, scale, 5.0, 0.0, 0.1, 0.05, 160, engine="formant")

    y = sing(held, voice("singer3"), 1.5, np.random.default_rng(0), sample_rate=rate)
    assert y.shape == (int(1.5 * rate),) and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y[: int(0.15 * rate)]).max() == 0 and np.abs(y[int(1.3 * rate):]).max() == 0  # silent off the note
    np.testing.assert_array_equal(y, sing(held, voice("singer3"), 1.5, np.random.default_rng(0), sample_rate=rate))
    core = y[int(0.5 * rate): int(1.0 * rate)].astype(np.float64)  # vowel, after any consonant onset
    lags = np.arange(50, 400)
    lag = lags[np.argmax([core[:-k] @ core[k:] for k in lags])]  # one glottal period
    assert abs(rate / lag - 220.0) < 4.0

    # the vowel's formants, scaled: a longer tract (0.85) lowers the spectral centroid, a shorter (1.25) raises it
    def centroid(scale):
        z = sing(held, voice("singer3", scale), 1.5, np.random.default_rng(0), sample_rate=rate)
        z = z[int(0.5 * rate): int(rate)]
        spectrum = np.abs(np.fft.rfft(z * np.hanning(len(z))))
        hz = np.fft.rfftfreq(len(z), 1 / rate)
        band = hz < 5000
        return float((spectrum[band] * hz[band]).sum() / spectrum[band].sum())

    assert centroid(0.85) < centroid(1.0) < centroid(1.25)
    # singers differ: the name is the identity (open quotient, tilt, spread...)
    other = sing(held, voice("singer4"), 1.5, np.random.default_rng(0), sample_rate=rate)
    assert not np.allclose(other, y, atol=1e-3)
    # the wide recipe draws it (version 3) with about FORMANT_P of its singers, under names that say so
    engines = [wide.pick_voice(np.random.default_rng(seed))[0] for seed in range(200)]
    share = np.mean([v.engine == "formant" for v in engines])
    assert wide.RECIPE_VERSION == 3 and abs(share - wide.FORMANT_P) < 0.1
    assert all(v.espeak_voice.startswith("singer") for v in engines if v.engine == "formant")


def test_a_few_training_steps_reduce_the_loss(mini_corpus):
    import torch

    from training.train import MDX_CONFIG, ConditionedUNet, MultitrackSet, batch

    torch.manual_seed(0)
    data = MultitrackSet(str(mini_corpus), "train")
    rng = np.random.default_rng(0)
    mix, target, cond = batch(data, rng, 2, MDX_CONFIG.hop_length * 31, coherent=1.0, device="cpu")
    net = ConditionedUNet(MDX_CONFIG).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = torch.mean((net(mix, cond) - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_validation_sdr_weighs_every_example_the_same_whatever_its_loudness():
    """The SDR that chooses the best checkpoint is each example's target-to-error ratio (floored at the mixture's
    power 30 dB down), averaged over examples: a 10x louder batch leaves it unchanged where the loss grows 100x, and
    a silent target is bounded by 0 dB instead of a ratio of two tiny numbers."""
    import torch

    from training.train import SDR_FLOOR_DB, evaluate

    class Half(torch.nn.Module):  # estimates every target as half the mixture
        def forward(self, mix, cond):
            return 0.5 * mix

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 8, 5, generator=g), torch.randn(2, 4, 8, 5, generator=g)
    mix, cond = a + b, torch.zeros(2, dtype=torch.long)
    batches = [(mix, a, cond)]
    loss, sdr = evaluate(Half(), batches, "cpu")
    err = 0.5 * mix - a
    expected = [10 * np.log10((a[i].pow(2).sum().item() + f) / (err[i].pow(2).sum().item() + f))
                for i in range(2) for f in [mix[i].pow(2).sum().item() * 10 ** (-SDR_FLOOR_DB / 10)]]
    assert sdr == pytest.approx(float(np.mean(expected)), abs=1e-4) and loss == pytest.approx(err.pow(2).mean().item())
    loud_loss, loud_sdr = evaluate(Half(), [(10 * mix, 10 * a, cond)], "cpu")
    assert loud_sdr == pytest.approx(sdr, abs=1e-4) and loud_loss == pytest.approx(100 * loss, rel=1e-4)
    # one example 100x louder than the other: it rules the loss, not the SDR (the mean of the two examples' SDRs)
    scale = torch.tensor([100.0, 1.0]).view(2, 1, 1, 1)
    _, mixed_sdr = evaluate(Half(), [(scale * mix, scale * a, cond)], "cpu")
    assert mixed_sdr == pytest.approx(sdr, abs=1e-4)
    # a perfect estimate scores its target's power over the floor (24 dB for half the mixture), not +inf; a silent
    # target estimated as half the mixture scores below 0 dB but not below the floor
    silent = torch.zeros_like(a)
    assert evaluate(Half(), [(mix, 0.5 * mix, cond)], "cpu")[1] == pytest.approx(10 * np.log10(0.25 * 10 ** 3 + 1), abs=1e-3)
    _, silent_sdr = evaluate(Half(), [(mix, silent, cond)], "cpu")
    assert -SDR_FLOOR_DB - 1 < silent_sdr < 0


@pytest.mark.slow  # 104 s of training on a 2-core AVX2 CPU (2026-12-03): the default run stays under 10 min
def test_train_command_writes_resumable_checkpoint_and_engine_weights(mini_corpus, tmp_path):
    from lightsaft_infer.separator import Separator
    from training.train import train

    run = tmp_path / "run"
    first = train(str(mini_corpus), str(run), frames=16, batch_size=2, steps=2, valid_every=2, valid_batches=1,
                  progress=False)  # fmt: skip
    assert first["step"] == 2
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and np.isfinite(log[-1]["valid_loss"])
    wide = f"wide v{RECIPE_VERSION}"  # the mini corpus is the wide recipe's current version
    assert log[-1]["train_recipes"] == {wide: 2}  # the model card's phases name what was trained on
    second = train(str(mini_corpus), str(run), frames=16, batch_size=2, steps=4, valid_every=2, valid_batches=1,
                   progress=False)  # fmt: skip
    assert second["step"] == 4  # resumed from step 2, not restarted
    assert (run / "best.onnx").is_file()
    sep = Separator.from_file(run / "best.safetensors", backend="onnx")
    x = np.random.default_rng(0).standard_normal((44100, 2)).astype(np.float32) * 0.1
    stems = sep.separate(x, 44100)
    assert set(stems) == set(STEMS) and all(np.isfinite(v).all() for v in stems.values())
    assert os.path.getsize(run / "best.safetensors") > 1e6

    # --ema: the weights validated and exported are the moving average, not the last step's
    import torch

    from lightsaft_infer.weights import load_weights

    averaged = tmp_path / "ema"
    train(str(mini_corpus), str(averaged), frames=16, batch_size=2, steps=2, valid_every=2, valid_batches=1,
          progress=False, onnx=False, ema=0.5)  # fmt: skip
    state = torch.load(averaged / "last.pt", weights_only=True)
    _, exported = load_weights(str(averaged / "best.safetensors"))
    for key, value in exported.items():
        np.testing.assert_array_equal(value, state["ema"]["module." + key].float().numpy(), err_msg=key)
    assert not all(np.array_equal(v, state["model"][k].float().numpy()) for k, v in exported.items())

    # a fine-tune's card counts its steps on from the log of the weights it started from
    from training.model_card import phases, read_log

    history = tmp_path / "history.jsonl"
    history.write_text(json.dumps({"step": 100, "seconds": 50.0, "train_loss": 1, "valid_loss": 2, "train_songs": 3}) + "\n")
    combined = read_log(str(run), str(history))
    assert [r["step"] for r in combined] == [100, 102, 104]
    assert phases(combined).splitlines() == ["  - steps 0–100: lr 0.001, targets uniform (the authors'), 3 train songs",
                                             f"  - steps 100–104: lr 0.001, targets uniform (the authors'), 2 {wide} train songs"]
    # a corpus growing under a running phase stays one phase; augmentation and EMA are named
    grow = [{"step": s, "train_songs": n, "train_recipes": {"gm": 16, "wide": n - 16}, "lr": 1e-4, "timbre": s > 100,
             "ema": 0.999 if s > 100 else None} for s, n in ((100, 116), (200, 130), (300, 150))]
    assert phases(grow).splitlines()[1] == ("  - steps 100–300: lr 0.0001, targets uniform (the authors'), 16 gm + 114 wide"
                                            " growing to 16 gm + 134 wide train songs, timbre augmentation (re-pitch,"
                                            " random EQ), weights' EMA 0.999")
    grow.append({**grow[-1], "step": 400, "saturate": 0.3})  # turning saturation on starts a phase
    assert phases(grow).splitlines()[2] == ("  - steps 300–400: lr 0.0001, targets uniform (the authors'), 16 gm + 134 wide"
                                            " train songs, timbre augmentation (re-pitch, random EQ), saturation of each"
                                            " stem with probability 0.3, weights' EMA 0.999")
    grow.append({**grow[-1], "step": 500, "saturate": None, "fx": 0.4})  # so does the effects chain
    assert phases(grow).splitlines()[3].endswith("random EQ), an effects chain (drive, modulation, echoes) on each"
                                                 " stem with probability 0.4, weights' EMA 0.999")
    grow.append({**grow[-1], "step": 600, "reverb": 0.2})  # and the reverb
    assert phases(grow).splitlines()[4].endswith("with probability 0.4, a synthetic reverb on each stem with"
                                                 " probability 0.2, weights' EMA 0.999")


@pytest.mark.slow  # ~40 s: three short runs
def test_resuming_training_reproduces_the_uninterrupted_run(mini_corpus, tmp_path):
    """Stopped at step 2 and resumed to 4 equals 4 steps in one go: weights, optimiser, data stream, and the
    weights' moving average."""
    import torch

    from training.train import train

    kw = dict(frames=16, batch_size=2, valid_every=2, valid_batches=1, progress=False, onnx=False, ema=0.9)
    train(str(mini_corpus), str(tmp_path / "straight"), steps=4, **kw)
    train(str(mini_corpus), str(tmp_path / "resumed"), steps=2, **kw)
    train(str(mini_corpus), str(tmp_path / "resumed"), steps=4, **kw)
    a, b = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4 and a["rng"] == b["rng"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["ema"].keys() == b["ema"].keys() and int(a["ema"]["n_averaged"]) == 4
    for key, value in a["ema"].items():
        assert torch.equal(value, b["ema"][key]), key
    for slot, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][slot][name])), (slot, name)
    # and a different data stream would have given different weights (the test can fail)
    train(str(mini_corpus), str(tmp_path / "other"), steps=4, seed=1, **kw)
    c = torch.load(tmp_path / "other" / "last.pt", weights_only=True)
    assert not all(torch.equal(v, c["model"][k]) for k, v in a["model"].items())


@pytest.mark.slow  # 65 s of training on a 2-core AVX2 CPU (2026-12-03): the default run stays under 10 min
def test_validation_through_effects_is_its_own_set_and_a_change_of_sets_restarts_the_best(mini_corpus, tmp_path):
    import torch

    from lightsaft_infer.weights import load_weights
    from training.model_card import best_record, read_log
    from training.train import FX_VALID, train

    kw = dict(frames=16, batch_size=2, valid_every=2, valid_batches=2, progress=False, onnx=False)
    run = tmp_path / "run"
    train(str(mini_corpus), str(run), steps=2, **kw)
    state = torch.load(run / "last.pt", weights_only=True)
    torch.save({**state, "best": 1e9}, run / "last.pt")  # a best no SDR on the same sets could beat
    train(str(mini_corpus), str(run), steps=4, valid_fx_p=1.0, **kw)  # resumed with a second set
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert sorted(log[0]["valid_losses"] or {}) == []  # one set: no breakdown
    plain, fx = log[1]["valid_losses"][str(mini_corpus)], log[1]["valid_losses"][str(mini_corpus) + FX_VALID]
    assert np.isfinite([plain, fx]).all() and plain != fx
    # the best so far was measured on other sets: step 4's weights are the new best, whatever their loss
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["valid_keys"] == sorted([str(mini_corpus), str(mini_corpus) + FX_VALID])
    _, best = load_weights(str(run / "best.safetensors"))
    for key, value in best.items():
        np.testing.assert_array_equal(value, state["model"][key].float().numpy(), err_msg=key)
    # and the model card's best record is one measured on the last record's sets
    records = read_log(str(run))
    records[0]["valid_sdr"] = 1e9  # higher than any, but on the old sets
    assert best_record(records)["step"] == 4


def test_the_card_says_what_recipe_versions_2_and_3_the_effects_chain_and_the_effects_validation_added():
    from training.model_card import later_versions_paragraph, wide_paragraph
    from training.train import FX_VALID

    old = [{"step": 100, "train_songs": 116, "train_recipes": {"gm": 16, "wide": 100}, "valid_losses": {"a": 1, "b": 2}}]
    assert later_versions_paragraph(old) == "" and "wide recipe" in wide_paragraph(old)
    new = old + [{"step": 200, "train_songs": 416, "train_recipes": {"gm": 16, "wide v2": 400}, "fx": 0.3,
                  "valid_losses": {"a": 1, "b": 2}}]
    text = later_versions_paragraph(new)
    assert "operator FM" in text and "probability 0.3" in text and "three validation sets" not in text
    text = later_versions_paragraph(new + [{**new[-1], "valid_losses": {"a": 1, "b": 2, "a" + FX_VALID: 3}}])
    assert "three validation sets" in text and text in wide_paragraph(new + [{**new[-1], "valid_losses": {"a" + FX_VALID: 3}}])
    assert "formant" not in text
    from training.model_card import validation_line

    log = [{"step": s, "valid_loss": v, "run": True} for s, v in ((100, 1.3), (200, 1.2), (300, 1.25))]
    assert validation_line(log) == "Best validation loss 1.2000 at step 200 (these weights)."
    assert validation_line(log, 200) == validation_line(log)
    assert validation_line(log, 300).startswith("Best validation loss 1.2000 at step 200; these weights are step 300 "
                                                "(validation loss 1.2500), not the best")
    # once the log has validation SDRs, the best is the highest SDR (what training keeps), not the lowest loss
    log += [{"step": 400, "valid_loss": 1.1, "valid_sdr": 4.5, "run": True},
            {"step": 500, "valid_loss": 1.3, "valid_sdr": 4.75, "run": True}]
    assert validation_line(log) == "Best validation SDR 4.75 dB at step 500 (these weights)."
    assert validation_line(log, 400).endswith("step 400 (validation SDR 4.50 dB), not the best by validation: see the "
                                              "phases below for why.")
    later = new + [{**new[-1], "train_recipes": {"gm": 16, "wide v2": 400, "wide v3": 100}}]
    assert "version 3" in later_versions_paragraph(later) and "formant.py" in later_versions_paragraph(later)
    assert "probability 0.3, then 0.4:" in later_versions_paragraph(later + [{**later[-1], "fx": 0.4}])  # every phase's, in order


@pytest.mark.slow  # ~4 min: NNCF calibration (twice), three short runs and an IR conversion
def test_qat_student_is_the_exported_graph_moves_towards_its_teacher_resumes_and_runs_as_int8(mini_corpus, small_weights,
                                                                                            tmp_path):  # fmt: skip
    """Quantisation-aware fine-tuning trains the exported graph under NNCF's own quantisers (Add inputs included,
    first/last convolution in float), the distillation loss against the fp32 teacher falls, the run resumes where
    it stopped, refuses another teacher, and its IR runs on the ``openvino-int8`` backend recording the teacher."""
    import shutil

    import torch

    from lightsaft_infer.backends import OnnxBackend, open_backend
    from lightsaft_infer.weights import load_weights, weights_digest
    from training.qat import distillation_loss, param_groups, qat, quantized_student, to_ir, train_mode
    from training.quantize import calibration_windows
    from training.sensitivity import distortion_db
    from training.train import MultitrackSet, batch

    config, tensors = load_weights(small_weights)
    mixtures = sorted(str(p) for p in (mini_corpus / "train").glob("*/mixture.wav"))
    student = quantized_student(config, tensors, calibration_windows(mixtures[:1], config, 1))
    names = [n for n, m in student.named_modules() if "Quantizer" in type(m).__name__]
    assert len(names) > 100, len(names)
    assert any("add" in n.lower() for n in names)  # the residual and per-part sums are quantised, as in the IR
    # nothing quantised at the input or weights of the first and last convolution (the first one's output, the
    # input of block 0, is)
    assert not any(re.search(r"(first|last)_conv/\d+/conv2d", n) for n in names), names[:3]
    mix = batch(MultitrackSet(str(mini_corpus), "train"), np.random.default_rng(0), 1, config.hop_length * 15, 1.0, "cpu")[0]
    from lightsaft_infer.network import ConditionedUNet, SeparationGraph

    with torch.no_grad():
        reference = SeparationGraph(ConditionedUNet.from_tensors(config, tensors))(mix)
    stats = {k: v.clone() for k, v in student.state_dict().items() if "running_" in k}
    assert stats  # the LaSAFT/LaSIFT BatchNorms are not folded
    train_mode(student)
    opt = torch.optim.Adam(param_groups(student, 1e-5, 1e-3))
    losses = []
    for _ in range(5):
        with torch.no_grad():  # measured as the IR runs: BatchNorm with the exact model's statistics
            losses.append(distillation_loss(student.eval()(mix), reference, mix).item())
        train_mode(student)
        loss = distillation_loss(student(mix), reference, mix)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0], losses
    for k, v in stats.items():  # a 16-frame excerpt's statistics did not replace the exact model's
        assert torch.equal(student.state_dict()[k], v), k

    run = tmp_path / "qat"
    kw = dict(frames=16, calibration_songs=1, per_song=1, log_every=1, progress=False)
    first = qat(str(mini_corpus), str(run), str(small_weights), steps=1, **kw)
    second = qat(str(mini_corpus), str(run), str(small_weights), steps=2, **kw)
    assert (first["step"], second["step"]) == (1, 2)  # resumed, not restarted
    # the held-out check ran at the last step; best.pt holds the better of the calibrated start and the steps
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert "valid_db" in log[-1] and second["best"]["valid_db"] >= log[-1]["valid_db"]
    assert second["teacher_digest"] == weights_digest(tensors)
    other = tmp_path / "other.safetensors"
    from lightsaft_infer.weights import save_weights

    save_weights(other, config, {k: v * 1.01 for k, v in tensors.items()})
    with pytest.raises(SystemExit, match="other weights"):
        qat(str(mini_corpus), str(run), str(other), steps=3, **kw)

    # the student's IR beside a copy of the teacher: the int8 backend takes it, and it separates like the teacher
    out = tmp_path / "model"
    out.mkdir()
    for suffix in (".safetensors", ".onnx"):
        shutil.copy(str(small_weights).replace(".safetensors", suffix), out / f"w{suffix}")
    to_ir(second["student"], config, out / "w.int8.xml", second["teacher_digest"], {"qat_steps": "2"})
    window = calibration_windows(mixtures[1:2], config, 1, seed=3)[0]
    exact = OnnxBackend(out / "w.onnx")(window)
    fast = open_backend(out / "w.onnx", "openvino-int8")(window)
    assert fast.shape == exact.shape
    assert distortion_db(fast, exact) > 8, distortion_db(fast, exact)
    # training.sensitivity names this IR's quantisers by the layer they feed, as it does NNCF's IR
    import openvino as ov

    from training.sensitivity import fake_quantize_groups

    groups = fake_quantize_groups(ov.Core().read_model(str(out / "w.int8.xml")))
    assert {"tfcs.0", "tfcs.8", "residual", "gpocm", "mix", "lasift.0", "downsamplings.0", "upsamplings.0"} <= set(groups)
    assert "other" not in groups and "first_conv" not in groups
    # the command line converts the best held-out student of the finished run, and says which step it was
    from training.qat import main

    assert main([str(mini_corpus), str(run), "--weights", str(small_weights), "--steps", "2",
                 "--int8", str(out / "best.int8.xml")]) == 0  # fmt: skip
    steps = ov.Core().read_model(str(out / "best.int8.xml")).get_rt_info(["lightsaft", "qat_steps"]).astype(str)
    assert steps == str(second["best"]["step"])


def test_the_card_divides_the_shift_loss_between_held_out_effects_and_sources():
    from training.model_card import STEMS as CARD_STEMS
    from training.model_card import replace_section, transfer_section

    def report(split, songs):
        """An evaluate report: ``songs`` = [(model per stem, mix/4 per stem)], the summary their means."""
        per_song = [{"song": f"synth-{split}-{i:03d}",
                     **{system: {k: {"mdx": v} for k, v in zip(CARD_STEMS, values)} for system, values in
                        (("model", m), ("mix/4", x), ("IRM", [10.0] * 4))}} for i, (m, x) in enumerate(songs)]
        summary = {system: {k: {"mdx": float(np.mean([r[system][k]["mdx"] for r in per_song]))} for k in CARD_STEMS}
                   for system in ("model", "mix/4", "IRM")}
        for system in summary:
            summary[system]["mean"] = {"mdx": float(np.mean([summary[system][k]["mdx"] for k in CARD_STEMS]))}
        return {"songs": len(songs), "per_song": per_song, "summary": summary}

    zero = [0.0] * 4
    test = report("test", [([4, 4, 4, 6], zero), ([6, 5, 4, 6], zero)])  # gains 5 4.5 4 6, mean 4.875
    shift = report("shift", [([1, 4, 1, 1], zero), ([3, 5, 1, 2], zero)])  # 2 4.5 1 1.5, mean 2.25
    stdfx = report("shift-stdfx", [([2, 5, 3, 3], zero)])  # the first shift song: 1 4 1 1 with its own effects
    shiftfx = report("test-shiftfx", [([3, 3, 3, 4], [-1, -1, 0, 0])])  # the first test song: 4 4 4 6
    section = transfer_section(test, shift, study={"shift-stdfx": stdfx, "test-shiftfx": shiftfx})
    assert "| test: unseen programs/voices, standard effects | 2 | +5.00 | +4.50 | +4.00 | +6.00 | +4.88 |" in section
    assert "| test-shiftfx: those test songs, shift effects | 1 | +4.00 | +4.00 | +3.00 | +4.00 | +3.75 |" in section
    assert "| shift-stdfx: those shift songs, standard effects | 1 | +2.00 | +5.00 | +3.00 | +3.00 | +3.25 |" in section
    assert ("cost the shift songs vocals 1.00, drums 1.00, bass 2.00, other 2.00, mean 1.50 dB, and the test songs "
            "vocals 0.00, drums 0.00, bass 1.00, other 2.00, mean 0.75 dB; with the standard effects, the held-out "
            "sources (OPL3/csound SoundFonts, flite) still cost vocals 3.00, drums -0.50, bass 1.00, other 3.00, "
            "mean 1.62 dB against the test split.") in section
    assert "held-out singer alone" not in section and "test-flite" not in section
    # the singer-swap splits: shift-stdfx sung by the test split's voices, the first test song by flite's
    espeak = report("shift-stdfx-espeak", [([4, 5, 3, 3], zero)])  # vocals +2 against shift-stdfx's song
    flite = report("test-flite", [([1, 4, 3, 6], zero)])  # vocals -3, bass -1 against the first test song
    singers = transfer_section(test, shift, study={"shift-stdfx": stdfx, "test-shiftfx": shiftfx,
                                                   "shift-stdfx-espeak": espeak, "test-flite": flite})
    assert ("| test-flite: those test songs, the shift split's singers (flite) | 1 | +1.00 | +4.00 | +3.00 | +6.00 "
            "| +3.50 |") in singers
    assert ("The held-out singer alone (flite's voices instead of the test split's espeak-ng ones, all else the same) "
            "costs the test songs vocals 3.00, drums 0.00, bass 1.00, other 0.00, mean 1.00 dB, and the shift songs "
            "with the standard effects vocals 2.00, drums 0.00, bass 0.00, other 0.00, mean 0.50 dB.") in singers
    card = replace_section("# card\n\n## Using other weights\n- x\n", section)
    assert card.index("## Transfer") < card.index("## Using other weights")
    assert replace_section(card, transfer_section(test, shift)).count("## Transfer") == 1
    assert "transfer study" not in replace_section(card, transfer_section(test, shift))
