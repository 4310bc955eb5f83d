"""Timbre augmentation of training stems: re-pitching and random equalisation.

The on-the-fly remix (random gain, channel swap, stems from different songs) varies *which* sounds
meet; it never changes what one source sounds like, so a network can learn the corpus's few singers
and instruments by their spectral envelope. These two transforms vary the envelope itself, per stem,
before the mixture is summed (so mixture = sum of stems still holds):

- :func:`repitch` — a speed change of a few semitones (pitch, formants and tempo together), the
  "repitch" augmentation of Demucs (Défossez et al., 2019/2021), by polyphase resampling;
- :func:`random_eq` — a low shelf, a peak and a high shelf with random frequencies and gains
  (pedalboard's RBJ biquads), a crude stand-in for other microphones, instruments and mixes;
- :func:`saturate` (``--saturate``) — a random waveshaper (asymmetric soft, cubic or hard clipping)
  at 3–24 dB of drive, in parallel with the dry stem, at the stem's own loudness: the harmonics that
  preamps, tape and amps add to any source, so that "has many harmonics" stops meaning one stem.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 44100
SEMITONES = (-2, -1, 1, 2)  # speed changes drawn by repitch augmentation


@lru_cache(maxsize=None)
def _ratio(semitones: int) -> tuple[int, int]:
    """Speed ratio ``2 ** (semitones / 12)`` as ``(up, down)`` with small integers for resample_poly."""
    f = Fraction(2 ** (semitones / 12)).limit_denominator(64)
    return f.numerator, f.denominator


def repitch_span(length: int, semitones: int) -> int:
    """Input samples :func:`repitch` needs to give ``length`` output samples."""
    up, down = _ratio(semitones)
    return -(-length * up // down) + 1


def repitch(x: np.ndarray, semitones: int, length: int) -> np.ndarray:
    """``(n, 2)`` → ``(length, 2)``: ``x`` played ``2 ** (semitones/12)`` times faster (higher and shorter).

    ``x`` must hold at least :func:`repitch_span` samples.
    """
    from scipy.signal import resample_poly

    up, down = _ratio(semitones)
    # Playing faster by up/down = resampling to down/up as many samples at the same rate.
    y = resample_poly(x, down, up, axis=0)
    if len(y) < length:
        y = np.pad(y, ((0, length - len(y)), (0, 0)))
    return np.ascontiguousarray(y[:length], dtype=np.float32)


def random_eq(x: np.ndarray, rng: np.random.Generator, max_db: float = 6.0) -> np.ndarray:
    """``(n, 2)`` float32 through a random low shelf, peak and high shelf (each ±``max_db``)."""
    import pedalboard

    board = pedalboard.Pedalboard([
        pedalboard.LowShelfFilter(cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(60), np.log(400)))),
                                  gain_db=float(rng.uniform(-max_db, max_db)), q=0.707),
        pedalboard.PeakFilter(cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(200), np.log(6000)))),
                              gain_db=float(rng.uniform(-max_db, max_db)), q=float(rng.uniform(0.5, 2.0))),
        pedalboard.HighShelfFilter(cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(2000), np.log(10000)))),
                                   gain_db=float(rng.uniform(-max_db, max_db)), q=0.707),
    ])
    y = board(np.ascontiguousarray(x.T, dtype=np.float32), SAMPLE_RATE, reset=True)
    return np.ascontiguousarray(y.T)


#: Waveshapers :func:`saturate` draws from; y = f(x) for x scaled by the drive, before the level is restored.
SHAPERS = ("soft", "cubic", "hard")


def saturate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` float32 through a random waveshaper (:data:`SHAPERS`) at 3–24 dB of drive, mixed
    30–100 % with the dry signal and scaled back to the input's RMS (the remix draws the level)."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms == 0.0:
        return x
    y = x.astype(np.float64) / (np.abs(x).max() * 10 ** (-rng.uniform(3, 24) / 20))
    shaper = SHAPERS[int(rng.integers(len(SHAPERS)))]
    if shaper == "soft":  # a biased tanh: even harmonics as well as odd ones, like a single-ended stage
        bias = rng.uniform(0.0, 0.5)
        y = np.tanh(y + bias) - np.tanh(bias)
    elif shaper == "cubic":
        y = np.clip(y, -1.0, 1.0)
        y = 1.5 * y - 0.5 * y**3
    else:
        y = np.clip(y, -1.0, 1.0)
    y -= y.mean(axis=0)  # the bias's DC offset
    wet = rng.uniform(0.3, 1.0)
    y = (1 - wet) * x / rms + wet * y / (np.sqrt(np.mean(y**2)) + 1e-12)
    return np.ascontiguousarray(y * (rms / (np.sqrt(np.mean(y**2)) + 1e-12)), dtype=np.float32)
