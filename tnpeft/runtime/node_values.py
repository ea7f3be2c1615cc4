"""The values of single nodes: the parametrization module a node's kind builds, and where a shared
node reads its tensor (its block of a value held once per adapter)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from tnpeft.errors import GraphError
from tnpeft.graph.basis import Basis, Fourier
from tnpeft.graph.nodes import Dense, Diagonal, Node, Unitary
from tnpeft.graph.sharing import full_node
from tnpeft.params import UNITARY_PARAMS, BasisVector, DenseParam, DiagonalParam, FourierBasis
from tnpeft.params.unitary import FrameModule, FrameScope

#: where a shared node reads its tensor: (the module holding it, its key there, the node's leading block)
SharedView = tuple[nn.Module, str, "tuple[slice, ...] | None"]


def build_param(node: Node, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                rng: torch.Generator | None = None, scope: FrameScope | None = None) -> nn.Module:
    """The parametrization module of one node (frames join ``scope`` for batched materialization);
    ``rng`` draws the initial values."""
    if isinstance(node, Dense):
        return DenseParam(node.sizes, node.init, node.trainable, dtype, device, rng, std=node.std)
    if isinstance(node, Diagonal):
        return DiagonalParam(node.sizes[0], node.init, node.trainable, dtype, device, rng, active=node.active)
    if isinstance(node, Basis):
        return BasisVector(node.sizes[0], node.position, dtype, device)
    if isinstance(node, Fourier):
        return FourierBasis(node.sizes[0], node.sizes[1], node.spectrum, node.seed, node.side, dtype, device)
    if isinstance(node, Unitary):
        n, k = node.sizes[-2:]
        m = UNITARY_PARAMS[node.param].build(n, k, node.batch_shape, dtype=dtype, device=device, rng=rng,
                                             **node.options)
        if not node.trainable:
            m.requires_grad_(False)
        if isinstance(m, FrameModule) and scope is not None:
            m.join_scope(scope)
        return m
    raise GraphError(f"node {node.name!r} of kind {node.kind!r} has no parametrization", node=node.name)


def shared_weight(holder: nn.Module, key: str) -> torch.Tensor:
    """The whole tensor of shared value ``key`` held by ``holder`` (a parametrization's ``weight``)."""
    return cast(torch.Tensor, cast(nn.Module, holder._modules[key]).weight)


def shared_view(module: nn.Module, node: Node, shared: nn.Module | None, dtype: torch.dtype | None,
                device: torch.device | str | None, rng: torch.Generator | None, scope: FrameScope) -> SharedView:
    """Where shared ``node`` of ``module``'s graph reads its tensor: its leading block of
    ``shared``'s value (a :class:`~tnpeft.runtime.SharedValues`), or — a graph used alone, without
    ``shared`` — of the whole shared tensor, built on ``module`` under the node's name."""
    share = node.share
    if share is None:
        raise GraphError(f"node {node.name!r} is not shared", node=node.name)
    block = None if node.sizes == share.sizes else tuple(slice(0, k) for k in node.sizes)
    if shared is None:
        module.add_module(node.name, build_param(full_node(node), dtype, device, rng, scope))
        return (module, node.name, block)
    if share.key not in shared._modules:
        raise GraphError(f"node {node.name!r} views shared tensor {share.key!r}, which the shared values do not hold "
                         f"(they hold {list(shared._modules)})", node=node.name)
    return (shared, share.key, block)
