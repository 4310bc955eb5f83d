"""Read the authors' Hydra ``config.yaml`` (LaSAFT-Net-v2 code base) as data.

The v2 code base stores no hyper-parameters in its checkpoints; the network is
described by the Hydra run configuration shipped beside each one
(``lasaft/pretrained/v2_light/config.yaml`` next to ``epoch=669.ckpt``). This
module reads it without Hydra or OmegaConf: a safe YAML load of a bounded file,
``${a.b.c}`` references resolved against the document (depth-bounded, so a
cycle is refused), resolvers such as ``${oc.env:…}`` or ``${hydra:…}`` never
evaluated (they are only ever outside the ``model`` node that is read), and
``_target_`` strings compared as names, never imported.
"""

from __future__ import annotations

import os
import re

from .config_v2 import V2Config
from .errors import WeightFileError

#: A config.yaml is a few kB (the authors' are 3-4 kB); a larger one is refused before it is parsed.
MAX_BYTES = 64 << 10
#: Reference chains longer than this are a cycle or a crafted file.
MAX_DEPTH = 16
CONFIG_NAME = "config.yaml"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
#: The authors' classes that build a supported network, by their last dotted name.
_TARGETS = {
    "model": "AbstractLaSAFTNet",
    "model.spec2spec": "BaseNet",
    "model.spec2spec.mk_block_f": "MkTFCLightSAFTGPoCM",
    "model.spec2spec.mk_ds_f": "MKConvDS",
    "model.spec2spec.mk_us_f": "MkConvTransposeUS",
}
# Values the network built here assumes (key path -> value).
_FIXED = {
    "model.spec_type": "complex",
    "model.spec_est_mode": "mapping",
    "model.norm": "bn",
    "model.spec2spec.input_channels": 4,
    "model.spec2spec.last_activation": "identity",
    "model.spec2spec.control_vector_type": "embedding",
    "model.spec2spec.control_input_dim": 4,
    "model.spec2spec.condition_to": "decoder",
    "model.spec2spec.norm": "bn",
    "model.spec2spec.mk_block_f.norm": "bn",
    "model.spec2spec.mk_ds_f.norm": "bn",
    "model.spec2spec.mk_us_f.norm": "bn",
}
# Keys that must repeat another key's value (the authors write them as references).
_SAME = {
    "model.spec2spec.n_fft": "model.n_fft",
    "model.spec2spec.mk_block_f.gr": "model.spec2spec.internal_channels",
    "model.spec2spec.mk_block_f.num_layers": "model.spec2spec.n_internal_layers",
    "model.spec2spec.mk_block_f.condition_dim": "model.spec2spec.embedding_dim",
    "model.spec2spec.mk_block_f.query_listen": "model.query_listen",
    "model.spec2spec.mk_block_f.key_listen": "model.key_listen",
}
# V2Config field -> key path.
_FIELDS = {
    "n_fft": "model.n_fft", "hop_length": "model.hop_length", "num_frame": "model.num_frame",
    "query_listen": "model.query_listen", "key_listen": "model.key_listen",
    "n_blocks": "model.spec2spec.n_blocks", "internal_channels": "model.spec2spec.internal_channels",
    "n_internal_layers": "model.spec2spec.n_internal_layers", "embedding_dim": "model.spec2spec.embedding_dim",
    "first_conv_activation": "model.spec2spec.first_conv_activation",
    "kernel_size_t": "model.spec2spec.mk_block_f.kt", "kernel_size_f": "model.spec2spec.mk_block_f.kf",
    "bn_factor": "model.spec2spec.mk_block_f.bn_factor", "min_bn_units": "model.spec2spec.mk_block_f.min_bn_units",
    "tfc_tdf_bias": "model.spec2spec.mk_block_f.bias", "activation": "model.spec2spec.mk_block_f.activation",
    "num_tdfs": "model.spec2spec.mk_block_f.num_tdfs", "dk": "model.spec2spec.mk_block_f.dk",
    "ds_activation": "model.spec2spec.mk_ds_f.activation", "us_activation": "model.spec2spec.mk_us_f.activation",
}  # fmt: skip


class _Document:
    """A parsed YAML document with Hydra-style ``${path}`` references resolved on demand."""

    def __init__(self, data, path):
        self.data, self.path = data, path

    def _raw(self, key: str):
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        return self._raw(key) is not _MISSING

    def get(self, key: str, depth: int = 0):
        """The value at ``key`` with references followed; a :class:`WeightFileError` for anything else."""
        if depth > MAX_DEPTH:
            raise WeightFileError(self.path, f"references nest deeper than {MAX_DEPTH} at '{key}' (a cycle?)")
        value = self._raw(key)
        if value is _MISSING:
            raise WeightFileError(self.path, f"has no '{key}'")
        if isinstance(value, str) and "${" in value:
            match = _REFERENCE.fullmatch(value)
            if not match:  # a resolver (oc.env, hydra, ...) or text around a reference: never evaluated
                raise WeightFileError(self.path, f"'{key}' is {value!r:.60}, which this reader does not evaluate "
                                                 "(only ${a.b.c} references to values in the file)")
            return self.get(match.group(1), depth + 1)
        return value


_MISSING = object()


def find_config(checkpoint, config=None):
    """The configuration for ``checkpoint``: ``config`` if given, else ``config.yaml`` or ``NAME.config.yaml``
    beside it, else None."""
    if config is not None:
        return os.fspath(config)
    folder = os.path.dirname(os.path.abspath(checkpoint))
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    for name in (f"{stem}.config.yaml", CONFIG_NAME):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _loader():
    """PyYAML's pure-Python safe loader, refusing aliases: the authors' files use none (Hydra writes ``${...}``
    references instead), and an alias is how a 4 kB file expands to gigabytes (nested aliases) or never ends
    (an alias inside its own anchor)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasRefused(f"uses a YAML alias (*{event.anchor} at line {event.start_mark.line + 1}); "
                                    "an authors' config.yaml has none, and aliases can expand without bound")
            return super().compose_node(parent, index)

    return NoAliasLoader


class _AliasRefused(Exception):
    pass


def read_hydra_config(path) -> V2Config:
    """The network described by an authors' ``config.yaml``, or one :class:`WeightFileError` line naming it."""
    try:
        import yaml
    except ImportError:
        raise WeightFileError(path, "reading a LaSAFT-Net-v2 config.yaml needs PyYAML: pip install pyyaml") from None

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(path, "no such configuration file (a regular file is needed)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise WeightFileError(path, f"cannot be read ({err.strerror or err})") from None
    if len(raw) > MAX_BYTES:
        raise WeightFileError(path, f"is over {MAX_BYTES >> 10} kB; an authors' config.yaml is a few kB")
    try:
        text = raw.decode("utf-8")
        # the pure-Python safe loader: plain scalars, lists and mappings only, and deep nesting ends in a
        # RecursionError (libyaml's C parser overflows its stack on "[" * 50000 and takes the process down)
        data = yaml.load(text, Loader=_loader())
    except UnicodeDecodeError:
        raise WeightFileError(path, "is not UTF-8 text") from None
    except _AliasRefused as err:
        raise WeightFileError(path, str(err)) from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as err:
        raise WeightFileError(path, f"is not valid YAML ({' '.join(str(err).split())[:160]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise WeightFileError(path, "has no 'model' section: not a LaSAFT-Net-v2 Hydra configuration")
    return config_from_document(_Document(data, path))


def config_from_document(doc: _Document) -> V2Config:
    path = doc.path
    for key, want in _TARGETS.items():
        target = doc.get(f"{key}._target_")
        if not isinstance(target, str) or target.rsplit(".", 1)[-1] != want:
            raise WeightFileError(path, f"'{key}._target_' is {target!r:.80}; supported: ...{want} "
                                        "(LightSAFT-Net+, LaSAFT-Net-v2 light/large)")
    for key, want in _FIXED.items():
        if doc.has(key) and doc.get(key) != want:
            raise WeightFileError(path, f"'{key}' is {doc.get(key)!r:.40}; only {want!r} is supported")
    for key, other in _SAME.items():
        if doc.has(key) and doc.get(key) != doc.get(other):
            raise WeightFileError(path, f"'{key}' ({doc.get(key)!r:.40}) differs from '{other}' ({doc.get(other)!r:.40})")
    values = {field: doc.get(key) for field, key in _FIELDS.items()}
    name = doc.get("model.name") if doc.has("model.name") else ""
    values["name"] = name if isinstance(name, str) else str(name)[:100]
    try:
        return V2Config(**values)
    except (TypeError, ValueError) as err:
        raise WeightFileError(path, f"invalid model configuration: {err}") from None
