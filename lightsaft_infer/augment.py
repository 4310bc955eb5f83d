"""Test-time augmentation: the same network on transformed copies of each window, each transform undone
on the separated output, and the passes averaged (demucs' ``--shifts``, with more kinds of pass).

A pass may

* **shift** the window's content later by ``shift`` samples, less than a hop: the STFT then sees the
  music on another frame grid, the augmentation that helps most (issue 34's probe: +0.10 dB for half a
  hop). The output is moved back by as much. The ``shift`` samples that enter at the window's start are
  zeros and the last ``shift`` output samples are lost, so a shift must not exceed the chunking's trim:
  both then lie in the edges that every window drops anyway;
* **swap** the left and right channels (undone by swapping back);
* **flip** the sign (undone by flipping back).

Averaging is in the waveform domain, per window, before the overlap-add: a window's passes are all run
before the next window, so memory does not grow with the number of passes and the deadline guard can
decide window by window how many passes it can still afford (:mod:`.deadline`). On a network that is
linear in its input every pass equals the plain one: the tests check each undo with the identity network.
"""

from __future__ import annotations

import dataclasses

import numpy as np

@dataclasses.dataclass(frozen=True)
class Pass:
    """One augmented pass: ``shift`` samples later (``0 <= shift``), channels swapped, sign flipped."""

    shift: int = 0
    swap: bool = False
    flip: bool = False

    def __post_init__(self):
        if self.shift < 0:
            raise ValueError(f"a pass shifts by 0 or more samples, not {self.shift}")

    @property
    def name(self) -> str:
        parts = ([f"shift {self.shift}"] if self.shift else []) + (["swap"] if self.swap else []) + (
            ["flip"] if self.flip else [])
        return "+".join(parts) or "plain"

    def apply(self, windows: np.ndarray) -> np.ndarray:
        """``windows (b, 2, W)`` -> the transformed windows, same shape."""
        x = windows
        if self.shift:
            x = np.concatenate([np.zeros(x.shape[:-1] + (self.shift,), x.dtype), x[..., : x.shape[-1] - self.shift]], -1)
        if self.swap:
            x = x[:, ::-1]
        if self.flip:
            x = -x
        return np.ascontiguousarray(x)

    def undo(self, waves: np.ndarray) -> np.ndarray:
        """``waves (b, S, 2, W)`` separated from :meth:`apply`'s windows -> aligned with the plain pass's."""
        y = waves
        if self.flip:
            y = -y
        if self.swap:
            y = y[:, :, ::-1]
        if self.shift:
            y = np.concatenate([y[..., self.shift :], np.zeros(y.shape[:-1] + (self.shift,), y.dtype)], -1)
        return y


#: The extra passes in the order they are added, as (shift in eighths of a hop, swap, flip): chosen greedily,
#: each step the pass that added most to those before it, on 24 synthetic songs (12 of the test split, 12 of
#: the shift split) with the default model (``training.augment_study``, docs/augmentation.md). Every pass sees
#: the music on a frame grid of its own; the first two also change the channels or the sign.
ORDER = ((4, True, False), (2, True, True), (7, False, False), (1, False, False), (5, False, False),
         (0, True, True), (3, False, False))  # fmt: skip


def default_order(hop: int, trim: int) -> tuple:
    """:data:`ORDER` for a network of hop ``hop``, most useful first. Shifts beyond ``trim`` (they would reach
    the kept samples) are left out."""
    order = (Pass(shift=eighths * hop // 8, swap=swap, flip=flip) for eighths, swap, flip in ORDER)
    return tuple(p for p in order if p.shift <= trim)


def check_passes(passes, trim: int) -> tuple:
    """``passes`` as a tuple of :class:`Pass`, each shift within ``trim`` (else a ValueError naming it)."""
    passes = tuple(passes)
    for p in passes:
        if not isinstance(p, Pass):
            raise ValueError(f"a pass must be an augment.Pass, not {p!r}")
        if p.shift > trim:
            raise ValueError(f"pass '{p.name}' shifts by more than the chunking's trim ({trim} samples): "
                             "its zeros would reach the kept samples")
    return passes
