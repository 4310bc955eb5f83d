"""Configuration of the LaSAFT-Net-v2 family: LightSAFT-Net+ and LaSAFT-Net-v2 light / large.

The authors' v2 code base (ws-choi/LASAFT-Net-v2) builds these networks from a
Hydra ``config.yaml`` (read by :mod:`.hydra_config`); this is that
configuration's architecture, validated like the v1 family's
(:func:`.config.check_config`). Weight files say ``"family": "lasaft-v2"``.

What differs from v1 (``docs/networks.md``): unconditioned TFC-TDF encoder and
mid blocks, a weight-normalised GPoCM generator per decoder block, the
``(b, L)`` latent layout, activations after down/upsampling, a configurable
activation (ReLU or leaky ReLU), and attention that may listen to the mixture
(``query_listen`` / ``key_listen``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .config import SAMPLE_RATE, SOURCES, ConfigSizes, check_config

ACTIVATIONS = ("relu", "leaky_relu")
#: PyTorch's default negative slope, which the authors' ``leaky_relu`` uses.
LEAKY_SLOPE = 0.01
FAMILY = "lasaft-v2"


@dataclasses.dataclass(frozen=True)
class V2Config(ConfigSizes):
    """Hyper-parameters of a LaSAFT-Net-v2-family network: the sizes of :class:`~.config.ConfigSizes`
    (``config.yaml``'s ``mk_block_f.kt`` / ``kf`` / ``bias`` are ``kernel_size_t`` / ``_f``, ``tfc_tdf_bias``),
    the listen modes and the activations."""

    query_listen: bool
    key_listen: bool
    first_conv_activation: str = "relu"
    activation: str = "relu"  # mk_block_f: TFC, TDF, LightSAFT values and LaSIFT
    ds_activation: str = "relu"  # mk_ds_f
    us_activation: str = "relu"  # mk_us_f
    name: str = ""  # the authors' model name (model.name), for people only
    sample_rate: int = SAMPLE_RATE
    sources: tuple = SOURCES

    family = FAMILY
    #: ``--mode authors``: the v2 code base's chunking (trim 5120, half-overlapping kept parts; :mod:`.chunking`).
    authors_chunking = "authors-v2"

    def __post_init__(self):
        problems = []
        for key in ("first_conv_activation", "activation", "ds_activation", "us_activation"):
            if getattr(self, key) not in ACTIVATIONS:
                problems.append(f"{key} must be one of {ACTIVATIONS}, not {getattr(self, key)!r:.40}")
        if not isinstance(self.name, str) or len(self.name) > 100:
            problems.append("name must be a string of at most 100 characters")
        check_config(self, problems)

    @property
    def title(self) -> str:
        if not self.query_listen and not self.key_listen:
            return "LightSAFT-Net+ (v2 code)"
        listen = "query and key listen" if self.query_listen and self.key_listen else (
            "query listen" if self.query_listen else "key listen")
        return f"LaSAFT-Net-v2 ({listen})"

    @property
    def block(self) -> str:
        return "lightsaft-v2"

    def bottleneck(self, f: int) -> int:
        """Bottleneck units ``b`` of the TDF / LightSAFT at ``f`` bins."""
        return max(f // self.bn_factor, self.min_bn_units)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path=None) -> "V2Config":
        return cls._from_fields(d, path)

