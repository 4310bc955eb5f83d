"""A singer with no speech engine and no vocoder: glottal pulses through a formant vocal tract.

Every other singer in the corpus is a speech engine's voice re-pitched by WORLD, so a model can learn
WORLD's and the engines' signature instead of "a voice" (issue 12: another engine's voice went to
*other*). This one is built from the source-filter model of speech instead, at 44.1 kHz:

- source: differentiated Rosenberg glottal pulses (the derivative stands in for lip radiation) on the
  note's pitch curve, with the singer's open quotient, jitter and shimmer, plus aspiration noise that
  is louder in each cycle's open phase (breathiness);
- tract: five formants (F1–F5, cascade resonances, so their levels follow from their frequencies)
  that glide between vowel targets, scaled by the singer's vocal-tract length (``formant``) and a
  per-singer spread, on an STFT of the source;
- consonants: fricative and plosive noise bursts shaped by a band-pass, and nasal onsets (low F1,
  damped level) before a note's vowel.

The singer's identity (tilt, open quotient, formant spread, jitter...) is a function of the number in
its name (``VoiceSettings.espeak_voice``, e.g. ``singer1234``), so doubled lines sound like one singer.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, istft, lfilter, sosfilt, stft

from .voice import FRAME_MS, VoiceSettings, sung_curve

#: Vowel targets F1–F3 in Hz (adult male means, Hillenbrand et al. 1995); F4/F5 are drawn per singer.
VOWELS = {
    "i": (342, 2322, 3000), "ɪ": (427, 2034, 2684), "e": (476, 2089, 2691), "ɛ": (580, 1799, 2605),
    "æ": (588, 1952, 2601), "ɑ": (768, 1333, 2522), "ɔ": (652, 997, 2538), "o": (497, 910, 2459),
    "ʊ": (469, 1122, 2434), "u": (378, 997, 2343), "ʌ": (623, 1200, 2550), "ɝ": (474, 1379, 1710),
}
#: Nasal murmur (an /m/ or /n/ onset): low F1, the tract's upper formants damped.
NASAL = (250, 1100, 2300)
N_FFT, HOP = 2048, 256


def _singer(name: str) -> dict:
    """The identity of ``singer<N>``: a function of N alone."""
    rng = np.random.default_rng(int(name.removeprefix("singer")))
    return {
        "open_quotient": float(rng.uniform(0.4, 0.75)),  # pressed (low) to breathy/lax (high) phonation
        "speed_quotient": float(rng.uniform(1.5, 3.5)),  # opening / closing time
        "tilt": float(rng.uniform(0.0, 0.7)),  # extra one-pole roll-off of the source
        "jitter": float(rng.uniform(0.002, 0.012)),
        "shimmer": float(rng.uniform(0.02, 0.12)),
        "spread": rng.uniform(0.92, 1.08, 5),  # per-formant deviation from the vowel table
        "upper": (float(rng.uniform(3300, 3800)), float(rng.uniform(4300, 4900))),  # F4, F5
        "bandwidth": rng.uniform(0.7, 1.5),  # scales all bandwidths
        "consonants": float(rng.uniform(0.3, 0.9)),  # share of notes that start with a consonant
        "air": float(rng.uniform(12, 26)),  # dB under DC of the tract's response at 8 kHz
    }


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Unit-variance noise low-passed over about ``width`` samples."""
    x = lfilter([1 - np.exp(-1 / width)], [1, -np.exp(-1 / width)], rng.normal(0, 1, n))
    return x / (x.std() + 1e-12)


def glottal_source(hz: np.ndarray, me: dict, breath: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Differentiated Rosenberg pulses at ``hz`` (per sample, 0 = silent) plus open-phase aspiration."""
    n = len(hz)
    hz = hz * (1 + me["jitter"] * _smooth_noise(rng, n, rate // 400))
    u = np.cumsum(hz / rate) % 1.0  # position in the glottal cycle
    oq = me["open_quotient"]
    tp = oq * me["speed_quotient"] / (1 + me["speed_quotient"])  # opening phase
    tn = oq - tp  # closing phase, ending in the closure discontinuity that excites the tract
    pulse = np.where(u < tp, 0.5 * np.pi / tp * np.sin(np.pi * u / tp),
                     np.where(u < oq, -0.5 * np.pi / tn * np.sin(0.5 * np.pi * (u - tp) / tn), 0.0))  # fmt: skip
    pulse = pulse * (1 + me["shimmer"] * _smooth_noise(rng, n, rate // 200)) * (hz > 0)
    pulse = lfilter([1 - me["tilt"]], [1, -me["tilt"]], pulse)
    noise = np.diff(rng.normal(0, 1, n + 1)) * np.where(u < oq, 1.0, 0.3) * (hz > 0)  # high-passed
    return pulse + (0.05 + 0.6 * breath) * noise * np.abs(pulse).mean() * 4


def tract_gain(freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """|H(f)| of cascaded two-pole resonances, each 1 at DC: ``(frames, bins)`` from ``(frames, K)`` Hz."""
    gain = np.ones((len(formants), len(freqs)))
    for k in range(formants.shape[1]):
        f, b = formants[:, k : k + 1], bandwidths[:, k : k + 1] / 2
        gain *= (f ** 2 + b ** 2) / np.sqrt(((freqs - f) ** 2 + b ** 2) * ((freqs + f) ** 2 + b ** 2))
    return gain


def sing_formant(notes, voice: VoiceSettings, duration: float, rng: np.random.Generator, transpose: float = 0.0,
                 sample_rate: int = 44100) -> np.ndarray:
    """Render melody ``notes`` like ``voice.sing``, for a ``formant``-engine singer: mono, ``duration`` s."""
    me = _singer(voice.espeak_voice)
    n_out = int(round(duration * sample_rate))
    frames = int(np.ceil(duration * 1000 / FRAME_MS)) + 1
    pitch = np.zeros(frames)  # MIDI, 0 = unvoiced
    gain = np.zeros(frames)
    vowel = np.tile(np.array(VOWELS["ɑ"], float), (frames, 1))
    damp = np.ones(frames)  # < 1 during a nasal onset
    bursts = []  # (start s, length s, centre Hz, level)
    names = list(VOWELS)
    prev, speaking = None, False
    for note in notes:
        a = int(note.start * 1000 / FRAME_MS)
        if a >= frames:
            break
        n = min(max(4, int(note.duration * 1000 / FRAME_MS)), frames - a)
        t = np.arange(n) * FRAME_MS / 1000
        target = note.pitch + transpose
        if voice.spoken > 0 and (prev is None or note.start - prev[1] > 0.1):
            speaking = rng.random() < voice.spoken
        if speaking:  # spoken: a falling intonation with a random lilt, no vibrato
            curve = target + 1.5 - 3.0 * t / max(t[-1], 1e-3) + 0.8 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        else:
            curve = sung_curve(target, prev, note.start, t, voice, rng)
        onset = 0
        if rng.random() < me["consonants"]:
            kind = rng.choice(["fricative", "plosive", "nasal"], p=[0.4, 0.35, 0.25])
            if kind == "nasal":
                onset = min(n // 3, int(rng.uniform(40, 90) / FRAME_MS))
                vowel[a : a + onset] = NASAL
                damp[a : a + onset] = 0.35
            else:
                length = rng.uniform(0.05, 0.14) if kind == "fricative" else rng.uniform(0.01, 0.03)
                centre = rng.uniform(3500, 8000) if kind == "fricative" else rng.uniform(1000, 4000)
                bursts.append((note.start, length, centre, rng.uniform(0.1, 0.4) * (1 + voice.sibilance)))
                onset = min(n // 3, int(length * 1000 / FRAME_MS))
        first, second = (np.array(VOWELS[names[int(i)]], float) for i in rng.integers(len(names), size=2))
        glide = np.clip((t[onset:] - t[onset]) / max(t[-1], 1e-3), 0, 1)[:, None] if rng.random() < 0.3 else 0.0
        vowel[a + onset : a + n] = first + (second - first) * glide  # a diphthong in 30 % of the notes
        pitch[a + onset : a + n] = curve[onset:]
        env = np.minimum(1.0, np.minimum(np.arange(1, n + 1) / 4, np.arange(n, 0, -1) / min(n // 4, 12)))
        gain[a : a + n] = env * (note.velocity / 127.0)
        pitch[a : a + onset] = curve[:onset] * (damp[a : a + onset] < 1)  # only a nasal onset is voiced
        prev = (target, note.start + note.duration)

    # control curves (5 ms frames) -> per-sample pitch, the formant tracks at the STFT's hop
    k = 31  # ~150 ms of smoothing makes the formant tracks articulate rather than jump
    kernel = np.hanning(k) / np.hanning(k).sum()
    vowel = np.stack([np.convolve(np.pad(vowel[:, i], k // 2, mode="edge"), kernel, "valid") for i in range(3)], 1)
    times = np.arange(n_out) / sample_rate
    control_t = np.arange(frames) * FRAME_MS / 1000
    midi = np.interp(times, control_t, pitch)
    hz = np.where(midi > 0, 440.0 * 2 ** ((midi - 69) / 12), 0.0)
    source = glottal_source(hz, me, voice.breath, rng, sample_rate)
    source *= np.interp(times, control_t, gain)

    freqs, hop_t, spec = stft(source, sample_rate, nperseg=N_FFT, noverlap=N_FFT - HOP, boundary="even")
    scale = voice.formant * me["spread"]
    at = lambda curve: np.interp(hop_t, control_t, curve)  # noqa: E731
    f = np.stack([at(vowel[:, i]) * scale[i] for i in range(3)]
                 + [np.full_like(hop_t, me["upper"][i] * voice.formant * me["spread"][3 + i]) for i in range(2)], 1)
    bw = np.array([80.0, 100.0, 150.0, 250.0, 350.0]) * me["bandwidth"] * (1 + 0.3 * (f / 1000 - 1).clip(0))
    # Past F5 a five-pole cascade falls at 60 dB/octave, while a real tract's many higher formants keep the
    # band above 5 kHz only some 15-30 dB down ("air"): a floor at 3 dB/octave under the cascade.
    air = 10 ** (-me["air"] / 20) * np.sqrt(8000.0 / np.maximum(freqs, 1.0))
    spec = spec * np.maximum(tract_gain(freqs, f, bw), air).T * at(damp)
    _, y = istft(spec, sample_rate, nperseg=N_FFT, noverlap=N_FFT - HOP, boundary=True)
    y = np.pad(y, (0, max(0, n_out - len(y))))[:n_out]

    level = np.sqrt(np.mean(y[y != 0] ** 2)) if y.any() else 1.0  # the voice's RMS while it sounds
    for start, length, centre, amount in bursts:  # consonant noise, relative to the voice's level
        s, m = int(start * sample_rate), int(length * sample_rate)
        if s + m > n_out or m < 8:
            continue
        band = butter(2, [centre / 1.3, min(centre * 1.3, sample_rate * 0.45)], "bandpass", fs=sample_rate,
                      output="sos")  # fmt: skip
        noise = sosfilt(band, rng.normal(0, 1, m)) * np.hanning(m)
        y[s : s + m] += noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12) * amount * level
    return y.astype(np.float32)
