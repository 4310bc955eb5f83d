"""Chunk scheduler: cut a track into network windows and overlap-add them back.

A window is ``W = hop·(num_frame - 1)`` samples (``num_frame`` STFT frames).
From each separated window the first and last ``trim`` samples are discarded
(their frames saw the reflect padding and the window edge); neighbouring kept
parts overlap by ``fade`` samples, cross-faded with linear ramps. Every output
sample is divided by the sum of the weights that reached it, so the weights
sum to one exactly, also at the track's ends where a ramp has no partner.

``authors`` mode is the authors' MDX chunking (v1 code base): trim 8192
samples (rounded up to whole hops), no cross-fade, windows every ``W - 2·trim``
samples. ``authors-v2`` is the LaSAFT-Net-v2 code base's: trim 5120, windows
every half kept part, overlaps weighted 0.5 + 0.5 and added without
normalising, including its one irregular window (:meth:`ChunkPlan.window_weights`);
``Separator(mode="authors")`` picks the one of the network's code base.

The default, chosen by measurement (``python -m training.overlap_study``,
README "Chunking"), is the same scheme with a trim of 2048 samples: on 8
synthetic test songs its mean MDX SDR equals the authors' 8192 (+0.002 dB)
for 4.5% fewer windows; trim 0 loses 0.004 dB; cross-fades gain at most
0.03 dB for 14–38% more windows.

Coordinates: the track is placed at offset ``trim`` in a zero-padded buffer;
window ``k`` reads ``padded[k·stride : k·stride + W]`` and its kept part lands
on ``track[k·stride : k·stride + W - 2·trim]``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

AUTHORS_TRIM = 8192
#: The LaSAFT-Net-v2 code base's trim (``ceil(5000 / hop) · hop``) and kept-part overlap.
AUTHORS_V2_TRIM, AUTHORS_V2_OVERLAP = 5000, 0.5
#: What users choose; ``authors`` means the network family's own ``authors_chunking``.
MODES = ("overlap", "authors")
_SCHEMES = MODES + ("authors-v2",)
DEFAULT_OVERLAP = 0.0
DEFAULT_TRIM = 2048


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Where the windows of one track lie. All sizes in samples."""

    length: int  # track length
    window: int  # W
    trim: int  # context discarded at each window edge
    fade: int  # cross-fade length between neighbouring kept parts
    stride: int  # distance between window starts
    n_windows: int
    scheme: str = "overlap"  # "authors-v2": the v2 code base's weights, summed without normalising

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

    @property
    def normalised(self) -> bool:
        """Whether each output sample is divided by the sum of the weights that reached it."""
        return self.scheme != "authors-v2"

    def _irregular(self, k: int) -> bool:
        """authors-v2: window ``k`` is neither the last nor one that ends ``trim`` before the track's end."""
        s = k * self.stride
        return self.scheme == "authors-v2" and not s + self.kept > self.length and not s + self.kept + self.trim < self.length

    def input_zeroed(self, k: int) -> int:
        """Samples at the end of window ``k``'s input that are zeros instead of the track (the v2 code's
        irregular window, which reads ``trim`` samples short)."""
        return self.trim if self._irregular(k) else 0

    def window_weights(self, k: int) -> np.ndarray:
        """The weights ``(W,)`` window ``k`` is added with.

        authors-v2, for a window at ``s = k·stride`` (``U`` kept, ``K`` trim):
        the first ``U - stride`` kept samples are halved unless ``s = 0``; the
        last ones too unless it is the last window (``s + U > L``); the
        irregular window ``s + U <= L <= s + U + K`` gets no halving at all.
        """
        if self.scheme != "authors-v2":
            return self.weights()
        w = self.weights()
        s, edge = k * self.stride, self.kept - self.stride + self.trim
        if self._irregular(k):
            return w
        if s:
            w[:edge] *= 0.5
        if s + self.kept <= self.length and s + self.stride < self.length:
            w[self.window - edge :] *= 0.5
        return w

    def weights(self) -> np.ndarray:
        """Cross-fade weights ``(W,)`` float32: 0 in the trims, ramps of ``fade``, 1 between."""
        w = np.zeros(self.window, dtype=np.float32)
        w[self.trim : self.window - self.trim] = 1.0
        if self.fade and self.normalised:
            ramp = (np.arange(self.fade, dtype=np.float32) + 0.5) / self.fade
            w[self.trim : self.trim + self.fade] = ramp
            w[self.window - self.trim - self.fade : self.window - self.trim] = ramp[::-1]
        return w


def plan_chunks(
    length: int, window: int, hop: int, mode: str = "overlap", overlap: float = DEFAULT_OVERLAP, trim: int | None = None
) -> ChunkPlan:
    """Plan windows for a track of ``length`` samples.

    ``overlap`` is the fraction of each kept part cross-faded with the next
    (``0 <= overlap <= 0.5``); ``trim`` defaults to ``DEFAULT_TRIM`` (2048)
    samples rounded up to whole hops. ``authors`` mode ignores both and uses
    trim 8192, no fade.
    """
    if mode not in _SCHEMES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if length < 0:
        raise ValueError("length must be >= 0")
    if mode == "authors":
        trim, overlap = math.ceil(AUTHORS_TRIM / hop) * hop, 0.0
    if mode == "authors-v2":
        trim = math.ceil(AUTHORS_V2_TRIM / hop) * hop
        if not 0 <= trim < window // 2:
            raise ValueError(f"the v2 code's trim {trim} does not fit a window of {window}")
        kept = window - 2 * trim
        stride = max(1, int(kept * (1 - AUTHORS_V2_OVERLAP)))
        n_windows = max(1, math.ceil((length - kept) / stride) + 1)
        return ChunkPlan(length, window, trim, kept - stride, stride, n_windows, "authors-v2")
    if trim is None:
        trim = math.ceil(DEFAULT_TRIM / hop) * hop
    if not 0 <= trim < window // 2:
        raise ValueError(f"trim must be in [0, {window // 2}), not {trim}")
    if not 0.0 <= overlap <= 0.5:
        raise ValueError(f"overlap must be in [0, 0.5], not {overlap}")
    kept = window - 2 * trim
    fade = int(round(overlap * kept))
    stride = kept - fade
    n_windows = 1 + max(0, math.ceil((length - kept) / stride))
    return ChunkPlan(length, window, trim, fade, stride, n_windows)


def describe_plan(plan: ChunkPlan) -> str:
    """What a chunk plan does, for people (the per-song line, ``--help``)."""
    if plan.scheme == "authors-v2":
        return (f"the LaSAFT-Net-v2 code's chunking: trim {plan.trim}, windows overlapping by half, summed at "
                f"weight {AUTHORS_V2_OVERLAP:g}")
    return f"trim {plan.trim}" + (f", cross-fade {plan.fade} samples" if plan.fade else ", no cross-fade")


#: ``--mode authors`` in words, for both code bases (trims are rounded up to whole hops: hop 1024 -> 8192, 5120).
AUTHORS_HELP = (f"'authors' = each code base's own chunking: v1 networks trim {AUTHORS_TRIM} samples, no cross-fade; "
                f"LaSAFT-Net-v2 networks trim {AUTHORS_V2_TRIM} rounded up to whole hops (5120 at hop 1024), windows "
                f"overlapping by half, summed at weight {AUTHORS_V2_OVERLAP:g}")


def plan_for(config, length: int, mode: str = "overlap", overlap: float = DEFAULT_OVERLAP, trim: int | None = None) -> ChunkPlan:
    """:func:`plan_chunks` for a network ``config``: its window and hop, and ``authors`` meaning the chunking of
    its own code base (``config.authors_chunking``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    scheme = config.authors_chunking if mode == "authors" else mode
    return plan_chunks(length, config.window_samples, config.hop_length, scheme, overlap, trim)


class OverlapAdd:
    """Streaming overlap-add of weighted windows, added in order.

    ``add(k, y)`` takes window ``k``'s separated signals ``(S, channels, W)``
    and returns the track samples that no later window touches any more,
    normalised: ``(S, channels, m)`` with ``m`` = stride (fewer at the track's
    ends; the last window returns everything left). Concatenated, the returns
    are the whole track ``(S, channels, length)``. Only one window of
    accumulator is held, so memory does not grow with the song.
    """

    def __init__(self, plan: ChunkPlan, n_sources: int, channels: int):
        self.plan = plan
        self.acc = np.zeros((n_sources, channels, plan.window), dtype=np.float32)
        self.total = np.zeros(plan.window, dtype=np.float32)
        self.next = 0  # index of the next window; the accumulator starts at its padded coordinate

    def add(self, k: int, y: np.ndarray) -> np.ndarray:
        p = self.plan
        if k != self.next:
            raise ValueError(f"windows must be added in order: expected {self.next}, got {k}")
        weights = p.window_weights(k)
        self.acc += y * weights
        self.total += weights
        last = k == p.n_windows - 1
        final = p.window if last else p.stride  # accumulator samples no later window reaches
        base = k * p.stride - p.trim  # track coordinate of acc[..., 0]
        lo, hi = max(0, -base), min(final, p.length - base)
        if hi > lo:
            total = self.total[lo:hi]
            if np.any(total <= 0):
                raise RuntimeError("overlap-add left samples without any window")  # a planning bug, never input
            out = self.acc[..., lo:hi] / total if p.normalised else self.acc[..., lo:hi].copy()
        else:
            out = np.zeros((*self.acc.shape[:2], 0), dtype=np.float32)
        if not last:
            keep = p.window - p.stride
            self.acc[..., :keep] = self.acc[..., p.stride :]
            self.acc[..., keep:] = 0.0
            self.total[:keep] = self.total[p.stride :]
            self.total[keep:] = 0.0
        self.next += 1
        return out


def window_batches(audio, plan: ChunkPlan, batch: int, channels: int | None = None):
    """Yield ``(first_index, windows (b, channels, W))`` from the track.

    ``audio`` is an array ``(channels, length)`` or a callable ``read(a, b) ->
    (channels, b - a)`` (a file read in pieces). Windows are cut from the
    virtually zero-padded track without building the whole padded copy.
    """
    if callable(audio):
        read = audio
    else:
        channels = audio.shape[0]

        def read(a, b):
            return audio[:, a:b]

    starts = list(plan.starts())
    for i in range(0, len(starts), batch):
        group = starts[i : i + batch]
        out = np.zeros((len(group), channels, plan.window), dtype=np.float32)
        for j, s in enumerate(group):
            lo, hi = s - plan.trim, s - plan.trim + plan.window  # track coordinates
            a, b = max(lo, 0), min(hi, plan.length)
            if b > a:
                out[j, :, a - lo : b - lo] = read(a, b)
            zeroed = plan.input_zeroed(i + j)
            if zeroed:
                out[j, :, plan.window - zeroed :] = 0.0
        yield i, out
