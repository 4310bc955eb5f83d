"""The project's weight file: safetensors with the model configuration inside.

Layout: tensors named as in the authors' network (``encoders.0.tfc.H.3.0.weight``
…, without the ``spec2spec.`` prefix) and metadata
``{"format": "lightsaft-infer", "format_version": "1", "config": <json>}``.
Loading needs numpy and safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import os

import numpy as np

from . import configs
from .config import ModelConfig
from .errors import WeightFileError
from .files import atomic_path, make_dirs, publish, remove_empty

FORMAT = "lightsaft-infer"
FORMAT_VERSION = "1"


def checked_tensors(tensors: dict, path=None) -> dict[str, np.ndarray]:
    """``tensors`` as contiguous float32, or :class:`WeightFileError`: every weight of this network is a
    floating-point number, and a NaN or infinite one would make every stem NaN (or silence)."""
    out = {}
    for name, value in tensors.items():
        value = np.asarray(value)
        if value.dtype.kind != "f":
            raise WeightFileError(path, f"tensor {name} holds {value.dtype} values; the network's weights are floating point")
        value = np.ascontiguousarray(value, dtype=np.float32)
        if not np.isfinite(value).all():
            raise WeightFileError(path, f"tensor {name} holds NaN or infinite values")
        out[name] = value
    return out


def save_weights(path: str | os.PathLike, config: ModelConfig, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` and ``config`` to ``path`` atomically (no partial file on failure), byte for byte the
    same file for the same weights (see :func:`write_safetensors`)."""
    created = make_dirs(os.path.dirname(os.path.abspath(path)))
    tmp = atomic_path(path)
    try:
        write_safetensors(tmp, tensors, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json()})
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
            remove_empty(created)


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """The safetensors layout (8-byte little-endian header length, JSON header padded with spaces to 8 bytes,
    then the data), written with the metadata's keys and the tensors in sorted order. The safetensors
    library's own writer orders the metadata through a hash map, so two conversions of one checkpoint gave
    different bytes and a converted model had no stable hash; the files it reads are the same format."""
    import json
    import struct

    arrays = {name: np.ascontiguousarray(tensors[name], dtype="<f4") for name in sorted(tensors)}
    header, offset = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}, 0
    for name, value in arrays.items():
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for value in arrays.values():
            f.write(value.tobytes())


def weights_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 of a network's fp32 weights (names, shapes and values; independent of the file's layout),
    recorded in derived models (the int8 IR) so that a model made from other weights is caught."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        value = np.ascontiguousarray(tensors[name], dtype=np.float32)
        h.update(f"{name}:{value.shape}\n".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def read_config(path: str | os.PathLike) -> ModelConfig:
    """Only the configuration of a weight file (cheap: reads the header)."""
    return _open(path, tensors=False)[0]


def load_weights(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Return ``(config, tensors)`` of a weight file, or raise :class:`WeightFileError`."""
    return _open(path, tensors=True)


def _open(path, tensors: bool):
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(path, "no such weight file")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise WeightFileError(path, f"not a {FORMAT} weight file (metadata 'format' is {meta.get('format')!r})")
            if meta.get("format_version") != FORMAT_VERSION:
                raise WeightFileError(path, f"weight format version {meta.get('format_version')!r} is not supported")
            config = configs.from_json(meta.get("config"), path)
            arrays = {k: f.get_tensor(k) for k in f.keys()} if tensors else None
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise WeightFileError(path, f"not a readable safetensors file ({err})") from None
    return config, (None if arrays is None else checked_tensors(arrays, path))
