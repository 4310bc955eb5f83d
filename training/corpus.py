"""Synthetic multitrack corpus in MUSDB18-HQ layout.

    python -m training.corpus ROOT [--train 100 --valid 14 --test 50] [--seconds 60,180] [--seed 0]

writes ``ROOT/{train,valid,test}/<song>/{mixture,vocals,drums,bass,other}.wav``
(stereo, 44.1 kHz, 16-bit PCM, the mixture exactly the integer sum of the
stems) and a ``song.json`` with the score's facts (tempo, key, sections, the
instruments and voice used). Everything is a function of (seed, split, index).

Instrument programs, drum kits and singer voices are split into a pool for
train/valid and a disjoint pool for test, so test numbers measure
generalisation to unseen timbres. The ``shift`` split (``--shift N``) goes
further, a transfer test: other SoundFonts (one of them FM synthesis), another
speech engine (flite) and an effects chain of its own, none of which any other
split uses (opl3-soundfont, csound-soundfont and flite from Debian). ``--study N``
adds the transfer study's splits (:data:`STUDY_SPLITS`): shift songs through the
standard effects and test songs through the shift effects, which divide the shift
split's loss between its sources and its effects, and two singer swaps (those shift
songs sung by the test split's voices, test songs by flite's), which divide the
sources' loss between the singer and the rest. Needs FluidSynth + GM SoundFonts (Debian:
fluidsynth, fluid-soundfont-gm, timgm6mb-soundfont,
musescore-general-soundfont-small), espeak-ng, and the Python packages of
the ``train`` extra (``pip install -e ".[train]"``); the runtime package needs none of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf

from .compose import Composer, Track
from .render import SAMPLE_RATE, master, new_song, pan_mono, render_tracks, stem_chain
from .voice import VoiceSettings, sing

STEMS = ("vocals", "drums", "bass", "other")
# Generation order: validation first.
SPLITS = ("valid", "train", "test", "shift", "shift-stdfx", "test-shiftfx", "shift-stdfx-espeak", "test-flite")
SPLIT_ID = {"train": 1, "valid": 2, "test": 3, "shift": 4}
#: The transfer study's cross-over splits (``--study N``): the shift split's songs through the standard effects
#: chain, and the test split's songs through the shift chain (and its codec band limit). Beside ``test`` and
#: ``shift`` they divide the model's loss on the shift split between its sources and its effects. Two more swap
#: the singer, with the standard effects: the shift songs sung by the test split's espeak-ng voices, and the test
#: songs by the shift split's flite voices, which divide the sources' loss between the singer and the rest.
#: Each is ``{name: (the split whose songs it re-renders, the effects chain, whose singer or None)}``; the
#: songs are those splits' songs (same seeds, scores, instruments, voice style) up to the effects and singer
#: (effects None: the split's own).
STUDY_SPLITS = {"shift-stdfx": ("shift", "standard", None), "test-shiftfx": ("test", "shift", None),
                "shift-stdfx-espeak": ("shift", "standard", "test"), "test-flite": ("test", None, "shift")}

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)
# The shift split (a transfer test) renders only from sources no other split uses: SoundFonts of other
# makers, one of them FM synthesis (Debian: opl3-soundfont, csound-soundfont), a different speech engine
# (flite) for the singer, and an effects chain of its own (render.stem_chain's "shift" chain, and
# render.master's codec-like band limit).
SHIFT_SOUNDFONTS = (
    "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",
    "/usr/share/sounds/sf2/sf_GMbank.sf2",
)

# GM programs per stem; "test" pools are disjoint from the train/valid pools.
POOLS = {
    "seen": {
        "drums": [0, 16, 24, 32],
        "bass": [32, 33, 34, 36, 38, 43],
        "other": [0, 1, 3, 4, 6, 8, 10, 16, 17, 19, 24, 25, 26, 28, 40, 41, 42, 48, 49, 56, 57, 60,
                  64, 65, 68, 71, 73, 80, 81, 88, 89, 94],
        "choir": [52, 53],
        "voices": ["en+m1", "en+m2", "en+m3", "en+m4", "en+f1", "en+f2", "en+f4", "en-us+m3", "en-us+f3",
                   "en+klatt", "en+Andy", "en+Annie"],
    },
    "unseen": {
        "drums": [8, 25, 40],
        "bass": [35, 37, 39],
        "other": [2, 5, 11, 18, 27, 30, 46, 50, 61, 66, 74, 83, 91],
        "choir": [54],
        "voices": ["en+m7", "en+f5", "en-us+m5", "en-us+f4", "en+Alicia", "en+Gene"],
    },
}
# Every GM program (the SoundFont is what is new), flite's voices.
POOLS["shift"] = {
    "drums": [0],  # the one kit both held-out SoundFonts have (OPL3's is FM-synthesised)
    "bass": sorted(set(POOLS["seen"]["bass"]) | set(POOLS["unseen"]["bass"])),
    "other": sorted(set(POOLS["seen"]["other"]) | set(POOLS["unseen"]["other"])),
    "choir": [52, 53, 54],
    "voices": ["slt", "rms", "awb", "kal16"],
    "engine": "flite",
}


# The wide recipe (train and valid, issue 12): domain randomisation over every stem's sources, drawn from
# pools that neither the test split (its unseen GM programs and espeak voices) nor the shift split
# (OPL3 / csound SoundFonts, flite, its effects chain) use.
WIDE = {
    # espeak-ng: the seen English voices, and other languages with the seen variants (never the test
    # split's variants m7, f5, m5, f4, Alicia, Gene).
    "espeak": POOLS["seen"]["voices"] + [f"{lang}+{v}" for lang in ("de", "fr", "es", "it", "pt", "nl", "sv", "pl", "en-us")
                                          for v in ("m1", "m2", "m3", "m4", "f1", "f2", "f4", "klatt")],
    # festival's diphone/HTS/cluster voices installed from Debian (none of flite's speakers: kal, slt, rms, awb).
    "festival": ["ked_diphone", "upc_ca_ona_hts", "czech_dita", "czech_machac", "czech_ph", "hy_fi_mv_diphone",
                 "suo_fi_lj_diphone", "lp_diphone", "pc_diphone", "msu_ru_nsh_clunits"],
    "festival_high": ["upc_ca_ona_hts", "czech_dita", "suo_fi_lj_diphone", "lp_diphone"],
    # Vocal-like and lead sounds in *other*, so that "bright and pitched" stops meaning vocals.
    "vocal_like": [52, 53, 85, 80, 81, 64, 65, 71, 73],
    "guitars": [24, 25, 26, 28, 29],
}


def song_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Splits draw from different SeedSequence branches: their seeds can never coincide."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_ID[split], index]))


def split_pool(split: str) -> dict:
    return POOLS[{"test": "unseen", "shift": "shift"}.get(split, "seen")]


def split_soundfonts(split: str) -> tuple:
    return SHIFT_SOUNDFONTS if split == "shift" else SOUNDFONTS


def pick_voice(rng: np.random.Generator, pool: dict) -> tuple[VoiceSettings, int]:
    """A singer: espeak voice, formant warp, vibrato, breathiness, and a pitch centre to match."""
    name = pool["voices"][int(rng.integers(len(pool["voices"])))]
    high = female(name) or rng.random() < 0.3
    formant = float(rng.uniform(1.02, 1.22) if high else rng.uniform(0.85, 1.02))
    centre = int(rng.integers(62, 70) if high else rng.integers(50, 58))
    voice = VoiceSettings(
        espeak_voice=name, formant=formant, vibrato_hz=float(rng.uniform(4.5, 6.8)),
        vibrato_semitones=float(rng.uniform(0.1, 0.6)), breath=float(rng.uniform(0.0, 0.35)),
        glide_s=float(rng.uniform(0.03, 0.12)), speed=int(rng.integers(130, 200)),
        engine=pool.get("engine", "espeak-ng"),
    )
    return voice, centre


def female(name: str) -> bool:
    """Whether a pool's voice (espeak-ng variant or flite speaker) is a female one."""
    return "+f" in name or name.endswith(("Annie", "Alicia")) or name == "slt"


def swap_singer(voice: VoiceSettings, pool: dict, index: int) -> VoiceSettings:
    """``voice`` (drawn from its split's pool) sung by a voice of ``pool`` instead, of the same sex, chosen
    by song ``index``; its style (formant warp, vibrato...) is kept."""
    names = [n for n in pool["voices"] if female(n) == female(voice.espeak_voice)]
    return dataclasses.replace(voice, espeak_voice=names[index % len(names)], engine=pool.get("engine", "espeak-ng"))


def make_song(seed: int, split: str, index: int, seconds: tuple, recipe: str = "wide",
              fx: str | None = None, singer: str | None = None) -> tuple[dict, dict]:
    """Compose, render and mix one song; returns (stems as int16 (samples, 2), metadata). Train and valid
    songs follow ``recipe`` ("wide": domain-randomised; "gm": the first model's recipe); test and shift
    songs always the GM one with their own pools, so their figures stay comparable across models.
    ``fx``: the effects chain ("standard" or "shift"), by default the split's own; ``singer``: another split
    whose voices sing instead (:func:`swap_singer`), see :data:`STUDY_SPLITS`."""
    if recipe == "wide" and split in ("train", "valid"):
        from .wide import make_wide_song

        return make_wide_song(seed, split, index, seconds)
    new_song()
    rng = song_rng(seed, split, index)
    pool = split_pool(split)
    voice, centre = pick_voice(rng, pool)  # drawn from the split's own pool even when swapped: same rng stream
    if singer is not None:
        voice = swap_singer(voice, split_pool(singer), index)
    programs = {"drums": pool["drums"], "bass": pool["bass"], "other": pool["other"], "voice_centre": centre}
    score = Composer(rng, programs, float(rng.uniform(*seconds))).compose()
    soundfonts = split_soundfonts(split)
    soundfont = soundfonts[int(rng.integers(len(soundfonts)))]
    # The shift chain keeps each stem at its level as drawn (its drive and heavy compression would change
    # it), and so does a study split's (fx given): shift-stdfx's stems keep the shift songs' balance, and
    # test-shiftfx's the test songs' as drawn, before the standard chain's modest level changes.
    keep_level = split == "shift" or fx is not None
    fx = fx or ("shift" if split == "shift" else "standard")
    room = float(rng.uniform(0.2, 0.8))
    dry = {}
    for stem in ("drums", "bass", "other"):
        dry[stem] = render_tracks([t for t in score.tracks if t.stem == stem], score.duration, soundfont)
    # Vocals: lead voice, a double (and sometimes a third above) in choruses, sometimes a GM choir layer.
    lead = sing(score.melody, voice, score.duration, rng)
    vocals = pan_mono(lead, float(rng.uniform(-0.1, 0.1)))
    chorus = [(s[1], s[2]) for s in score.sections if s[0] == "chorus"]
    in_chorus = [n for n in score.melody if any(a <= n.start < b for a, b in chorus)]
    if in_chorus and rng.random() < 0.7:
        interval = float(rng.choice([0.0, 0.0, 3.0, 4.0, -12.0 if centre > 60 else 12.0]))
        double = sing(in_chorus, voice, score.duration, rng, transpose=interval)
        shift = int(rng.integers(200, 1200))
        double = np.concatenate([np.zeros(shift, np.float32), double[:-shift]])
        vocals += pan_mono(double * 0.5, float(rng.choice([-0.6, 0.6])))
    vocals *= 0.5 / (np.abs(vocals).max() + 1e-9)
    choir = None
    if rng.random() < 0.35:
        choir = int(rng.choice(pool["choir"]))
        notes = [n for n in score.melody]
        layer = render_tracks([Track("vocals", choir, notes=notes)], score.duration, soundfont)
        vocals += layer * float(rng.uniform(0.2, 0.5))
    dry["vocals"] = vocals
    wet = {}
    for stem in STEMS:
        x = dry[stem].astype(np.float32)
        peak = np.abs(x).max()
        if peak > 0:
            x = x / peak * float(10 ** (rng.uniform(-6, 0) / 20))
        wet[stem] = stem_chain(stem, rng, room, fx)(x, SAMPLE_RATE).astype(np.float32)
        if keep_level:
            wet[stem] *= float(np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(wet[stem] ** 2)) + 1e-12))
    mixed = master(wet, rng, codec=fx == "shift")
    stems = {k: np.round(np.clip(v, -1, 1) * 32767).astype(np.int16) for k, v in mixed.items()}
    meta = {
        "seed": seed, "split": split, "index": index, "tempo": round(score.tempo, 2),
        "beats_per_bar": score.beats_per_bar, "key": score.key, "mode": score.mode,
        "duration": round(score.duration, 3), "soundfont": os.path.basename(soundfont),
        "sections": [{"kind": k, "start": round(a, 3), "end": round(b, 3), "stems": sorted(s)}
                     for k, a, b, s in score.sections],
        "programs": {s: sorted({t.program for t in score.tracks if t.stem == s}) for s in ("drums", "bass", "other")},
        "choir": choir, "voice": voice.__dict__, "voice_centre": centre, "fx": fx, "recipe": "gm",
    }
    return stems, meta


def song_name(split: str, index: int) -> str:
    return f"synth-{split}-{index:03d}"


def write_song(root: str, seed: int, split: str, index: int, seconds: tuple, recipe: str = "wide") -> str:
    """Render one song into ``root/split/name/``; the mixture is the int32 sum of the int16 stems."""
    folder = os.path.join(root, split, song_name(split, index))
    if os.path.exists(os.path.join(folder, "song.json")):
        return folder  # resumable: finished songs are kept
    if split in STUDY_SPLITS:
        source, fx, singer = STUDY_SPLITS[split]
        stems, meta = make_song(seed, source, index, seconds, recipe, fx, singer)
        meta["study"] = split
    else:
        stems, meta = make_song(seed, split, index, seconds, recipe)
    mixture = sum(s.astype(np.int32) for s in stems.values())
    if np.abs(mixture).max() > 32767:
        raise RuntimeError(f"{folder}: mixture clips after quantisation")
    # Written into a hidden folder and renamed: a reader (training runs while the corpus grows)
    # never sees a half-written song.
    tmp = os.path.join(root, split, "." + song_name(split, index) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(tmp)
    for name, x in [("mixture", mixture.astype(np.int16)), *stems.items()]:
        sf.write(os.path.join(tmp, f"{name}.wav"), x, SAMPLE_RATE, subtype="PCM_16")
    with open(os.path.join(tmp, "song.json"), "w") as f:
        json.dump(meta, f, indent=1)
    os.rename(tmp, folder)
    return folder


def generate(root: str, counts: dict, seconds: tuple, seed: int = 0, workers: int = 1, progress=True,
             recipe: str = "wide") -> list:
    """Write every song of ``counts`` ({split: n}) under ``root``; returns the song folders."""
    jobs = [(root, seed, split, i, seconds, recipe) for split in SPLITS for i in range(counts.get(split, 0))]
    results, failed = [], []

    def settle(job, get):  # one song that fails (a crashing speech engine) must not stop the others
        try:
            results.append(get())
        except Exception as e:  # noqa: BLE001 - reported and re-raised as a summary below
            failed.append(song_name(job[2], job[3]))
            print(f"{os.path.join(root, job[2], failed[-1])}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    if workers <= 1:
        for job in _progress(jobs, progress):
            settle(job, lambda job=job: write_song(*job))
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = [(job, pool.submit(write_song, *job)) for job in jobs]
            for job, f in _progress(futures, progress):
                settle(job, f.result)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} songs failed: {', '.join(failed)}")
    return results


def _progress(items, enabled):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="songs", unit="song")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--valid", type=int, default=14)
    p.add_argument("--test", type=int, default=50)
    p.add_argument("--shift", type=int, default=0, help="songs of the transfer split (held-out sources)")
    p.add_argument("--study", type=int, default=0,
                   help="songs of each transfer-study split: shift-stdfx (shift songs, standard effects), "
                        "test-shiftfx (test songs, the shift effects), shift-stdfx-espeak (shift-stdfx sung by the "
                        "test split's voices) and test-flite (test songs sung by the shift split's); use the "
                        "shift/test --seconds")
    p.add_argument("--seconds", default="60,180", help="song length range in seconds, 'lo,hi'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--recipe", choices=("wide", "gm"), default="wide",
                   help="train/valid sources: wide (domain-randomised, default) or gm (the first model's)")
    args = p.parse_args(argv)
    lo, hi = (float(v) for v in args.seconds.split(","))
    generate(args.root, {"train": args.train, "valid": args.valid, "test": args.test, "shift": args.shift,
                         **{split: args.study for split in STUDY_SPLITS}},
             (lo, hi), args.seed, args.workers, recipe=args.recipe)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
