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
  preamps, tape and amps add to any source, so that "has many harmonics" stops meaning one stem;
- :func:`effects` (``--fx``) — a random chain of the effects that producers put on any stem: drive
  into a cabinet-like low-pass, modulation (chorus, flanger or phaser) and echoes, written here in
  numpy/scipy (the shift split's chain is pedalboard's; these are other implementations of the same
  families, so that a chorused bass or a distorted keyboard stops sounding like another stem);
- :func:`reverb` (``--reverb``) — a synthetic room or plate (decaying stereo noise, highs dying
  faster) on any stem: the corpus's standard chain gives bass no reverb at all and the others one
  algorithm's (pedalboard's) room, so that a reverberant bass or a tail of another kind stops being
  a sign of another stem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from .synth import lowpass

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


def _rms(x: np.ndarray) -> float:
    """RMS of ``x`` over all samples and channels, computed in float64."""
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def _at_rms(y: np.ndarray, rms: float) -> np.ndarray:
    """``y`` scaled to RMS ``rms``, as contiguous float32."""
    return np.ascontiguousarray(y * (rms / (np.sqrt(np.mean(y**2)) + 1e-12)), dtype=np.float32)


def saturate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` float32 through a random waveshaper (:data:`SHAPERS`) at 3–24 dB of drive, mixed
    30–100 % with the dry signal and scaled back to the input's RMS (the remix draws the level)."""
    rms = _rms(x)
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
    return _at_rms(y, rms)


#: Effects :func:`effects` draws from, each with its probability (at least one is applied).
EFFECTS = {"drive": 0.5, "modulation": 0.5, "echo": 0.35}


def _modulated_delay(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Chorus (10-30 ms, slow) or flanger (1-5 ms, with feedback-like depth): ``x`` plus a copy read
    through a delay swept by a sine LFO, the right channel's LFO a quarter cycle late (stereo spread)."""
    flanger = rng.random() < 0.35
    base = rng.uniform(0.001, 0.005) if flanger else rng.uniform(0.01, 0.03)
    depth = base * rng.uniform(0.3, 0.9)
    rate, mix = rng.uniform(0.1, 2.5), rng.uniform(0.3, 0.7)
    n = np.arange(len(x))
    out = np.empty_like(x, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    for c in range(x.shape[1]):
        d = (base + depth * np.sin(2 * np.pi * rate * n / SAMPLE_RATE + phase + c * np.pi / 2)) * SAMPLE_RATE
        pos = np.clip(n - d, 0, len(x) - 1)
        i = np.floor(pos).astype(int)
        frac = pos - i
        j = np.minimum(i + 1, len(x) - 1)
        out[:, c] = x[:, c] + mix * ((1 - frac) * x[i, c] + frac * x[j, c])
    return out


def _phaser(x: np.ndarray, rng: np.random.Generator, block: int = 512) -> np.ndarray:
    """4-8 first-order all-passes whose break frequency an LFO sweeps (per block of 512 samples, 12 ms; each
    stage's state carried over), mixed with the dry signal: the moving notches of a phaser."""
    from scipy.signal import lfilter

    stages, rate, mix = int(rng.integers(4, 9)), rng.uniform(0.1, 1.5), rng.uniform(0.4, 0.6)
    lo, hi = np.log(rng.uniform(200, 600)), np.log(rng.uniform(1500, 5000))
    phase = rng.uniform(0, 2 * np.pi)
    state = np.zeros((stages, 1, x.shape[1]))
    wet = np.empty_like(x, dtype=np.float64)
    for a in range(0, len(x), block):
        f = np.exp(lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * np.pi * rate * a / SAMPLE_RATE + phase)))
        t = np.tan(np.pi * f / SAMPLE_RATE)
        k = (t - 1) / (t + 1)  # all-pass H(z) = (k + z^-1) / (1 + k z^-1)
        y = x[a : a + block].astype(np.float64)
        for s in range(stages):
            y, state[s] = lfilter([k, 1.0], [1.0, k], y, axis=0, zi=state[s])
        wet[a : a + block] = y
    return (1 - mix) * x + mix * wet


def echoes(x: np.ndarray, delay: int, feedback: float, mix: float, taps: int, ping: bool, dtype=None) -> np.ndarray:
    """``x (n, 2)`` plus ``taps`` echoes ``delay`` samples apart, the k-th at ``mix * feedback ** (k - 1)``,
    the odd ones with the channels swapped if ``ping`` (ping-pong); summed in ``dtype`` (default ``x``'s)."""
    out = x.astype(dtype or x.dtype)
    for k in range(1, taps + 1):
        if delay * k >= len(x):
            break
        echo = x[: len(x) - delay * k] * mix * feedback ** (k - 1)
        out[delay * k :] += echo[:, ::-1] if ping and k % 2 else echo
    return out


def _echo(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Feedback echoes 80-450 ms apart, sometimes ping-ponged between the channels."""
    d = int(rng.uniform(0.08, 0.45) * SAMPLE_RATE)
    feedback, mix, ping = rng.uniform(0.2, 0.55), rng.uniform(0.1, 0.4), rng.random() < 0.5
    return echoes(x, d, feedback, mix, 5, ping, np.float64)


def effects(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` float32 through a random chain of :data:`EFFECTS` in the order a guitarist's pedals
    would have them (drive, modulation, echo), at the input's RMS (the remix draws the level)."""
    rms = _rms(x)
    if rms == 0.0:
        return x
    chosen = [name for name, p in EFFECTS.items() if rng.random() < p]
    if not chosen:
        chosen = [list(EFFECTS)[int(rng.integers(len(EFFECTS)))]]
    y = x
    if "drive" in chosen:  # a waveshaper into a cabinet-like low-pass
        y = lowpass(saturate(y, rng), float(np.exp(rng.uniform(np.log(2500), np.log(9000)))), axis=0)
    if "modulation" in chosen:
        y = _phaser(y, rng) if rng.random() < 0.35 else _modulated_delay(y, rng)
    if "echo" in chosen:
        y = _echo(y, rng)
    return _at_rms(y, rms)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` float32 plus a random synthetic reverb, at the input's RMS: stereo noise decaying with an
    RT60 of 0.3-2.5 s above 1.5 kHz faster than below (damping), 0-40 ms of pre-delay, 10-40 % wet."""
    from scipy.signal import oaconvolve

    rms = _rms(x)
    if rms == 0.0:
        return x
    rt60 = float(np.exp(rng.uniform(np.log(0.3), np.log(2.5))))
    damping, predelay, mix = rng.uniform(0.3, 0.8), int(rng.uniform(0.0, 0.04) * SAMPLE_RATE), rng.uniform(0.1, 0.4)
    n = min(len(x), int(rt60 * SAMPLE_RATE))
    t = np.arange(n)[:, None] / SAMPLE_RATE
    noise = rng.standard_normal((n, 2))
    low = lowpass(noise, 1500.0, axis=0)
    ir = low * np.exp(-6.9 * t / rt60) + (noise - low) * np.exp(-6.9 * t / (rt60 * damping))  # -60 dB at RT60
    ir = np.concatenate([np.zeros((predelay, 2)), ir / np.sqrt(np.sum(ir**2) / 2)])
    wet = oaconvolve(x.astype(np.float64), ir, axes=0)[: len(x)]  # each channel through its own tail
    y = x / rms + mix * wet / (np.sqrt(np.mean(wet**2)) + 1e-12)
    return _at_rms(y, rms)


@dataclass(frozen=True)
class StemEffects:
    """How often each per-stem effect is drawn (``--saturate``, ``--fx``, ``--reverb``): a probability per
    stem, applied in a mixing chain's order (waveshaper, pedal chain, reverb) to one ``(n, 2)`` stem.

    A probability of 0 draws nothing from the RNG, so that a run without an effect sees the same examples
    as runs from before it existed (and a resumed run the same as an uninterrupted one)."""

    saturate: float = 0.0
    fx: float = 0.0
    reverb: float = 0.0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # the module's functions are looked up at call time, so that tests can watch them
        for p, effect in ((self.saturate, saturate), (self.fx, effects), (self.reverb, reverb)):
            if p and rng.random() < p:
                x = effect(x, rng)
        return x

    def logged(self) -> dict:
        """The probabilities that are on, by their command-line names (the training log's keys)."""
        return {name: p for name, p in asdict(self).items() if p}  # the fields are named as the options
