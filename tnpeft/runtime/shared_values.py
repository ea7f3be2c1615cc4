"""The values of an adapter's shared tensors: one module per model and adapter, read by every
layer's :class:`~tnpeft.runtime.GraphModule` that views them."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from tnpeft.graph.names import check_elements
from tnpeft.graph.nodes import Node
from tnpeft.runtime.node_values import build_param, shared_weight


class SharedValues(nn.Module):
    """One parametrization module per shared tensor, registered under its key (``<key>.weight``).

    Build it from :func:`tnpeft.graph.shared_nodes` of the adapter's graphs and hand it to every
    layer's ``GraphModule(graph, shared=values)``: each reads its leading block, so one set of
    values serves all layers — one copy in the state dict, in the saved file and in the
    optimizer, gradients summed over the layers by autograd."""

    _specs: dict[str, Node]

    def __init__(self, nodes: Mapping[str, Node], dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, rng: torch.Generator | None = None):
        super().__init__()
        for key, node in nodes.items():
            check_elements(key, "its tensor", node.shared_elements)
            self.add_module(key, build_param(node, dtype, device, rng))
        self.__dict__["_specs"] = dict(nodes)

    @property
    def specs(self) -> dict[str, Node]:
        """``key → node`` of every shared tensor held (its whole shape, init, trainable)."""
        return self._specs

    def tensor(self, key: str) -> torch.Tensor:
        """The whole shared tensor ``key``."""
        return shared_weight(self, key)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {tuple(n.sizes)}{'' if n.trainable else ' frozen'}" for k, n in self.specs.items())
