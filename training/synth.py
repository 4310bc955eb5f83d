"""Sound sources for the wide recipe that no SoundFont provides: numpy synthesisers and an amp simulator.

Training on three GM SoundFonts taught the model *those* basses and keyboards
(issue 12: FM-synth basses and distorted guitars went to the wrong stems). These
render a ``compose.Track``'s notes with synthesis methods of their own, each
with randomised parameters:

- basses: ``fm`` (2-operator FM, decaying index), ``saw`` / ``square``
  (subtractive: PolyBLEP oscillator through a low-pass whose cutoff follows an
  envelope), ``sub`` (sine plus soft saturation);
- keys and leads for *other*: ``supersaw`` (detuned saws, pads and leads),
  ``pluck`` (Karplus-Strong string), ``organ`` (additive drawbars), ``fmkeys``
  (electric-piano-like FM), ``pwm``;
- ``opfm`` for both: two-operator FM with the non-sine operator waveforms of
  the cheap FM chips behind a generation of game and PC music (half-, absolute-
  and quarter-sine, square), frequency or additive connection, and percussive
  or held envelopes: FM brass, strings, organs, bells and basses that all
  sound alike in a way no sample SoundFont does;
- ``amp``: a guitar amplifier and cabinet (pre-EQ, asymmetric waveshaper,
  cabinet band-pass with a resonance) built from scipy filters, not from the
  pedalboard plugins the shift split's held-out chain uses.

Every function is a function of its arguments and ``rng`` alone (deterministic corpus).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, iirpeak, lfilter, sosfilt, tf2sos

SAMPLE_RATE = 44100
BASSES = ("fm", "saw", "square", "sub", "opfm")
KEYS = ("supersaw", "pluck", "organ", "fmkeys", "pwm", "opfm")
#: Operator waveforms of ``opfm`` (functions of the phase in cycles).
WAVES = ("sine", "half", "abs", "quarter", "square")


def _hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _polyblep(phase: np.ndarray, dt: float) -> np.ndarray:
    """Band-limiting correction of a naive saw's jump (phase in [0, 1), ``dt`` = f / rate)."""
    out = np.zeros_like(phase)
    lo = phase < dt
    t = phase[lo] / dt
    out[lo] = t + t - t * t - 1
    hi = phase > 1 - dt
    t = (phase[hi] - 1) / dt
    out[hi] = t * t + t + t + 1
    return out


def _saw(f: float, n: int, start_phase: float = 0.0) -> np.ndarray:
    dt = f / SAMPLE_RATE
    phase = (start_phase + dt * np.arange(n)) % 1.0
    return 2 * phase - 1 - _polyblep(phase, dt)


def _square(f: float, n: int, width: float = 0.5) -> np.ndarray:
    """Difference of two band-limited saws = band-limited pulse of duty ``width``."""
    return 0.5 * (_saw(f, n) - _saw(f, n, width))


def _wave(kind: str, phase: np.ndarray) -> np.ndarray:
    """One operator's waveform at ``phase`` (in cycles): a sine, or one of its clipped/rectified variants."""
    s = np.sin(2 * np.pi * phase)
    if kind == "half":
        return np.maximum(s, 0.0)
    if kind == "abs":
        return np.abs(s)
    if kind == "quarter":  # the rising quarter of |sin| in each half cycle, silent in the other quarter
        return np.where((phase % 0.5) < 0.25, np.abs(s), 0.0)
    if kind == "square":
        return np.sign(s)
    return s


def _adsr(n: int, gate: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    """Envelope of ``n`` samples for a note held ``gate`` samples (times in seconds, ``s`` level)."""
    t = np.arange(n) / SAMPLE_RATE
    held = np.where(t < a, t / max(a, 1e-4), s + (1 - s) * np.exp(-(t - a) / max(d, 1e-4)))
    g = gate / SAMPLE_RATE
    level = float(held[min(gate, n - 1)])
    return np.where(np.arange(n) < gate, held, level * np.exp(-(t - g) / max(r, 1e-4)))


def lowpass(x: np.ndarray, cutoff: float, axis: int = -1) -> np.ndarray:
    """A second-order Butterworth low-pass along ``axis`` (the cutoff kept below Nyquist)."""
    cutoff = min(cutoff, 0.45 * SAMPLE_RATE)
    return sosfilt(butter(2, cutoff, fs=SAMPLE_RATE, output="sos"), x, axis=axis)


class Patch:
    """One instrument with its randomised parameters; ``render(track, duration)`` → ``(samples, 2)``."""

    def __init__(self, kind: str, rng: np.random.Generator):
        self.kind = kind
        u = rng.uniform
        self.p = {
            "fm": dict(ratio=float(rng.choice([0.5, 1.0, 1.0, 2.0, 3.0])), index=u(1.0, 6.0), decay=u(0.05, 0.4)),
            "saw": dict(cut=u(150, 900), env=u(1.0, 8.0), decay=u(0.05, 0.4), drive=u(1.0, 3.0)),
            "square": dict(cut=u(200, 1200), env=u(0.5, 5.0), decay=u(0.05, 0.3), width=u(0.15, 0.5)),
            "sub": dict(drive=u(1.0, 4.0), octave=float(rng.choice([0.0, -12.0]))),
            "supersaw": dict(voices=int(rng.integers(3, 8)), detune=u(0.05, 0.3), cut=u(1500, 9000),
                             attack=u(0.005, 0.4), release=u(0.1, 0.8)),
            "pluck": dict(decay=u(0.95, 0.998), bright=u(0.2, 0.9)),
            "organ": dict(bars=u(0, 1, 6).tolist(), leslie=u(0.0, 0.004)),
            "fmkeys": dict(ratio=float(rng.choice([1.0, 2.0, 3.5, 14.0])), index=u(0.5, 4.0), decay=u(0.3, 2.0)),
            "pwm": dict(rate=u(0.2, 5.0), depth=u(0.05, 0.35), cut=u(800, 6000)),
            "opfm": dict(carrier=str(rng.choice(WAVES)), modulator=str(rng.choice(WAVES)),
                         ratio=float(rng.choice([0.5, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0])),
                         index=u(0.3, 5.0), index_decay=u(0.05, 2.0), additive=bool(rng.random() < 0.25),
                         attack=u(0.002, 0.15), decay=u(0.1, 1.5), sustain=float(rng.choice([0.0, u(0.3, 0.9)])),
                         release=u(0.03, 0.4), tremolo=u(0.0, 0.3) if rng.random() < 0.3 else 0.0),
        }[kind]
        self.gain = 1.0

    def note(self, pitch: float, gate: int, velocity: int) -> np.ndarray:
        """One note, mono float64, with its release tail."""
        p, f = self.p, _hz(pitch)
        tail = int((1.0 if self.kind == "fmkeys" else 0.25) * SAMPLE_RATE)
        n = gate + tail
        t = np.arange(n) / SAMPLE_RATE
        vel = (velocity / 127.0) ** 1.5
        if self.kind == "fm":
            index = p["index"] * np.exp(-t / p["decay"]) + 0.3
            y = np.sin(2 * np.pi * f * t + index * np.sin(2 * np.pi * f * p["ratio"] * t))
            env = _adsr(n, gate, 0.003, 0.3, 0.7, 0.05)
        elif self.kind in ("saw", "square"):
            osc = _saw(f, n) if self.kind == "saw" else _square(f, n, p["width"])
            env = _adsr(n, gate, 0.004, 0.25, 0.75, 0.06)
            fenv = np.exp(-t / p["decay"])
            closed, opened = lowpass(osc, p["cut"]), lowpass(osc, p["cut"] * (1 + p["env"]))
            y = closed + (opened - closed) * fenv  # a filter sweep as a crossfade of two fixed filters
            if self.kind == "saw":
                y = np.tanh(p["drive"] * y) / np.tanh(p["drive"])
        elif self.kind == "sub":
            f *= 2 ** (p["octave"] / 12)
            y = np.tanh(p["drive"] * np.sin(2 * np.pi * f * t)) / np.tanh(p["drive"])
            env = _adsr(n, gate, 0.005, 0.4, 0.85, 0.05)
        elif self.kind == "supersaw":
            k = p["voices"]
            y = sum(_saw(f * 2 ** (p["detune"] * (i - (k - 1) / 2) / 12 / max(k - 1, 1)), n, i / k) for i in range(k)) / np.sqrt(k)
            y = lowpass(y, p["cut"])
            env = _adsr(n, gate, p["attack"], 0.5, 0.8, p["release"])
        elif self.kind == "pluck":
            period = max(2, int(round(SAMPLE_RATE / f)))
            burst = np.zeros(n)
            burst[:period] = np.random.default_rng(int(pitch * 1000) + period).uniform(-1, 1, period)
            burst[:period] = lfilter([p["bright"], 1 - p["bright"]], [1.0], burst[:period])
            a = np.zeros(period + 2)
            a[0], a[period], a[period + 1] = 1.0, -p["decay"] / 2, -p["decay"] / 2
            y = lfilter([1.0], a, burst)
            env = np.where(np.arange(n) < gate, 1.0, np.exp(-(t - gate / SAMPLE_RATE) / 0.08))
        elif self.kind == "organ":
            wobble = p["leslie"] * np.sin(2 * np.pi * 6.0 * t)
            y = sum(b * np.sin(2 * np.pi * f * m * t * (1 + wobble)) for b, m in zip(p["bars"], (0.5, 1, 2, 3, 4, 6)))
            y /= max(sum(p["bars"]), 1e-3)
            env = _adsr(n, gate, 0.01, 0.1, 1.0, 0.05)
        elif self.kind == "fmkeys":
            index = p["index"] * np.exp(-t / (p["decay"] / 3))
            y = np.sin(2 * np.pi * f * t + index * np.sin(2 * np.pi * f * p["ratio"] * t))
            env = np.exp(-t / p["decay"]) * np.where(np.arange(n) < gate, 1.0, np.exp(-(t - gate / SAMPLE_RATE) / 0.15))
        elif self.kind == "opfm":
            mod = _wave(p["modulator"], f * p["ratio"] * t) - (0.5 if p["modulator"] in ("half", "abs", "quarter") else 0.0)
            mod *= p["index"] * (0.3 + 0.7 * np.exp(-t / p["index_decay"]))
            if p["additive"]:  # both operators heard (the chips' second connection), the modulator at a lower level
                y = 0.5 * _wave(p["carrier"], f * t) + 0.5 * mod / max(p["index"], 1e-3)
            else:
                # |sin| repeats every half cycle: an abs carrier runs at half speed to sound the note's pitch
                y = _wave(p["carrier"], f * (0.5 if p["carrier"] == "abs" else 1.0) * t + mod / (2 * np.pi))
            y = y - (np.mean(y) if len(y) else 0.0)  # rectified waveforms carry DC
            y = lowpass(y, 12000.0)  # the chips' output filter; it also tames the square's aliasing
            env = _adsr(n, gate, p["attack"], p["decay"], p["sustain"], p["release"])
            env *= 1 - p["tremolo"] * (0.5 + 0.5 * np.sin(2 * np.pi * 3.7 * t))
        else:  # pwm
            width = 0.5 + p["depth"] * np.sin(2 * np.pi * p["rate"] * t)
            y = lowpass(np.where(((f * t) % 1.0) < width, 1.0, -1.0), p["cut"])  # the filter tames the aliasing
            env = _adsr(n, gate, 0.01, 0.3, 0.8, 0.2)
        return y * env * vel

    def render(self, track, duration: float) -> np.ndarray:
        """The track's notes, panned, as ``(samples, 2)`` float32."""
        total = int(round(duration * SAMPLE_RATE))
        out = np.zeros(total + 2 * SAMPLE_RATE)
        for note in track.notes:
            a = int(round(note.start * SAMPLE_RATE))
            if a >= total:
                continue
            y = self.note(note.pitch, max(1, int(note.duration * SAMPLE_RATE)), note.velocity)
            out[a : a + len(y)] += y[: len(out) - a]
        mono = out[:total]
        angle = (track.pan + 1) * np.pi / 4
        return np.stack([mono * np.cos(angle), mono * np.sin(angle)], axis=1).astype(np.float32)


def amp(x: np.ndarray, rng: np.random.Generator, distorted: bool) -> np.ndarray:
    """Guitar amp and cabinet on ``(samples, 2)``: pre-EQ, waveshaper (``distorted``: 15-40 dB of gain,
    asymmetric; clean: light saturation), cabinet (band-pass 80 Hz-``3-6`` kHz with a resonance)."""
    pre = butter(1, float(rng.uniform(80, 400)), "highpass", fs=SAMPLE_RATE, output="sos")
    y = sosfilt(pre, x, axis=0)
    peak = float(np.abs(y).max()) + 1e-9
    y = y / peak
    gain = 10 ** (rng.uniform(15, 40) / 20) if distorted else 10 ** (rng.uniform(0, 8) / 20)
    bias = float(rng.uniform(0.0, 0.3)) if distorted else 0.0
    y = np.tanh(gain * y + bias) - np.tanh(bias)
    cab = butter(2, [float(rng.uniform(70, 120)), float(rng.uniform(3000, 6000))], "bandpass", fs=SAMPLE_RATE, output="sos")
    b, a = iirpeak(float(rng.uniform(1500, 3500)), float(rng.uniform(1.0, 4.0)), fs=SAMPLE_RATE)
    y = sosfilt(cab, y, axis=0)
    y = y + float(rng.uniform(0.2, 0.8)) * sosfilt(tf2sos(b, a), y, axis=0)
    return (y / (np.abs(y).max() + 1e-9) * peak).astype(np.float32)
