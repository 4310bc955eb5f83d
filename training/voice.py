"""A singing-like voice from speech: espeak-ng (or flite) syllables re-pitched onto a melody with WORLD.

Each syllable is spoken once per voice by espeak-ng (22.05 kHz; flite's 16 kHz resampled), analysed with
the WORLD vocoder (pyworld: DIO + StoneMask f0, CheapTrick envelope, D4C
aperiodicity), then for every melody note its voiced part is stretched to the
note's length, its f0 replaced by the note pitch with a glide from the previous
note, vibrato and jitter, its envelope warped (formant shift: gender-like
timbre) and its aperiodicity raised (breathiness). Whole phrases are
synthesised in one WORLD call so notes join without clicks.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyworld
from scipy.signal import resample_poly

ESPEAK_RATE = 22050
FRAME_MS = 5.0

SYLLABLES = (
    "la", "na", "oh", "yeah", "love", "day", "night", "go", "my", "sky", "you", "way", "time",
    "heart", "home", "light", "fire", "run", "stay", "now", "be", "free", "ah", "no", "me",
    "dream", "rain", "sun", "high", "low", "say", "ray", "sea", "shine", "fly", "true", "mine",
    "hold", "on", "far", "away", "lie", "why", "so", "feel", "real", "burn", "turn", "wind", "gone",
)


@dataclass(frozen=True)
class VoiceSettings:
    """One singer: a speech engine's voice (``espeak_voice`` names it, whatever the engine), formant warp
    (<1 darker/male-like, >1 brighter/female-like), style. ``engine``: ``espeak-ng`` (train, valid,
    test), ``festival`` (the wide recipe's train and valid songs), ``formant`` (``training/formant.py``:
    glottal pulses through a formant tract, no speech engine; the wide recipe's version 3) or ``flite``
    (the shift split's held-out engine). ``spoken``: the fraction of phrases rapped/spoken (the syllable's
    own pitch contour moved to the note, not a sung pitch); ``sibilance``: boost of the unvoiced frames'
    high band (0 = none)."""

    espeak_voice: str
    formant: float
    vibrato_hz: float
    vibrato_semitones: float
    breath: float
    glide_s: float
    speed: int
    engine: str = "espeak-ng"
    spoken: float = 0.0
    sibilance: float = 0.0


# Words per minute at which flite and festival speak at their own pace (a duration stretch of 1).
NORMAL_SPEED = 175


def _speak(engine: str, voice: str, speed: int, text: str) -> np.ndarray:
    """One spoken syllable as float64 mono at ``ESPEAK_RATE``."""
    if engine == "espeak-ng":
        wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                             check=True, capture_output=True).stdout  # fmt: skip
        # espeak-ng writes a 44-byte RIFF header then 16-bit mono PCM.
        return np.frombuffer(wav[44:], dtype="<i2").astype(np.float64) / 32768.0
    if engine in ("flite", "festival"):
        import tempfile

        import soundfile as sf

        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/say.wav"
            if engine == "flite":
                command = ["flite", "-voice", voice, "-t", text, "-o", out,
                           "--setf", f"duration_stretch={NORMAL_SPEED / speed:.3f}"]
            else:
                with open(f"{tmp}/say.txt", "w") as f:
                    f.write(text + "\n")
                command = ["text2wave", "-eval", f"(voice_{voice})", "-eval",
                           f"(Parameter.set 'Duration_Stretch {NORMAL_SPEED / speed:.3f})", f"{tmp}/say.txt", "-o", out]
            try:
                subprocess.run(command, check=True, capture_output=True)
            except subprocess.CalledProcessError:
                if engine != "festival" or (text == "la" and speed == NORMAL_SPEED):
                    raise
                if text != "la":
                    return _speak(engine, voice, speed, "la")  # a few voices abort on some words ("so" in czech_machac)
                # and some on some stretches (lp_diphone segfaults at 1.306)
                return _speak(engine, voice, NORMAL_SPEED, "la")
            x, rate = sf.read(out, dtype="float64", always_2d=True)
        x = x[:, 0]
        return resample_poly(x, ESPEAK_RATE, rate) if rate != ESPEAK_RATE else x
    raise ValueError(f"unknown speech engine {engine!r}")


@lru_cache(maxsize=512)  # ~0.8 MB of WORLD features each; the wide recipe has ~100 voices
def _syllable_features(voice: str, speed: int, text: str, engine: str = "espeak-ng"):
    """WORLD features (f0, sp, ap) of one spoken syllable, trimmed to its voiced core ± consonants."""
    x = _speak(engine, voice, speed, text)
    if x.size < ESPEAK_RATE // 20:
        x = np.concatenate([x, np.zeros(ESPEAK_RATE // 10)])
    f0, t = pyworld.dio(x, ESPEAK_RATE, frame_period=FRAME_MS)
    f0 = pyworld.stonemask(x, f0, t, ESPEAK_RATE)
    sp = pyworld.cheaptrick(x, f0, t, ESPEAK_RATE)
    ap = pyworld.d4c(x, f0, t, ESPEAK_RATE)
    energy = sp.sum(axis=1)
    keep = np.flatnonzero(energy > energy.max() * 1e-3)
    lo, hi = (keep[0], keep[-1] + 1) if keep.size else (0, len(f0))
    return f0[lo:hi], sp[lo:hi], ap[lo:hi]


def _stretch_syllable(f0, sp, ap, n_frames: int):
    """Keep the unvoiced onset at natural speed, stretch the voiced rest to fill ``n_frames``."""
    voiced = np.flatnonzero(f0 > 0)
    onset = int(voiced[0]) if voiced.size else 0
    onset = min(onset, n_frames // 3)
    rest = max(1, n_frames - onset)
    src = np.arange(onset, len(f0)) if len(f0) > onset else np.array([len(f0) - 1])
    pick = src[np.minimum((np.arange(rest) * len(src) / rest).astype(int), len(src) - 1)]
    idx = np.concatenate([np.arange(onset), pick])[:n_frames]
    v = np.zeros(n_frames, bool)
    v[onset:] = True
    if voiced.size == 0:
        v[:] = False
    return idx, v, sp[idx], ap[idx]


def _warp_envelope(sp: np.ndarray, factor: float) -> np.ndarray:
    """Scale formant frequencies by ``factor`` (frames, bins) by resampling along frequency."""
    bins = sp.shape[1]
    src = np.clip(np.arange(bins) / factor, 0, bins - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, bins - 1)
    w = src - lo
    return sp[:, lo] * (1 - w) + sp[:, hi] * w


def sung_curve(target: float, prev, start: float, t: np.ndarray, voice: VoiceSettings,
               rng: np.random.Generator) -> np.ndarray:
    """A sung note's pitch in MIDI semitones at times ``t`` (s from its start): a glide from ``prev``
    ((pitch, end s) of the previous note) when legato, vibrato that sets in after 150 ms, slow drift."""
    curve = np.full(len(t), float(target))
    if prev is not None and start - prev[1] < 0.08:  # legato: glide from the previous note
        g = np.minimum(t / max(voice.glide_s, 1e-3), 1.0)
        curve = prev[0] + (target - prev[0]) * (0.5 - 0.5 * np.cos(np.pi * g))
    depth = voice.vibrato_semitones * np.clip((t - 0.15) / 0.3, 0, 1)
    curve = curve + depth * np.sin(2 * np.pi * voice.vibrato_hz * t + rng.uniform(0, 2 * np.pi))
    return curve + 0.03 * np.cumsum(rng.normal(0, 1, len(t))) / np.sqrt(np.arange(1, len(t) + 1))


def sing(notes, voice: VoiceSettings, duration: float, rng: np.random.Generator, transpose: float = 0.0,
         sample_rate: int = 44100) -> np.ndarray:
    """Render melody ``notes`` (start/duration in s, MIDI pitch) as a mono voice of ``duration`` seconds."""
    if voice.engine == "formant":  # no speech engine, no WORLD (imported here because it imports this module)
        from .formant import sing_formant

        return sing_formant(notes, voice, duration, rng, transpose, sample_rate)
    n_total = int(np.ceil(duration * 1000 / FRAME_MS)) + 1
    bins = pyworld.get_cheaptrick_fft_size(ESPEAK_RATE) // 2 + 1
    f0 = np.zeros(n_total)
    sp = np.full((n_total, bins), 1e-12)
    ap = np.ones((n_total, bins))
    gain = np.zeros(n_total)
    prev = None
    speaking = False
    high_band = np.arange(bins) * ESPEAK_RATE / 2 / (bins - 1) > 4000
    for note in notes:
        a = int(note.start * 1000 / FRAME_MS)
        n = max(4, int(note.duration * 1000 / FRAME_MS))
        if a >= n_total:
            break
        n = min(n, n_total - a)
        text = SYLLABLES[note.syllable % len(SYLLABLES)]
        sf0, ssp, sap = _syllable_features(voice.espeak_voice, voice.speed, text, voice.engine)
        idx, v, nsp, nap = _stretch_syllable(sf0, ssp, sap, n)
        t = np.arange(n) * FRAME_MS / 1000
        target = note.pitch + transpose
        if voice.spoken > 0 and (prev is None or note.start - prev[1] > 0.1):  # a phrase starts: sung or spoken
            speaking = rng.random() < voice.spoken
        curve = np.full(n, target)
        if speaking:  # rapped/spoken: the syllable's own intonation, centred on the note, no vibrato
            contour = sf0[np.minimum(idx, len(sf0) - 1)]
            voiced = contour[contour > 0]
            if voiced.size:
                curve = target + 12 * np.log2(np.where(contour > 0, contour, np.median(voiced)) / np.median(voiced))
        else:
            curve = sung_curve(target, prev, note.start, t, voice, rng)
        hz = 440.0 * 2 ** ((curve - 69) / 12)
        f0[a:a + n] = np.where(v, hz, 0.0)
        sp[a:a + n] = _warp_envelope(nsp, voice.formant)
        if voice.sibilance > 0:  # louder consonants ("s", "sh"): unvoiced frames' band above 4 kHz
            sp[a:a + n][np.ix_(~v, high_band)] *= 10 ** (voice.sibilance * 1.2)
        breath = np.clip(nap + voice.breath * np.linspace(0.2, 1, bins)[None, :], 0, 1)
        ap[a:a + n] = np.where(v[:, None], breath, nap)
        env = np.ones(n)
        r = min(n // 4, 12)
        if r:
            env[-r:] = np.linspace(1, 0, r)
        gain[a:a + n] = env * (note.velocity / 127.0)
        prev = (target, note.start + note.duration)
    y = pyworld.synthesize(f0, sp * (gain[:, None] ** 2 + 1e-12), ap, ESPEAK_RATE, frame_period=FRAME_MS)
    y = resample_poly(y, sample_rate, ESPEAK_RATE)
    out = np.zeros(int(round(duration * sample_rate)))
    out[: min(len(y), len(out))] = y[: len(out)]
    return out.astype(np.float32)
