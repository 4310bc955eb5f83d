"""The authors' inference path, kept as the yardstick (needs torch).

One ``torch.stft`` → the authors' network (:func:`~.families.build_network`)
→ ``torch.istft`` per chunk and per source, with the authors' chunking for the
network's code base (v1: trim 8192, no cross-fade; v2: trim 5120, half
overlaps weighted 0.5; :mod:`.chunking`). The benchmark times it beside
:class:`~.separator.Separator`, and the tests check that both agree with the
authors' recorded outputs.
"""

from __future__ import annotations

import numpy as np

from .chunking import OverlapAdd, plan_for, window_batches


def separate_reference(net, audio: np.ndarray, batch_size: int = 1, trim: int | None = None) -> dict[str, np.ndarray]:
    """``audio (samples, 2)`` float32 at the model's rate -> ``{source: (samples, 2)}``.

    ``batch_size`` chunks of one source go through the network together, as
    in the authors' code (they used 1 and 32). ``trim`` (default: the
    authors' chunking) is the trim of an un-faded chunking instead — the
    benchmark passes the separator's own to compare like with like.
    """
    import torch

    cfg = net.cfg
    n_fft, hop = cfg.n_fft, cfg.hop_length
    window = torch.hann_window(n_fft)
    W = cfg.window_samples
    n = audio.shape[0]
    plan = plan_for(cfg, n, "authors") if trim is None else plan_for(cfg, n, "overlap", 0.0, trim)
    track = np.ascontiguousarray(audio.T, dtype=np.float32)  # (2, samples)
    chunks = torch.from_numpy(np.concatenate([w for _, w in window_batches(track, plan, plan.n_windows)]))  # (n, 2, W)
    out = {}
    with torch.inference_mode():
        for c, name in enumerate(cfg.sources):
            ola, pieces = OverlapAdd(plan, 1, 2), []
            for i in range(0, chunks.shape[0], batch_size):
                batch = chunks[i : i + batch_size]
                b = batch.shape[0]
                z = torch.stft(batch.reshape(b * 2, W), n_fft, hop, window=window, center=True,
                               pad_mode="reflect", return_complex=True)  # (2b, F, T)
                z = z.reshape(b, 2, *z.shape[1:]).transpose(-1, -2)  # (b, 2, T, F)
                spec = torch.cat([z.real, z.imag], 1)  # (b, 4, T, F)
                y = net(spec, torch.full((b,), c, dtype=torch.long))
                zy = torch.complex(y[:, :2], y[:, 2:]).transpose(-1, -2).reshape(b * 2, -1, z.shape[2])
                wave = torch.istft(zy, n_fft, hop, window=window, center=True, length=W).reshape(b, 2, -1)
                pieces += [ola.add(i + j, w[None].numpy()) for j, w in enumerate(wave)]
            out[name] = np.concatenate(pieces, axis=-1)[0].T.copy()
    return out
