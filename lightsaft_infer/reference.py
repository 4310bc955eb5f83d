"""The authors' inference path, kept as the yardstick (needs torch).

One ``torch.stft`` → :class:`~.network.ConditionedUNet` → ``torch.istft`` per
chunk and per source, with the authors' MDX chunking (trim 8192, no
cross-fade). The benchmark times it beside :class:`~.separator.Separator`,
and the tests check that both agree with the authors' recorded outputs.
"""

from __future__ import annotations

import math

import numpy as np

from .chunking import AUTHORS_TRIM


def separate_reference(net, audio: np.ndarray, batch_size: int = 1, trim: int = AUTHORS_TRIM) -> dict[str, np.ndarray]:
    """``audio (samples, 2)`` float32 at the model's rate -> ``{source: (samples, 2)}``.

    ``batch_size`` chunks of one source go through the network together, as
    in the authors' code (they used 1 and 32). ``trim`` is their ``K`` (8192;
    the benchmark passes the separator's own to compare like with like).
    """
    import torch

    cfg = net.cfg
    n_fft, hop = cfg.n_fft, cfg.hop_length
    window = torch.hann_window(n_fft)
    W = cfg.window_samples
    K = math.ceil(trim / hop) * hop
    U = W - 2 * K
    n = audio.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(audio.T, dtype=np.float32))  # (2, samples)
    x = torch.nn.functional.pad(x, (K, U - n % U + K))
    chunks = x.unfold(1, W, U).permute(1, 0, 2)  # (n_chunks, 2, W)
    out = {}
    with torch.inference_mode():
        for c, name in enumerate(cfg.sources):
            pieces = []
            for i in range(0, chunks.shape[0], batch_size):
                batch = chunks[i : i + batch_size]
                b = batch.shape[0]
                z = torch.stft(batch.reshape(b * 2, W), n_fft, hop, window=window, center=True,
                               pad_mode="reflect", return_complex=True)  # (2b, F, T)
                z = z.reshape(b, 2, *z.shape[1:]).transpose(-1, -2)  # (b, 2, T, F)
                spec = torch.cat([z.real, z.imag], 1)  # (b, 4, T, F)
                y = net(spec, torch.full((b,), c, dtype=torch.long))
                zy = torch.complex(y[:, :2], y[:, 2:]).transpose(-1, -2).reshape(b * 2, -1, z.shape[2])
                wave = torch.istft(zy, n_fft, hop, window=window, center=True).reshape(b, 2, -1)
                pieces.append(wave[:, :, K : W - K])
            track = torch.cat(pieces, 0).permute(1, 0, 2).reshape(2, -1)[:, :n]
            out[name] = track.T.contiguous().numpy()
    return out
