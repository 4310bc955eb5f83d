"""Every network family's configuration class by the name a weight file's configuration carries.

The registry sits above both families' modules (:mod:`.config` for ``lasaft-v1``, :mod:`.config_v2` for
``lasaft-v2``), so neither imports the other to find it. A configuration read from a file is bounded and
parsed here: a crafted JSON text is one :class:`~.errors.WeightFileError` line, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .config import ModelConfig
from .config_v2 import V2Config
from .errors import WeightFileError

#: ``family`` -> configuration class (v1 files carry no family: ``lasaft-v1``).
FAMILIES = {ModelConfig.family: ModelConfig, V2Config.family: V2Config}
#: A network's configuration is under 1 kB of JSON; anything over this is refused before it is parsed.
MAX_JSON = 64 << 10


def from_dict(d: Mapping[str, Any], path=None):
    """The configuration of the family ``d`` names, or :class:`WeightFileError` naming ``path``."""
    family = d.get("family", ModelConfig.family)
    if not isinstance(family, str) or family not in FAMILIES:
        raise WeightFileError(path, f"model family {family!r:.40} is not one of {sorted(FAMILIES)}")
    return FAMILIES[family].from_dict(d, path)


def from_json(text: str | None, path=None):
    """The configuration stored as JSON in a weight file's metadata."""
    if not text:
        raise WeightFileError(path, "carries no model configuration (metadata key 'config' is missing)")
    if not isinstance(text, str) or len(text) > MAX_JSON:
        raise WeightFileError(path, f"model configuration is over {MAX_JSON >> 10} kB; a network's is under 1 kB")
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise WeightFileError(path, f"model configuration is not valid JSON ({reason})") from None
    if not isinstance(d, dict):
        raise WeightFileError(path, "model configuration is not a JSON object")
    return from_dict(d, path)
