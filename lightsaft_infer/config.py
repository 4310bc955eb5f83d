"""Model configuration: the authors' hyper-parameters, validated.

The same dictionary travels in every weight file (safetensors metadata, ONNX
metadata), so a file always says which network it holds.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from .errors import WeightFileError

#: Condition index -> source name (fixed by the authors' training).
SOURCES = ("vocals", "drums", "bass", "other")
SAMPLE_RATE = 44100
BLOCK_TYPES = ("lightsaft", "lasaft")

# Hyper-parameters the authors' checkpoints carry that must hold this value
# for the network built here to be the one that was trained.
_FIXED = {
    "spec_type": "complex",
    "spec_est_mode": "mapping",
    "input_channels": 4,
    "first_conv_activation": "relu",
    "last_activation": "identity",
    "tfc_tdf_activation": "relu",
    "control_vector_type": "embedding",
    "control_input_dim": 4,
    "condition_to": "decoder",
    "control_type": "dense",
    "pocm_type": "matmul",
    "pocm_norm": "batch_norm",
    "t_down_layers": None,
    "f_down_layers": None,
}


# What the architecture can mean, with room for larger models than the authors' (n_fft 4096, 24
# channels, 9 blocks): every value a weight file claims is checked against these before anything is
# computed from it, so that a crafted file cannot make the loader hang (``2 ** n_levels``) or allocate
# gigabytes. ``n_blocks`` is further bounded by ``n_fft`` (each level halves the frequency axis).
LIMITS = {
    "n_fft": (16, 16384), "hop_length": (1, 16384), "num_frame": (2, 4096), "n_blocks": (1, 27),
    "internal_channels": (1, 512), "n_internal_layers": (1, 32), "kernel_size_t": (1, 15), "kernel_size_f": (1, 15),
    "bn_factor": (1, 16384), "min_bn_units": (1, 16384), "num_tdfs": (1, 256), "dk": (1, 1024),
    "embedding_dim": (1, 4096), "control_n_layer": (1, 16), "sample_rate": (8000, 384000),
}  # fmt: skip
#: Values in the largest activation of one window (channels x layers x frames x bins): 2**27 float32 =
#: 512 MB, 3.5x the authors' largest configuration.
MAX_ACTIVATION = 2**27
#: Width of the dense control block's last layer (the authors' largest: 64 x 2**5 = 2048).
MAX_CONTROL_WIDTH = 2**15


def check_config(cfg, problems: list) -> None:
    """Bound every value of a network configuration (``cfg``: a frozen dataclass of either family) by what
    the architecture can mean; raise ``ValueError`` listing ``problems`` (with the caller's own)."""
    object.__setattr__(cfg, "sources", tuple(cfg.sources) if isinstance(cfg.sources, (list, tuple)) else ())
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append(f"{field.name} must be a positive integer, not {value!r:.40}")
        elif field.type == "bool" and not isinstance(value, bool):
            problems.append(f"{field.name} must be true or false, not {value!r:.40}")
        elif field.name in LIMITS and not LIMITS[field.name][0] <= value <= LIMITS[field.name][1]:
            low, high = LIMITS[field.name]
            problems.append(f"{field.name} = {value!r:.40} is outside what this architecture can mean ({low}..{high})")
    if not problems:
        size = cfg.internal_channels * (cfg.n_internal_layers + 1) * cfg.num_frame * cfg.n_bins
        if size > MAX_ACTIVATION:
            problems.append(f"internal_channels x (n_internal_layers + 1) x num_frame x (n_fft/2 + 1) = {size:,} "
                            f"values per window exceeds {MAX_ACTIVATION:,}")
    if not problems:
        if cfg.n_fft % 2 or cfg.n_fft % cfg.hop_length:
            problems.append(f"n_fft {cfg.n_fft} must be even and a multiple of hop_length {cfg.hop_length}")
        if cfg.n_blocks % 2 != 1:
            problems.append(f"n_blocks must be odd, not {cfg.n_blocks}")
        elif cfg.num_frame % cfg.frame_multiple:
            problems.append(f"num_frame {cfg.num_frame} must be a multiple of {cfg.frame_multiple}")
        if (cfg.n_fft // 2) % (2 ** cfg.n_levels):
            problems.append(f"n_fft/2 must be divisible by 2**{cfg.n_levels}")
        if cfg.kernel_size_t % 2 == 0 or cfg.kernel_size_f % 2 == 0:
            problems.append("kernel sizes must be odd")
    if len(cfg.sources) != 4 or set(cfg.sources) != set(SOURCES):  # also bounds a crafted list
        problems.append(f"sources must be a permutation of {SOURCES}")
    if problems:
        raise ValueError("; ".join(problems))



@dataclasses.dataclass(frozen=True)
class ConfigSizes:
    """The sizes every family's configuration has (names as in the v1 checkpoints' hyper-parameters), what
    is derived from them, and the (de)serialisation."""

    n_fft: int
    hop_length: int
    num_frame: int
    n_blocks: int
    internal_channels: int
    n_internal_layers: int
    kernel_size_t: int
    kernel_size_f: int
    bn_factor: int
    min_bn_units: int
    tfc_tdf_bias: bool
    num_tdfs: int
    dk: int
    embedding_dim: int

    #: The network family (v1 weight files carry none; the LaSAFT-Net-v2 code base's say ``lasaft-v2``).
    family = "lasaft-v1"

    @property
    def n_levels(self) -> int:
        """Number of encoder (and decoder) blocks, ``n_blocks // 2``."""
        return self.n_blocks // 2

    @property
    def frame_multiple(self) -> int:
        """Frame counts fed to the net must be a multiple of this (``2 ** n_levels``)."""
        return 2 ** self.n_levels

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def window_samples(self) -> int:
        """Samples in one ``num_frame`` window: ``hop * (num_frame - 1)``."""
        return self.hop_length * (self.num_frame - 1)

    def level_bins(self, level: int) -> int:
        """Frequency bins inside the U-Net at ``level`` (0 = full resolution ``n_fft/2``)."""
        return (self.n_fft // 2) >> level

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sources"] = list(self.sources)
        if self.family != ConfigSizes.family:  # v1 files stay as they were
            d["family"] = self.family
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def _from_fields(cls, d: Mapping[str, Any], path=None):
        """``cls`` from a dictionary of its fields; :class:`WeightFileError` naming ``path`` otherwise."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise WeightFileError(path, f"model configuration lacks {', '.join(missing)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError) as err:
            raise WeightFileError(path, f"invalid model configuration: {err}") from None


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigSizes):
    """Hyper-parameters of a GPoCM-conditioned U-Net with LightSAFT or LaSAFT blocks (and the sizes of
    :class:`ConfigSizes`)."""

    block: str  # "lightsaft" or "lasaft"
    control_n_layer: int = 4
    sample_rate: int = SAMPLE_RATE
    sources: tuple = SOURCES

    def __post_init__(self):
        problems = []
        if self.block not in BLOCK_TYPES:
            problems.append(f"block must be one of {BLOCK_TYPES}, not {self.block!r}")
        check_config(self, problems)
        if self.embedding_dim << (self.control_n_layer - 1) > MAX_CONTROL_WIDTH:  # the GPoCM generator's width
            raise ValueError(f"embedding_dim x 2**(control_n_layer - 1) exceeds {MAX_CONTROL_WIDTH}")

    #: The chunking ``--mode authors`` means for this family (:mod:`.chunking`).
    authors_chunking = "authors"

    @property
    def title(self) -> str:
        """The network's name for people."""
        return "LightSAFT" if self.block == "lightsaft" else "LaSAFT"

    def bottleneck(self, f: int) -> int:
        """Bottleneck units of a LightSAFT/LaSAFT block working on ``f`` bins."""
        if self.block == "lightsaft":
            return max(f // self.bn_factor, self.min_bn_units)
        return max(f * self.num_tdfs // self.bn_factor, self.min_bn_units)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path=None) -> "ModelConfig":
        """Build from our own dictionary; raise :class:`WeightFileError` naming ``path`` (a file of any family:
        :func:`.configs.from_dict`)."""
        return cls._from_fields(d, path)

    @classmethod
    def from_hyper_parameters(cls, hp: Mapping[str, Any], block: str, path=None) -> "ModelConfig":
        """Build from the authors' Lightning ``hyper_parameters`` dictionary."""
        for key, want in _FIXED.items():
            if key in hp and hp[key] != want:
                raise WeightFileError(path, f"hyper-parameter {key}={hp[key]!r} is not supported (expected {want!r})")
        return cls.from_dict({**hp, "block": block}, path)
