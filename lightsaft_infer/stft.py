"""STFT front-end in numpy/scipy, matching the authors' torch conventions.

``torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True,
pad_mode="reflect", return_complex=True)`` and the matching ``torch.istft``,
without torch, so that the ONNX Runtime path needs none. Spectrograms enter the
network "complex as channels": ``(B, 4, T, F)`` ordered
``[real_L, real_R, imag_L, imag_R]``.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window ``(n_fft,)`` float32, as ``torch.hann_window(n_fft)``."""
    n = np.arange(n_fft, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _inverse_envelope(n_fft: int, hop: int, frames: int) -> np.ndarray:
    """``1 / Σ window²`` over the overlap-added output, centre padding already trimmed."""
    w2 = hann_window(n_fft).astype(np.float64) ** 2
    env = np.zeros(n_fft + hop * (frames - 1))
    for t in range(frames):
        env[t * hop : t * hop + n_fft] += w2
    env = env[n_fft // 2 : n_fft // 2 + hop * (frames - 1)]
    if np.any(env < 1e-11):
        raise ValueError("window envelope vanishes: NOLA condition fails")
    return (1.0 / env).astype(np.float32)


class STFT:
    """STFT/iSTFT pair for a given ``n_fft`` and ``hop``; ``workers`` threads for the FFTs."""

    def __init__(self, n_fft: int, hop: int, workers: int = 1):
        if n_fft % hop:
            raise ValueError("n_fft must be a multiple of hop")
        self.n_fft, self.hop, self.workers = n_fft, hop, workers
        self.window = hann_window(n_fft)

    def frames(self, samples: int) -> int:
        """Centred frames of a signal of ``samples`` samples: ``1 + samples // hop``."""
        return 1 + samples // self.hop

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (..., N)`` float32 -> complex64 ``(..., T, n_fft/2+1)`` with ``T = 1 + N // hop``."""
        pad = self.n_fft // 2
        padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)[..., :: self.hop, :]
        return scipy.fft.rfft(frames * self.window, axis=-1, workers=self.workers).astype(np.complex64, copy=False)

    def inverse(self, spec: np.ndarray) -> np.ndarray:
        """complex ``(..., T, n_fft/2+1)`` -> float32 ``(..., hop·(T-1))``."""
        T = spec.shape[-2]
        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1, workers=self.workers).astype(np.float32, copy=False)
        frames *= self.window
        R = self.n_fft // self.hop  # overlap-add in R strided passes of whole hops
        frames = frames.reshape(*frames.shape[:-1], R, self.hop)
        out = np.zeros((*spec.shape[:-2], T + R - 1, self.hop), dtype=np.float32)
        for r in range(R):
            out[..., r : r + T, :] += frames[..., r, :]
        out = out.reshape(*spec.shape[:-2], -1)
        start = self.n_fft // 2
        return out[..., start : start + self.hop * (T - 1)] * _inverse_envelope(self.n_fft, self.hop, T)

    # "complex as channels" --------------------------------------------------
    def analyse(self, waves: np.ndarray) -> np.ndarray:
        """Stereo windows ``(B, 2, N)`` -> network input ``(B, 4, T, F)`` float32."""
        z = self.forward(waves)
        return np.concatenate([z.real, z.imag], axis=1).astype(np.float32, copy=False)

    def synthesise(self, spec: np.ndarray) -> np.ndarray:
        """Network output ``(..., 4, T, F)`` -> stereo waves ``(..., 2, hop·(T-1))``."""
        z = spec[..., :2, :, :] + 1j * spec[..., 2:, :, :].astype(np.complex64)
        return self.inverse(z.astype(np.complex64, copy=False))
