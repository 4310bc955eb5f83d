"""Tensor shapes against a configuration, without torch: what ``convert`` checks before it writes anything.

The full check is building the network (:func:`.families.build_network`, which needs torch); without torch,
the sizes every family's tensors carry are compared with the configuration: the channel count (``first_conv``,
``last_conv``, every TFC layer), the TFC depth and kernel, the number of encoder and decoder blocks, the
embedding width and the first block's frequency bins. A ``config.yaml`` that names another network than the
checkpoint holds fails here in one line instead of writing an inconsistent weight file.
"""

from __future__ import annotations

import re

from .errors import WeightFileError


def _shape(tensors: dict, name: str):
    value = tensors.get(name)
    return None if value is None else tuple(value.shape)


def check_shapes(config, tensors: dict, path=None) -> None:
    """Raise :class:`WeightFileError` naming ``path`` where a tensor's shape contradicts ``config``."""
    C, E = config.internal_channels, config.embedding_dim
    expect = {
        "first_conv.0.weight": lambda s: s[0] == C and s[1] == 4,
        "last_conv.0.weight": lambda s: s[0] == 4 and s[1] == C,
        "embedding.weight": lambda s: s == (len(config.sources), E),
    }
    for j in range(config.n_internal_layers):
        expect[f"encoders.0.tfc.H.{j}.0.weight"] = (
            lambda s, j=j: s == (C, C * (j + 1), config.kernel_size_t, config.kernel_size_f))
    for name, fits in expect.items():
        shape = _shape(tensors, name)
        if shape is None:
            raise WeightFileError(path, f"tensors do not match the configuration: no {name}, which its network has")
        if not fits(shape):
            raise WeightFileError(path, f"tensors do not match the configuration: {name} is {shape} (internal_channels "
                                        f"{C}, n_internal_layers {config.n_internal_layers}, kernel "
                                        f"{config.kernel_size_t}x{config.kernel_size_f}, embedding_dim {E})")
    deeper = f"encoders.0.tfc.H.{config.n_internal_layers}.0.weight"
    if deeper in tensors:
        raise WeightFileError(path, f"tensors do not match the configuration: {deeper} exists, so the TFC blocks are "
                                    f"deeper than n_internal_layers {config.n_internal_layers}")
    for part, want in (("encoders", config.n_levels), ("decoders", config.n_levels)):
        found = {int(m.group(1)) for k in tensors if (m := re.match(rf"{part}\.(\d+)\.", k))}
        if found != set(range(want)):
            raise WeightFileError(path, f"tensors do not match the configuration: {len(found)} {part} blocks, "
                                        f"n_blocks {config.n_blocks} means {want}")
    bins = config.n_fft // 2
    first = [v.shape for k, v in tensors.items() if k.startswith("encoders.0.") and v.ndim == 2]
    if first and not any(bins in s for s in first):
        raise WeightFileError(path, f"tensors do not match the configuration: the first block's frequency layers "
                                    f"take {sorted({max(s) for s in first})} bins, n_fft {config.n_fft} means {bins}")
