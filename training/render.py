"""Score → stems: FluidSynth renders the GM tracks, ``voice.sing`` the vocals, pedalboard mixes.

Each stem is rendered dry (FluidSynth's own reverb and chorus off), then
processed with its own chain (EQ, compression, reverb), and the master
limiter's gain curve, computed on the sum, is applied to every stem alike, so
the stems still add up to the mixture.
"""

from __future__ import annotations

import numpy as np
import pedalboard as pb
from scipy.ndimage import maximum_filter1d, uniform_filter1d

SAMPLE_RATE = 44100
_SYNTHS: dict = {}
#: FluidSynth renders in blocks of 64 samples and applies events at block boundaries, so its phase
#: depends on everything rendered before. Events fall on block boundaries and every render is a whole
#: number of blocks: a song sounds the same whatever the synthesiser rendered earlier.
BLOCK = 64


def new_song() -> None:
    """Drop the synthesisers: FluidSynth keeps per-channel state across ``system_reset`` (a note
    rendered earlier changes the first block of the next one), so each song starts from a fresh
    synthesiser and renders its parts in a fixed order, which makes it a function of its seed alone."""
    for fs, _ in _SYNTHS.values():
        fs.delete()
    _SYNTHS.clear()


def _synth(soundfont: str):
    """One FluidSynth instance per SoundFont, created on first use within a song."""
    import fluidsynth

    if soundfont not in _SYNTHS:
        # Effects off at creation (set later they keep running, and their delay lines carry state
        # from one render to the next).
        fs = fluidsynth.Synth(gain=0.4, samplerate=float(SAMPLE_RATE),
                              **{"synth.reverb.active": 0, "synth.chorus.active": 0})
        sfid = fs.sfload(soundfont)
        if sfid < 0:
            raise RuntimeError(f"{soundfont}: FluidSynth cannot load this SoundFont")
        _write_float(fs, 16 * BLOCK)  # a new synthesiser's first block differs from later ones
        _SYNTHS[soundfont] = (fs, sfid)
    return _SYNTHS[soundfont]


def _write_float(fs, n: int) -> np.ndarray:
    """``(n, 2)`` float32 from FluidSynth's float output (the 16-bit output is dithered from a table
    whose position depends on everything rendered before, which would break determinism)."""
    import ctypes

    import fluidsynth

    write = fluidsynth._fl.fluid_synth_write_float
    write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                      ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    out = np.zeros((n, 2), np.float32)
    ptr = out.ctypes.data
    write(fs.synth, n, ptr, 0, 2, ptr + 4, 0, 2)  # interleaved: left at 0, right at 1, stride 2
    return out


def _silence(fs) -> None:
    """Stop every voice and reset: the next render starts from the same state whatever came before."""
    for channel in range(16):
        fs.all_sounds_off(channel)
    for _ in range(1000):
        if fs.get_active_voice_count() == 0:
            break
        _write_float(fs, BLOCK)
    fs.system_reset()


def render_tracks(tracks, duration: float, soundfont: str) -> np.ndarray:
    """Render ``tracks`` (one stem's parts) into ``(samples, 2)`` float32, one MIDI channel per part."""
    fs, sfid = _synth(soundfont)
    _silence(fs)
    events = []
    for ch, track in enumerate(tracks):
        channel = 9 if track.drums else (ch if ch < 9 else ch + 1)
        fs.program_select(channel, sfid, 128 if track.drums else 0, track.program)
        fs.cc(channel, 10, int(np.clip(64 + track.pan * 63, 0, 127)))
        fs.cc(channel, 7, 110)
        for note in track.notes:
            pitch = int(round(note.pitch))
            events.append((note.start, 1, channel, pitch, note.velocity))
            events.append((note.start + note.duration, 0, channel, pitch, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    total = int(round(duration * SAMPLE_RATE))
    out = np.zeros((-(-(total + SAMPLE_RATE) // BLOCK) * BLOCK, 2), np.float32)  # one second of tail for releases
    pos = 0
    for t, on, channel, pitch, vel in events:
        at = min(int(round(t * SAMPLE_RATE / BLOCK)) * BLOCK, len(out) - BLOCK)
        if at > pos:
            out[pos:at] = _write_float(fs, at - pos)
            pos = at
        if on:
            fs.noteon(channel, pitch, vel)
        else:
            fs.noteoff(channel, pitch)
    for channel in range(16):
        fs.all_notes_off(channel)
    out[pos:] = _write_float(fs, len(out) - pos)
    return out[:total]


def stem_chain(stem: str, rng: np.random.Generator, room: float, fx: str = "standard") -> pb.Pedalboard:
    """Per-stem processing: high-pass, a random EQ tilt, compression, and a shared room's reverb; the
    ``shift`` chain (held out from training) adds drive, modulation and delay throws instead."""
    if fx == "shift":
        return _shift_chain(stem, rng, room)
    wet = {"vocals": 0.22, "drums": 0.08, "bass": 0.0, "other": 0.15}[stem] * rng.uniform(0.5, 1.5)
    chain = [
        pb.HighpassFilter(cutoff_frequency_hz=float({"bass": 30, "drums": 30}.get(stem, 80) * rng.uniform(0.8, 1.5))),
        pb.LowShelfFilter(cutoff_frequency_hz=200.0, gain_db=float(rng.uniform(-4, 4))),
        pb.PeakFilter(cutoff_frequency_hz=float(rng.uniform(400, 4000)), gain_db=float(rng.uniform(-5, 5)), q=1.0),
        pb.HighShelfFilter(cutoff_frequency_hz=6000.0, gain_db=float(rng.uniform(-5, 4))),
        pb.Compressor(threshold_db=float(rng.uniform(-24, -10)), ratio=float(rng.uniform(2, 5)), attack_ms=10, release_ms=120),
    ]
    if wet > 0.01:
        chain.append(pb.Reverb(room_size=room, wet_level=float(wet), dry_level=1.0, width=1.0))
    return pb.Pedalboard(chain)


def _shift_chain(stem: str, rng: np.random.Generator, room: float) -> pb.Pedalboard:
    """Effects no training song goes through: amp-like drive, chorus/phaser, delay throws, plate-like reverb."""
    chain = [pb.HighpassFilter(cutoff_frequency_hz=float({"bass": 35, "drums": 35}.get(stem, 120) * rng.uniform(0.8, 1.3)))]
    if stem in ("bass", "other") and rng.random() < 0.6:
        chain += [pb.Distortion(drive_db=float(rng.uniform(6, 22))), pb.LowpassFilter(cutoff_frequency_hz=float(rng.uniform(3000, 7000)))]
    if stem == "other" and rng.random() < 0.5:
        chain.append(pb.Chorus(rate_hz=float(rng.uniform(0.3, 2.0)), depth=float(rng.uniform(0.2, 0.5)), mix=0.5))
    if stem == "other" and rng.random() < 0.3:
        chain.append(pb.Phaser(rate_hz=float(rng.uniform(0.2, 1.5)), mix=0.5))
    if stem == "vocals":
        chain.append(pb.Delay(delay_seconds=float(rng.uniform(0.18, 0.45)), feedback=float(rng.uniform(0.2, 0.45)),
                              mix=float(rng.uniform(0.1, 0.3))))  # fmt: skip
    if stem == "drums":
        chain.append(pb.Compressor(threshold_db=float(rng.uniform(-30, -18)), ratio=8.0, attack_ms=2, release_ms=60))
    chain.append(pb.Reverb(room_size=min(1.0, room + 0.15), damping=0.2, wet_level=float(rng.uniform(0.05, 0.25)),
                           dry_level=1.0, width=1.0))  # fmt: skip
    return pb.Pedalboard(chain)


def pan_mono(x: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan of a mono signal to ``(samples, 2)``."""
    angle = (pan + 1) * np.pi / 4
    return np.stack([x * np.cos(angle), x * np.sin(angle)], axis=1).astype(np.float32)


def master(stems: dict, rng: np.random.Generator, ceiling: float = 0.95, codec: bool = False) -> dict:
    """Loudness and a peak limiter computed on the sum, applied as one gain curve to every stem (and with
    ``codec``, one band limit for all stems, so that they still sum to the mixture)."""
    if codec:
        cutoff = float(rng.uniform(11000, 16000))
        stems = {k: pb.LowpassFilter(cutoff_frequency_hz=cutoff)(v, SAMPLE_RATE) for k, v in stems.items()}
    mix = sum(stems.values())
    rms = float(np.sqrt(np.mean(mix ** 2)) + 1e-9)
    level = 10 ** (rng.uniform(-16, -11) / 20) / rms
    peak = maximum_filter1d(np.abs(mix).max(axis=1) * level, size=2049)
    gain = np.minimum(1.0, ceiling * 0.9 / np.maximum(peak, 1e-9))
    gain = np.minimum(gain, uniform_filter1d(gain, size=1024))  # smooth, never above the needed gain
    gain = (gain * level).astype(np.float32)[:, None]
    out = {k: v * gain for k, v in stems.items()}
    top = float(np.abs(sum(out.values())).max())
    if top > ceiling:  # residual overshoot: one scalar for all stems
        out = {k: v * (ceiling / top) for k, v in out.items()}
    return out
