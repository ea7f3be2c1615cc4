"""Names and sizes in the graph IR: which names nodes, hyper-networks and indices may have, and
the size budgets every node is checked against (:mod:`tnpeft.params.limits`)."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from tnpeft.errors import BudgetError, GraphError, IndexSizeError
from tnpeft.params import limits

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: names no node or hyper-network may have: each becomes a submodule of the torch module holding
#: the graph's values (:class:`tnpeft.runtime.GraphModule`), so it must not shadow one of its attributes
RESERVED_NAMES = frozenset(dir(nn.Module)) | frozenset(vars(nn.Module())) | {
    "graph", "optimize", "param_dtype", "tensor", "generated_values", "clear_generated", "plan", "dense",
    "accumulate", "to_quimb", "post", "specs", "shared"}
#: the prefix of index names the contraction engine keeps for itself (the batch index ``__batch__``)
RESERVED_INDEX_PREFIX = "__"


def reserved_name(name: str) -> bool:
    """Whether a node or hyper-network may not be called ``name``: it starts with ``_`` or is an
    attribute of torch's modules (also one another library added to ``nn.Module`` after import)."""
    return name.startswith("_") or name in RESERVED_NAMES or hasattr(nn.Module, name)


def check_name(what: str, name: Any, node: str | None = None) -> None:
    """Raise :class:`GraphError` unless ``name`` is a valid, unreserved name for a ``what``
    (``"node"``, ``"hyper-network"`` or ``"index"``; ``node`` names the node an index belongs to)."""
    own = what in ("node", "hyper-network", "shared tensor")
    at = (name if isinstance(name, str) else None) if own else node
    where = f"node {node!r}: " if node and not own else ""
    if not isinstance(name, str) or not _NAME.match(name):
        raise GraphError(
            f"{where}{what} name {name!r} is not valid; expected a non-empty identifier "
            "(letters, digits, underscores, not starting with a digit)",
            node=at, index=name if what == "index" and isinstance(name, str) else None,
        )
    if own and reserved_name(name):
        raise GraphError(f"{what} name {name!r} is reserved: it would shadow an attribute of the torch module "
                         "that holds the graph's values; names must not start with '_' nor be one of torch's "
                         "module attributes (training, forward, state_dict, ...)", node=name)
    if what == "index" and name.startswith(RESERVED_INDEX_PREFIX):
        raise GraphError(f"{where}index name {name!r} is reserved: names starting with "
                         f"{RESERVED_INDEX_PREFIX!r} belong to the contraction engine (its batch index "
                         "is '__batch__')", node=node, index=name)


def check_size(node: str, index: str, size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= limits.MAX_INDEX_SIZE:
        raise IndexSizeError(
            f"node {node!r}: index {index!r} has size {size!r}; expected a positive integer up to "
            f"{limits.MAX_INDEX_SIZE:,}", node=node, index=index,
        )
    return size


def check_count(what: str, n: int) -> None:
    """Raise :class:`BudgetError` if a graph would have more than
    :data:`~tnpeft.params.limits.MAX_NODES` ``what`` (nodes, hyper-networks)."""
    if n > limits.MAX_NODES:
        raise BudgetError(f"a graph has {n:,} {what}; the limit is {limits.MAX_NODES:,} "
                          "(tnpeft.params.limits.MAX_NODES)")


def check_elements(node: str, what: str, count: int) -> None:
    """Raise :class:`BudgetError` if one tensor of ``node`` would have more than
    :data:`~tnpeft.params.limits.MAX_TENSOR_ELEMENTS` elements."""
    if count > limits.MAX_TENSOR_ELEMENTS:
        raise BudgetError(f"node {node!r}: {what} would have {count:,} elements; the limit is "
                          f"{limits.MAX_TENSOR_ELEMENTS:,} (tnpeft.params.limits.MAX_TENSOR_ELEMENTS)", node=node)


_ADAPTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
#: adapter names that would shadow an attribute of the ``nn.ModuleDict`` holding a layer's adapters
RESERVED_ADAPTER_NAMES = frozenset(dir(nn.ModuleDict)) | frozenset(vars(nn.ModuleDict()))


def adapter_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name an adapter (``None`` if it can): a non-empty name of letters,
    digits, ``_`` and ``-``, not starting with ``_`` or a digit, and not an attribute of torch's
    ``nn.ModuleDict`` (``training``, ``keys``, ...)."""
    if not isinstance(name, str) or not _ADAPTER_NAME.match(name):
        return (f"adapter name {name!r} must be a non-empty name of letters, digits, '_' or '-' (no dots), "
                "not starting with a digit")
    if name.startswith("_") or name in RESERVED_ADAPTER_NAMES or hasattr(nn.ModuleDict, name):
        return (f"adapter name {name!r} is reserved: it would shadow an attribute of the torch module that holds a "
                "layer's adapters; names must not start with '_' nor be one of its attributes (training, keys, ...)")
    return None
