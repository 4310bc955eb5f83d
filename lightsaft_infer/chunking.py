"""Chunk scheduler: cut a track into network windows and overlap-add them back.

A window is ``W = hop·(num_frame - 1)`` samples (``num_frame`` STFT frames).
From each separated window the first and last ``trim`` samples are discarded
(their frames saw the reflect padding and the window edge); neighbouring kept
parts overlap by ``fade`` samples, cross-faded with linear ramps. Every output
sample is divided by the sum of the weights that reached it, so the weights
sum to one exactly, also at the track's ends where a ramp has no partner.

``authors`` mode is the authors' MDX chunking: trim 8192 samples (rounded up
to whole hops), no cross-fade, windows every ``W - 2·trim`` samples.

Coordinates: the track is placed at offset ``trim`` in a zero-padded buffer;
window ``k`` reads ``padded[k·stride : k·stride + W]`` and its kept part lands
on ``track[k·stride : k·stride + W - 2·trim]``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

AUTHORS_TRIM = 8192
MODES = ("overlap", "authors")
DEFAULT_OVERLAP = 0.125


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Where the windows of one track lie. All sizes in samples."""

    length: int  # track length
    window: int  # W
    trim: int  # context discarded at each window edge
    fade: int  # cross-fade length between neighbouring kept parts
    stride: int  # distance between window starts
    n_windows: int

    @property
    def kept(self) -> int:
        """Samples each window contributes: ``W - 2·trim``."""
        return self.window - 2 * self.trim

    @property
    def padded_length(self) -> int:
        return (self.n_windows - 1) * self.stride + self.window

    def starts(self) -> range:
        """Start of each window in the padded buffer (= start of its kept part in the track)."""
        return range(0, self.n_windows * self.stride, self.stride)

    def weights(self) -> np.ndarray:
        """Cross-fade weights ``(W,)`` float32: 0 in the trims, ramps of ``fade``, 1 between."""
        w = np.zeros(self.window, dtype=np.float32)
        w[self.trim : self.window - self.trim] = 1.0
        if self.fade:
            ramp = (np.arange(self.fade, dtype=np.float32) + 0.5) / self.fade
            w[self.trim : self.trim + self.fade] = ramp
            w[self.window - self.trim - self.fade : self.window - self.trim] = ramp[::-1]
        return w


def plan_chunks(
    length: int, window: int, hop: int, mode: str = "overlap", overlap: float = DEFAULT_OVERLAP, trim: int | None = None
) -> ChunkPlan:
    """Plan windows for a track of ``length`` samples.

    ``overlap`` is the fraction of each kept part cross-faded with the next
    (``0 <= overlap <= 0.5``); ``trim`` defaults to the authors' 8192 samples
    rounded up to whole hops. ``authors`` mode ignores both and uses trim 8192, no fade.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if length < 0:
        raise ValueError("length must be >= 0")
    if mode == "authors":
        trim, overlap = None, 0.0
    if trim is None:
        trim = math.ceil(AUTHORS_TRIM / hop) * hop
    if not 0 <= trim < window // 2:
        raise ValueError(f"trim must be in [0, {window // 2}), not {trim}")
    if not 0.0 <= overlap <= 0.5:
        raise ValueError(f"overlap must be in [0, 0.5], not {overlap}")
    kept = window - 2 * trim
    fade = int(round(overlap * kept))
    stride = kept - fade
    n_windows = 1 + max(0, math.ceil((length - kept) / stride))
    return ChunkPlan(length, window, trim, fade, stride, n_windows)


class OverlapAdd:
    """Accumulates weighted windows into ``(S, channels, length)`` outputs.

    ``add(k, y)`` takes window ``k``'s separated signals ``(S, channels, W)``;
    ``result()`` normalises in place and returns the track ``(S, channels, length)``
    (a view of the accumulator; call it once).
    """

    def __init__(self, plan: ChunkPlan, n_sources: int, channels: int):
        self.plan = plan
        self.weights = plan.weights()
        self.out = np.zeros((n_sources, channels, plan.padded_length), dtype=np.float32)
        self.total = np.zeros(plan.padded_length, dtype=np.float32)

    def add(self, k: int, y: np.ndarray) -> None:
        s = k * self.plan.stride
        self.out[..., s : s + self.plan.window] += y * self.weights
        self.total[s : s + self.plan.window] += self.weights

    def result(self) -> np.ndarray:
        t, n = self.plan.trim, self.plan.length
        total = self.total[t : t + n]
        if np.any(total <= 0):
            raise RuntimeError("overlap-add left samples without any window")  # a planning bug, never input
        out = self.out[..., t : t + n]
        out /= total  # in place: the stems are the largest arrays of a run
        return out


def window_batches(audio: np.ndarray, plan: ChunkPlan, batch: int):
    """Yield ``(first_index, windows (b, channels, W))`` from ``audio (channels, length)``.

    Windows are cut from the virtually zero-padded track without building the whole padded copy.
    """
    channels = audio.shape[0]
    starts = list(plan.starts())
    for i in range(0, len(starts), batch):
        group = starts[i : i + batch]
        out = np.zeros((len(group), channels, plan.window), dtype=np.float32)
        for j, s in enumerate(group):
            lo, hi = s - plan.trim, s - plan.trim + plan.window  # track coordinates
            a, b = max(lo, 0), min(hi, plan.length)
            if b > a:
                out[j, :, a - lo : b - lo] = audio[:, a:b]
        yield i, out
