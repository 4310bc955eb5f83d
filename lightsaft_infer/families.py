"""The network families behind the one :class:`~.separator.Separator` (needs torch).

Each family is a sibling module of the same shape: a configuration
(:mod:`.config`, :mod:`.config_v2`), the authors' network with their parameter
names, and a frozen all-sources graph that the torch backend runs and the ONNX
export traces. This module picks the pair for a configuration.

* ``lasaft-v1`` (:mod:`.network`): the v1 code base — MDX LightSAFT (small,
  medium), LaSAFT large, the paper's GPoCM-LaSAFT.
* ``lasaft-v2`` (:mod:`.network_v2`): the LaSAFT-Net-v2 code base —
  LightSAFT-Net+, LaSAFT-Net-v2 light and large.
"""

from __future__ import annotations


def build_network(config, tensors: dict, path=None):
    """The authors' network for ``config`` with ``tensors`` loaded (eval mode): ``forward(spec, condition)``."""
    if config.family == "lasaft-v2":
        from .network_v2 import ConditionedUNetV2

        return ConditionedUNetV2.from_tensors(config, tensors, path)
    from .network import ConditionedUNet

    return ConditionedUNet.from_tensors(config, tensors, path)


def frozen_graph(net, sources=None):
    """The all-sources graph of a network from :func:`build_network`: ``spec (B, 4, T, F) -> (B, S, 4, T, F)``."""
    if net.cfg.family == "lasaft-v2":
        from .network_v2 import SeparationGraphV2

        return SeparationGraphV2(net, sources)
    from .network import SeparationGraph

    return SeparationGraph(net, sources)
