"""Streaming sample-rate conversion: a song at any rate is separated window by window, like one at 44.1 kHz.

The network runs at the model's rate. A song at another rate is converted on the way in
(:class:`ResampledReader`, the windows' ``read(a, b)`` at the model's rate) and its stems on the way
out (:class:`ResampledWriter`), each with a soxr stream that carries its filter state from block to
block. Memory stays that of the 44.1 kHz path for any length, and the deadline guard sees the
conversion inside every window's measured cost instead of estimating a whole-song step up front.
"""

from __future__ import annotations

import numpy as np

from .errors import AudioError

#: Sample rates accepted anywhere (Hz): below 8 kHz there is no music to separate; above 768 kHz no
#: converter or sound card goes. A lying header (1 Hz, 2^31 - 1 Hz) is refused before any buffer is sized.
MIN_RATE, MAX_RATE = 8000, 768000
#: Input samples converted per step (a few windows' worth at most, whatever the rate).
BLOCK = 1 << 16
QUALITY = "HQ"


def check_rate(rate, path=None) -> int:
    """``rate`` as an int, or :class:`AudioError` naming ``path`` when no song can have it."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(path, f"has a sample rate of {rate} Hz; rates from {MIN_RATE} to {MAX_RATE} Hz are supported")
    return int(rate)


def converted_length(frames: int, rate_in: int, rate_out: int) -> int:
    """Samples ``frames`` at ``rate_in`` become at ``rate_out`` (what soxr's stream yields in total)."""
    return int(round(frames * rate_out / rate_in))


def _stream(rate_in: int, rate_out: int, channels: int):
    import soxr  # imported when a song needs it: 44.1 kHz songs never load it

    return soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality=QUALITY)


class ResampledReader:
    """``read(a, b) -> (2, b - a)`` at ``rate_out`` from ``source(a, b) -> (2, b - a)`` at ``rate_in``.

    Reads must come with non-decreasing ``a`` (overlapping windows do): the input is converted once,
    in order, and what lies before the last ``a`` is dropped.
    """

    def __init__(self, source, frames: int, rate_in: int, rate_out: int):
        self.source, self.frames = source, frames
        self.length = converted_length(frames, rate_in, rate_out)
        self.stream = _stream(rate_in, rate_out, 2)
        self.buffer = np.zeros((2, 0), np.float32)
        self.base = 0  # output index of buffer[:, 0]
        self.fed = 0  # input samples converted so far

    def __call__(self, a: int, b: int) -> np.ndarray:
        if a < self.base:
            raise ValueError(f"reads must move forward: {a} after {self.base}")
        pieces, end = [self.buffer], self.base + self.buffer.shape[1]
        while end < b and self.fed < self.frames:
            stop = min(self.fed + BLOCK, self.frames)
            y = self.stream.resample_chunk(np.ascontiguousarray(self.source(self.fed, stop).T), last=stop == self.frames)
            self.fed = stop
            pieces.append(y.T)
            end += y.shape[0]
        buffer = np.concatenate(pieces, axis=1) if len(pieces) > 1 else self.buffer
        self.buffer, self.base = buffer[:, a - self.base :], a  # nothing before a is read again
        out = self.buffer[:, : b - a]
        if out.shape[1] < b - a:  # the converter's total can fall a sample short of converted_length
            out = np.concatenate([out, np.zeros((2, b - a - out.shape[1]), np.float32)], axis=1)
        return out


class ResampledWriter:
    """Converts stem blocks ``(S, channels, m)`` from ``rate_in`` to ``rate_out``; together exactly ``frames``."""

    def __init__(self, sources: int, channels: int, rate_in: int, rate_out: int, frames: int):
        self.shape, self.width, self.frames, self.written = (sources, channels), sources * channels, frames, 0
        self.stream = _stream(rate_in, rate_out, self.width)  # every stem's channels in one stream

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """The converted part of ``block (S, channels, m)`` that is ready: ``(S, channels, k)``."""
        flat = np.ascontiguousarray(block.reshape(self.width, block.shape[-1]).T)  # (m, S * channels)
        y = self.stream.resample_chunk(flat, last=last)[: self.frames - self.written]
        self.written += y.shape[0]
        return y.T.reshape(*self.shape, y.shape[0])

    def finish(self) -> np.ndarray:
        """The rest, padded with silence to ``frames`` in total: ``(S, channels, k)``."""
        y = self.push(np.zeros((*self.shape, 0), np.float32), last=True)
        short = self.frames - self.written
        self.written = self.frames
        return np.concatenate([y, np.zeros((*self.shape, short), np.float32)], axis=-1) if short else y
