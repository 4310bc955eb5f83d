"""Post-filters: make the four estimated spectrograms agree with the mixture they came from.

The network estimates each source's complex spectrogram on its own, so the four need not add up to the
mixture. Per window, in the STFT domain, before the inverse STFT:

- ``none``: the network's estimates as they are (the authors' output; the exact path);
- ``consistency``: the residual ``X - Σ Y_j`` shared equally among the sources (mixture consistency);
- ``softmask``: ``Y_j ← X · |Y_j|² / Σ_k |Y_k|²`` per channel, a ratio mask built from the estimates;
- ``wiener``: multichannel Wiener filtering by expectation-maximisation (sigsep's ``norbert``, as in
  Open-Unmix and MDX-Net), started from the network's complex estimates, ``iterations`` rounds.

All but ``none`` make the stems sum to the mixture (to float precision). Shapes: mixture ``(B, 4, T, F)``
and estimates ``(B, S, 4, T, F)`` float32 with channels ``(re L, re R, im L, im R)`` as
:meth:`~.stft.STFT.analyse` makes them.
"""

from __future__ import annotations

import numpy as np

from .errors import LightsaftError

POSTFILTERS = ("none", "consistency", "softmask", "wiener")
EPS = 1e-10


def _complex(spec: np.ndarray) -> np.ndarray:
    """``(..., 4, T, F)`` real -> ``(..., 2, T, F)`` complex64."""
    return (spec[..., :2, :, :] + 1j * spec[..., 2:, :, :]).astype(np.complex64, copy=False)


def _real(z: np.ndarray) -> np.ndarray:
    """``(..., 2, T, F)`` complex -> ``(..., 4, T, F)`` float32."""
    return np.concatenate([z.real, z.imag], axis=-3).astype(np.float32, copy=False)


def check(name: str, iterations: int = 1) -> None:
    """Refuse an unknown filter, or ``wiener`` without norbert, before any work."""
    if name not in POSTFILTERS:
        raise ValueError(f"postfilter must be one of {POSTFILTERS}, not {name!r}")
    if iterations < 0:
        raise ValueError(f"postfilter iterations must be >= 0, not {iterations}")
    if name == "wiener":
        from .backends import module_available

        if not module_available("norbert"):
            raise LightsaftError(None, "the wiener post-filter needs norbert: pip install 'lightsaft-infer[wiener]'")


def apply(name: str, mixture: np.ndarray, estimates: np.ndarray, iterations: int = 1) -> np.ndarray:
    """``mixture (B, 4, T, F)``, ``estimates (B, S, 4, T, F)`` -> filtered estimates, same shape."""
    if name == "none":
        return estimates
    x = _complex(mixture)  # (B, 2, T, F)
    y = _complex(estimates)  # (B, S, 2, T, F)
    if name == "consistency":
        y = y + (x - y.sum(axis=1))[:, None] / y.shape[1]
    elif name == "softmask":
        power = np.abs(y) ** 2
        y = x[:, None] * (power / (power.sum(axis=1, keepdims=True) + EPS))
    elif name == "wiener":
        y = np.stack([_wiener(x[b], y[b], iterations) for b in range(len(y))])
    else:
        raise ValueError(f"postfilter must be one of {POSTFILTERS}, not {name!r}")
    return _real(y)


def _wiener(x: np.ndarray, y: np.ndarray, iterations: int) -> np.ndarray:
    """One window: ``x (2, T, F)``, ``y (S, 2, T, F)`` complex -> ``(S, 2, T, F)``."""
    import norbert

    if iterations == 0:  # the Wiener gain of the estimates' own powers: the soft mask
        power = np.abs(y) ** 2
        return x[None] * (power / (power.sum(axis=0, keepdims=True) + EPS))
    # norbert works on (T, F, C) and (T, F, C, S), in complex128; scaled for its numerical stability
    xt = np.ascontiguousarray(x.transpose(1, 2, 0), dtype=np.complex128)
    yt = np.ascontiguousarray(y.transpose(2, 3, 1, 0), dtype=np.complex128)
    scale = max(1.0, float(np.abs(xt).max()) / 10.0)
    out = norbert.expectation_maximization(yt / scale, xt / scale, iterations)[0] * scale
    return out.transpose(3, 2, 0, 1).astype(np.complex64)
