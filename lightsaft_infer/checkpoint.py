"""Read the authors' PyTorch Lightning checkpoints without running their pickle.

A Lightning 1.x ``.ckpt`` is a zip-format ``torch.save`` archive whose
``data.pkl`` refers to Lightning classes (e.g. the ``ModelCheckpoint``
callback used as a dictionary key). ``torch.load(weights_only=True)`` refuses
it and ``weights_only=False`` would run arbitrary code, so this module
unpickles it with an allow-list: tensors are rebuilt as numpy arrays straight
from the archive's storages, plain containers are allowed, and references to
Lightning classes become inert placeholders that refuse to be called. Any
other global (``os.system``, ``builtins.eval``, …) stops the load with
:class:`UnsafeCheckpointError`. Neither torch nor Lightning is imported.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
import zlib
from typing import Any

import numpy as np

from .config import ModelConfig
from .errors import UnsafeCheckpointError, WeightFileError
from .weights import checked_tensors

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# Names whose reference (not call) is harmless: Lightning's classes appear as
# dictionary keys of the ``callbacks`` entry.
_INERT_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
# Bounds that hold whatever the archive claims, so that a crafted file is refused in seconds and
# bounded memory: the authors' largest checkpoint holds ~54 MB of tensors (optimiser state included
# it would be ~3x that). Entries are checked against their declared size before they are inflated.
MAX_PICKLE_BYTES = 64 << 20
MAX_STORAGE_BYTES = 1 << 30  # all storages of one checkpoint together
MAX_TENSOR_DIMS = 8


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"pickle calls torch.{self.name}")


class _InertReference:
    """A Lightning class named by the pickle; referencing it is fine, calling it is not."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __repr__(self):
        return f"<reference to {self.qualname}>"

    def __call__(self, *args, **kwargs):
        raise _Refused(f"its pickle calls {self.qualname}, which this loader never runs")


class _Refused(Exception):
    pass


def _count(value, what: str, high: int) -> int:
    """A plain non-negative integer no larger than ``high`` (pickles can hold anything)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise _Refused(f"a tensor {what} of {value!r:.40} is not a count this loader accepts")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Numpy version of ``torch._utils._rebuild_tensor_v2``: a strided view, copied.

    Sizes, strides and offset are checked as exact integers before numpy sees them, and a tensor may
    not hold more elements than its storage (a stride-0 view over a few elements cannot become
    gigabytes)."""
    if not isinstance(storage, np.ndarray) or not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise _Refused("a tensor is rebuilt from something that is not a storage, size and stride")
    if len(size) != len(stride) or len(size) > MAX_TENSOR_DIMS:
        raise _Refused(f"a tensor has {len(size)} sizes and {len(stride)} strides")
    limit = storage.size
    size = tuple(_count(n, "size", limit) for n in size)
    stride = tuple(_count(s, "stride", limit) for s in stride)
    storage_offset = _count(storage_offset, "offset", limit)
    numel = 1
    for n in size:
        numel *= n
    itemsize = storage.dtype.itemsize
    if numel == 0:
        return np.zeros(size, storage.dtype)
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if needed > storage.size or numel > storage.size:
        raise _Refused(f"a tensor of size {size} and stride {stride} overruns its storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # Lightning's hparams container is a plain dict subclass.
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._storages = archive, prefix, {}
        self._bytes = 0  # storage bytes read so far

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module.startswith(_INERT_PREFIXES):
            return _InertReference(f"{module}.{name}")
        raise _Refused(f"its pickle asks for {module}.{name}; only tensors and plain containers are allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise _Refused(f"its pickle holds an unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        key = str(key)[:64]
        if key not in self._storages:
            nbytes = _count(numel, "storage size", MAX_STORAGE_BYTES) * storage_type.dtype.itemsize
            try:
                info = self._archive.getinfo(f"{self._prefix}data/{key}")
            except KeyError:
                raise _Refused(f"storage {key} is missing from the archive") from None
            # The declared size is checked before anything is inflated (a zip bomb declares its true size,
            # or is cut at the declared one by zipfile), and the total is bounded.
            if info.file_size != nbytes:
                raise _Refused(f"storage {key} is {info.file_size:,} bytes in the archive, {nbytes:,} expected")
            self._bytes += nbytes
            if self._bytes > MAX_STORAGE_BYTES:
                raise _Refused(f"its tensors exceed {MAX_STORAGE_BYTES >> 20} MB, more than any LightSAFT/LaSAFT model holds")
            with self._archive.open(info) as f:
                raw = f.read(nbytes + 1)
            if len(raw) != nbytes:
                raise _Refused(f"storage {key} holds {len(raw):,} bytes, {nbytes:,} expected")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        return self._storages[key]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle a zip-format torch checkpoint safely.

    Returns the checkpoint's top-level dictionary with every tensor as a numpy
    array. Raises :class:`UnsafeCheckpointError` if the pickle asks for anything
    outside the allow-list and :class:`WeightFileError` for unreadable files.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(path, "no such file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise WeightFileError(path, f"not a zip-format torch checkpoint ({err})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightFileError(path, "not a torch checkpoint: no single <name>/data.pkl inside the archive")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            order = archive.read(prefix + "byteorder").decode().strip()
        except KeyError:
            order = "little"
        if order != "little":
            raise WeightFileError(path, f"byte order {order!r} is not supported")
        info = archive.getinfo(pickles[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise WeightFileError(path, f"its pickle is {info.file_size:,} bytes; a checkpoint's is a few hundred kB")
        try:
            with archive.open(info) as f:
                data = f.read(MAX_PICKLE_BYTES + 1)
            obj = _RestrictedUnpickler(data, archive, prefix).load()
        except _Refused as err:
            raise UnsafeCheckpointError(path, f"refused to load: {err}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
                OverflowError, MemoryError, RecursionError, zipfile.BadZipFile, zlib.error, OSError) as err:
            raise UnsafeCheckpointError(path, f"refused to load: malformed or disallowed pickle ({err!s:.200})") from None
    if not isinstance(obj, dict):
        raise WeightFileError(path, f"checkpoint holds a {type(obj).__name__}, not a dictionary")
    return obj


_PREFIX = "spec2spec."


#: What ``convert`` reads, for the one line that refuses anything else.
SUPPORTED = ("the v1 code base's LightSAFT / LaSAFT (hyper-parameters inside the checkpoint: MDX LightSAFT, "
             "medium LightSAFT, LaSAFT large)", "the LaSAFT-Net-v2 code base's LightSAFT-Net+ and LaSAFT-Net-v2 light / "
             "large (with the config.yaml shipped beside the checkpoint)")


def convert_checkpoint(path: str | os.PathLike, config=None):
    """Turn the authors' Lightning checkpoint into ``(config, tensors)``.

    v1 code base: the configuration is the checkpoint's ``hyper_parameters``.
    LaSAFT-Net-v2 code base: it is the Hydra ``config.yaml`` the authors ship
    beside the checkpoint (``config``, else ``NAME.config.yaml`` or
    ``config.yaml`` in its folder; :mod:`.hydra_config`). Tensor names are the
    authors' module names without the ``spec2spec.`` prefix; BatchNorm's
    ``num_batches_tracked`` and the STFT window are dropped.
    """
    ckpt = read_checkpoint(path)
    state, hp = ckpt.get("state_dict"), ckpt.get("hyper_parameters")
    if not isinstance(state, dict):
        raise WeightFileError(path, f"checkpoint has no 'state_dict' (its keys: {_keys(ckpt)}); "
                                    f"supported: {'; '.join(SUPPORTED)}")
    tensors = {
        k[len(_PREFIX):]: v
        for k, v in state.items()
        if isinstance(k, str) and k.startswith(_PREFIX) and not k.endswith("num_batches_tracked") and isinstance(v, np.ndarray)
    }
    if not tensors:
        raise WeightFileError(path, f"state_dict holds no 'spec2spec.' tensors (its names: {_keys(state)}); "
                                    f"supported: {'; '.join(SUPPORTED)}")
    tensors = checked_tensors(tensors, path)
    if any(k.startswith("decoders.") and ".tfc_lightsaft." in k for k in tensors):
        from .hydra_config import find_config, read_hydra_config

        found = find_config(path, config)
        if found is None:
            raise WeightFileError(path, "a LaSAFT-Net-v2-code checkpoint stores no configuration and no config.yaml "
                                        "is beside it: pass the one the authors ship with it (--config FILE)")
        return read_hydra_config(found), tensors
    if any(".LaSAFT_bn_layer." in k for k in tensors):
        block = "lightsaft"
    elif any(".tdfs." in k for k in tensors):
        block = "lasaft"
    else:
        raise WeightFileError(path, f"state_dict is neither a LightSAFT / LaSAFT network (its tensors: {_keys(tensors)}); "
                                    f"supported: {'; '.join(SUPPORTED)}")
    if not isinstance(hp, dict):
        raise WeightFileError(path, "a v1-code checkpoint without its 'hyper_parameters' dictionary")
    return ModelConfig.from_hyper_parameters(hp, block, path), tensors


def _keys(d: dict, n: int = 4) -> str:
    """The first ``n`` keys of ``d``, for a one-line description."""
    names = [str(k)[:60] for k in list(d)[:n]]
    return ", ".join(names) + (", ..." if len(d) > n else "") if names else "none"
