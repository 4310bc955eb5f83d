"""The wide recipe: train/valid songs with domain-randomised sources (issue 12).

The first model learned its three SoundFonts and its one singer: other voices
went to *other*, a bright plucked bass to *vocals*, distorted guitar to *bass*
and *drums*. Here every stem draws from many sources, and what makes a source
recognisable is randomised, so that a stem is defined by its role in the song,
not by a timbre:

- vocals: espeak-ng in ten languages and festival's diphone/HTS/cluster
  voices (different speakers and synthesis methods) re-pitched by WORLD, and a
  source-filter singer with no speech engine (glottal pulses, formants); random
  formant shift, breathiness, vibrato depth/rate, portamento,
  sibilance; doubled and harmony lines; spoken/rapped phrases; delay throws;
- drums: recorded Hydrogen kits (multi-layered samples, their own rooms) beside
  the GM kits; ghost notes, cymbal washes, room mics and bus compression;
- bass: GM basses or synthesised ones (FM, subtractive saw/square, sub, operator FM);
- other: GM programs, synthesised keys/pads/leads (operator FM among them), guitars through an amp
  simulator (clean or distorted), and vocal-like sounds (choir pads, voice
  leads) that belong to *other*;
- mix: per-stem EQ/compression/reverb, random stereo width, and a band limit
  like a lossy codec's; the master limiter as in the GM recipe.

None of it comes from the shift split's sources (OPL3/csound SoundFonts, flite,
its pedalboard drive/chorus/phaser/delay chain); ``tests/test_training.py``
checks that from the recorded ``song.json`` files. A song is a function of
(seed, split, index).
"""

from __future__ import annotations

import os

import numpy as np
import pedalboard as pb
from scipy.signal import fftconvolve, firwin, oaconvolve

from . import drumkit
from .augment import echoes
from .compose import CRASH, HAT_C, HAT_O, RIDE, SNARE, Composer, Note
from .corpus import POOLS, SOUNDFONTS, WIDE, song_rng
from .render import SAMPLE_RATE, master, new_song, pan_mono, render_tracks, stem_chain
from .synth import BASSES, KEYS, Patch, amp
from .voice import VoiceSettings, sing


#: Bumped whenever the recipe's sources change (songs of one (seed, split, index) differ between versions):
#: 2 added operator FM (``synth.opfm``) to the basses and keys and drew synthesised parts for *other* more often;
#: 3 added the formant singer (``training/formant.py``) as a third voice engine, drawn with ``FORMANT_P``.
RECIPE_VERSION = 3
FORMANT_P = 0.3


def pick_voice(rng: np.random.Generator) -> tuple[VoiceSettings, int]:
    """A singer from one of three engines, with every style parameter drawn wider than the GM recipe's."""
    if rng.random() < FORMANT_P:  # a source-filter singer (training/formant.py): no speech engine, no WORLD
        engine, name = "formant", f"singer{int(rng.integers(1_000_000))}"
        high = bool(rng.random() < 0.5)
    else:
        engine, names = ("festival", WIDE["festival"]) if rng.random() < 0.55 else ("espeak-ng", WIDE["espeak"])
        name = names[int(rng.integers(len(names)))]
        high = (name in WIDE["festival_high"] or "+f" in name or name.endswith("Annie")) ^ (rng.random() < 0.2)
    voice = VoiceSettings(
        espeak_voice=name, engine=engine,
        formant=float(rng.uniform(1.0, 1.3) if high else rng.uniform(0.8, 1.05)),
        vibrato_hz=float(rng.uniform(3.5, 7.5)), vibrato_semitones=float(rng.uniform(0.0, 0.8)),
        breath=float(rng.uniform(0.0, 0.5)), glide_s=float(rng.uniform(0.02, 0.2)),
        speed=int(rng.integers(110, 220)),
        spoken=float(rng.uniform(0.2, 1.0)) if rng.random() < 0.3 else 0.0,
        sibilance=float(rng.uniform(0.0, 1.0)) if rng.random() < 0.5 else 0.0,
    )  # fmt: skip
    centre = int(rng.integers(60, 72) if high else rng.integers(47, 60))
    return voice, centre


def groove_details(track, rng: np.random.Generator, beat_s: float) -> None:
    """Ghost notes before backbeats, and sometimes ride/open-hat washes instead of the closed hat."""
    extra = []
    ghosts = float(rng.uniform(0.0, 0.5))
    wash = int(rng.choice([HAT_C, RIDE, HAT_O])) if rng.random() < 0.4 else None
    for note in track.notes:
        if note.pitch == SNARE and note.velocity > 80 and rng.random() < ghosts:
            extra.append(Note(max(0.0, note.start - beat_s / 4), beat_s / 4, SNARE, int(rng.integers(18, 45))))
        if wash is not None and note.pitch == HAT_C:
            note.pitch = wash
    if rng.random() < 0.5:  # crash on more downbeats
        extra += [Note(n.start, beat_s, CRASH, 90) for n in track.notes if n.pitch == SNARE and rng.random() < 0.05]
    track.notes = sorted(track.notes + extra, key=lambda n: n.start)


def room(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Room microphones: the kit convolved with a decaying stereo noise response, mixed under it."""
    decay = float(rng.uniform(0.08, 0.5))
    n = int(decay * 3 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.normal(0, 1, (n, 2)) * np.exp(-t / decay)[:, None]
    ir[: int(0.01 * SAMPLE_RATE)] = 0  # the room starts after the close mics' direct sound
    ir /= np.sqrt((ir**2).sum(0, keepdims=True))
    wet = np.stack([fftconvolve(x[:, c], ir[:, c])[: len(x)] for c in range(2)], axis=1)
    return (x + float(rng.uniform(0.1, 0.5)) * wet).astype(np.float32)


def throws(x: np.ndarray, rng: np.random.Generator, beat_s: float) -> np.ndarray:
    """Delay throws: a few echoes at a beat fraction, ping-ponged, on ``(samples, 2)``."""
    d = int(beat_s * float(rng.choice([0.5, 0.75, 1.0])) * SAMPLE_RATE)
    feedback = float(rng.uniform(0.2, 0.5))
    mix = float(rng.uniform(0.1, 0.35))
    return echoes(x, d, feedback, mix, 4, ping=True)


def width(x: np.ndarray, amount: float) -> np.ndarray:
    """Stereo width by mid/side: 0 mono, 1 unchanged, >1 wider."""
    mid, side = (x[:, 0] + x[:, 1]) / 2, (x[:, 0] - x[:, 1]) / 2 * amount
    return np.stack([mid + side, mid - side], axis=1).astype(np.float32)


def band_limit(stems: dict, cutoff: float) -> dict:
    """The same linear-phase low-pass on every stem (they still add up to the mixture), as a lossy
    codec's band limit."""
    taps = firwin(255, cutoff, fs=SAMPLE_RATE)
    return {k: oaconvolve(v, taps[:, None], mode="same", axes=0).astype(np.float32) for k, v in stems.items()}


def make_wide_song(seed: int, split: str, index: int, seconds: tuple) -> tuple[dict, dict]:
    """Compose, render and mix one wide-recipe song; returns (stems as int16 (samples, 2), metadata)."""
    new_song()
    rng = song_rng(seed, split, index)
    seen = POOLS["seen"]
    voice, centre = pick_voice(rng)
    programs = {"drums": seen["drums"], "bass": seen["bass"], "other": seen["other"] + 2 * WIDE["vocal_like"],
                "voice_centre": centre}
    score = Composer(rng, programs, float(rng.uniform(*seconds))).compose()
    beat_s = 60.0 / score.tempo
    soundfont = SOUNDFONTS[int(rng.integers(len(SOUNDFONTS)))]
    dur = score.duration
    sources = {}
    dry = {}

    (kit,) = [t for t in score.tracks if t.stem == "drums"]
    groove_details(kit, rng, beat_s)
    if rng.random() < 0.55:
        names = drumkit.kits()
        name = names[int(rng.integers(len(names)))]
        dry["drums"] = drumkit.render(kit, dur, name, rng)
        sources["drums"] = [f"hydrogen:{name}"]
    else:
        dry["drums"] = render_tracks([kit], dur, soundfont)
        sources["drums"] = [f"gm:{kit.program}"]
    if rng.random() < 0.5:
        dry["drums"] = room(dry["drums"], rng)
        sources["drums"].append("room")
    if rng.random() < 0.5:
        dry["drums"] = pb.Compressor(threshold_db=float(rng.uniform(-28, -12)), ratio=float(rng.uniform(3, 8)),
                                     attack_ms=float(rng.uniform(1, 10)), release_ms=float(rng.uniform(50, 200)))(dry["drums"], SAMPLE_RATE)  # fmt: skip
        sources["drums"].append("bus-compression")

    (bass,) = [t for t in score.tracks if t.stem == "bass"]
    if rng.random() < 0.45:
        kind = BASSES[int(rng.integers(len(BASSES)))]
        dry["bass"] = Patch(kind, rng).render(bass, dur)
        sources["bass"] = [f"synth:{kind}"]
    else:
        dry["bass"] = render_tracks([bass], dur, soundfont)
        sources["bass"] = [f"gm:{bass.program}"]

    dry["other"] = np.zeros((int(round(dur * SAMPLE_RATE)), 2), np.float32)
    sources["other"] = []
    for track in [t for t in score.tracks if t.stem == "other"]:
        if rng.random() < 0.4:
            kind = KEYS[int(rng.integers(len(KEYS)))]
            y, label = Patch(kind, rng).render(track, dur), f"synth:{kind}"
        else:
            y, label = render_tracks([track], dur, soundfont), f"gm:{track.program}"
            if track.program in WIDE["guitars"] and rng.random() < 0.7:
                distorted = bool(rng.random() < 0.6)
                y, label = amp(y, rng, distorted), label + ("+amp-distorted" if distorted else "+amp-clean")
        peak = float(np.abs(y).max())
        if peak > 0:  # parts at random levels within the stem
            dry["other"] += y / peak * float(10 ** (rng.uniform(-8, 0) / 20))
        sources["other"].append(label)

    lead = sing(score.melody, voice, dur, rng)
    vocals = pan_mono(lead, float(rng.uniform(-0.1, 0.1)))
    chorus = [(s[1], s[2]) for s in score.sections if s[0] == "chorus"]
    in_chorus = [n for n in score.melody if any(a <= n.start < b for a, b in chorus)]
    layers = []
    for notes, p in ((in_chorus, 0.7), (score.melody, 0.25)):  # doubles/harmonies in choruses, sometimes throughout
        if notes and rng.random() < p:
            interval = float(rng.choice([0.0, 0.0, 3.0, 4.0, 7.0, -5.0, -12.0 if centre > 60 else 12.0]))
            double = sing(notes, voice, dur, rng, transpose=interval)
            lag = int(rng.integers(200, 1500))
            double = np.concatenate([np.zeros(lag, np.float32), double[:-lag]])
            vocals += pan_mono(double * float(rng.uniform(0.3, 0.7)), float(rng.uniform(-0.8, 0.8)))
            layers.append(interval)
    if rng.random() < 0.4:
        vocals = throws(vocals, rng, beat_s)
        layers.append("delay-throws")
    dry["vocals"] = vocals * (0.5 / (np.abs(vocals).max() + 1e-9))
    sources["vocals"] = [f"{voice.engine}:{voice.espeak_voice}", *map(str, layers)]

    space = float(rng.uniform(0.2, 0.9))
    wet = {}
    for stem in ("vocals", "drums", "bass", "other"):
        x = dry[stem].astype(np.float32)
        peak = np.abs(x).max()
        if peak > 0:
            x = x / peak * float(10 ** (rng.uniform(-8, 0) / 20))
        x = stem_chain(stem, rng, space, "standard")(x, SAMPLE_RATE).astype(np.float32)
        wet[stem] = width(x, float(rng.uniform(0.0, 0.8) if stem == "bass" else rng.uniform(0.5, 1.6)))
    cutoff = float(rng.uniform(13000, 19500)) if rng.random() < 0.4 else None
    if cutoff:
        wet = band_limit(wet, cutoff)
    mixed = master(wet, rng)
    stems = {k: np.round(np.clip(v, -1, 1) * 32767).astype(np.int16) for k, v in mixed.items()}
    meta = {
        "seed": seed, "split": split, "index": index, "recipe": "wide", "recipe_version": RECIPE_VERSION,
        "tempo": round(score.tempo, 2),
        "beats_per_bar": score.beats_per_bar, "key": score.key, "mode": score.mode, "duration": round(dur, 3),
        "soundfont": os.path.basename(soundfont),
        "sections": [{"kind": k, "start": round(a, 3), "end": round(b, 3), "stems": sorted(s)}
                     for k, a, b, s in score.sections],
        "programs": {s: sorted({t.program for t in score.tracks if t.stem == s}) for s in ("drums", "bass", "other")},
        "sources": sources, "choir": None, "voice": voice.__dict__, "voice_centre": centre, "fx": "standard",
        "band_limit_hz": None if cutoff is None else round(cutoff),
    }  # fmt: skip
    return stems, meta
