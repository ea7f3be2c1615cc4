"""The node kinds of an adapter graph.

A node has a name, an ordered tuple of index names with their sizes, and a parametrization that
turns its own free tensors into the node's tensor. Nodes are immutable values; the trainable
tensors live in :class:`tnpeft.graph.GraphModule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tnpeft.errors import BudgetError, ConfigError, GraphError, IndexSizeError, NodeKindError
from tnpeft.graph.names import check_name, check_size
from tnpeft.params import DENSE_INITS, DIAGONAL_INITS, FUNCTIONS, NONLINEAR_MAPS, UNITARY_PARAMS, limits


@dataclass(frozen=True)
class Node:
    """Base class: a named tensor with named indices. Use a concrete kind below."""

    name: str
    inds: tuple[str, ...]
    sizes: tuple[int, ...]
    trainable: bool = True

    kind: ClassVar[str] = "node"

    def __post_init__(self) -> None:
        check_name("node", self.name)
        object.__setattr__(self, "inds", tuple(self.inds))
        object.__setattr__(self, "sizes", tuple(self.sizes))
        if len(self.inds) == 0:
            raise GraphError(f"node {self.name!r} has no index; expected at least one", node=self.name)
        if len(self.inds) > limits.MAX_NODE_INDICES:
            raise BudgetError(f"node {self.name!r} has {len(self.inds)} indices; the limit is "
                              f"{limits.MAX_NODE_INDICES}", node=self.name)
        if len(self.inds) != len(self.sizes):
            raise GraphError(
                f"node {self.name!r} names {len(self.inds)} indices {self.inds} but gives "
                f"{len(self.sizes)} sizes {self.sizes}; expected one size per index",
                node=self.name,
            )
        for ind, size in zip(self.inds, self.sizes):
            check_name("index", ind, self.name)
            check_size(self.name, ind, size)
        if len(set(self.inds)) != len(self.inds):
            dup = next(i for i in self.inds if self.inds.count(i) > 1)
            raise GraphError(
                f"node {self.name!r} lists index {dup!r} twice; a diagonal is written as a "
                "Diagonal node with one index shared by its neighbours",
                node=self.name, index=dup,
            )
        if not isinstance(self.trainable, bool):
            raise GraphError(f"node {self.name!r}: trainable must be true or false, got {self.trainable!r}",
                             node=self.name)

    @property
    def elements(self) -> int:
        """Elements of the node's materialized tensor (0 for a nonlinear node, which has none)."""
        return math.prod(self.sizes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The node tensor's shape (sizes in index order)."""
        return self.sizes

    def size_of(self, index: str) -> int:
        """Size of one of the node's indices."""
        return self.sizes[self.inds.index(index)]

    def num_parameters(self) -> int:
        """Trainable scalars this node owns (closed form; allocates nothing)."""
        raise NotImplementedError

    def _extra(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the node (no values)."""
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "inds": list(self.inds),
                             "sizes": list(self.sizes)}
        if not self.trainable:
            d["trainable"] = False
        d.update(self._extra())
        return d


@dataclass(frozen=True)
class Dense(Node):
    """A free tensor, e.g. LoRA's ``A`` (indices ``("r", "in")``) and ``B`` (``("out", "r")``),
    or a tensor-train core. Parameters: the product of its sizes.

    ``init`` is one of ``"zeros"``, ``"ones"``, ``"kaiming_uniform"`` (``U(±1/√fan_in)``, the
    init of ``nn.Linear`` and peft's ``lora_A``; fan_in = product of all sizes but the first) or
    ``"normal"`` (``N(0, 1/fan_in)``, or ``N(0, std²)`` when ``std`` is given — tensor-train cores
    use it to give their product a chosen scale) or ``"small_normal"`` (``N(0, 0.02²)``).
    """

    init: str = "normal"
    std: float | None = None
    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.init, str) or self.init not in DENSE_INITS:
            raise GraphError(f"dense node {self.name!r}: unknown init {self.init!r}; expected one of "
                             f"{sorted(DENSE_INITS)}", node=self.name)
        if self.std is not None and (self.init != "normal" or isinstance(self.std, bool)
                                     or not isinstance(self.std, (int, float)) or not 0 < self.std < float("inf")):
            raise GraphError(f"dense node {self.name!r}: std={self.std!r} needs init 'normal' and a positive "
                             "finite number", node=self.name)

    def num_parameters(self) -> int:
        return math.prod(self.sizes) if self.trainable else 0

    def _extra(self) -> dict[str, Any]:
        return {"init": self.init} if self.std is None else {"init": self.init, "std": self.std}


@dataclass(frozen=True)
class Diagonal(Node):
    """A vector ``λ`` standing for ``diag(λ)``: one index, shared by the nodes it sits between
    (a hyperedge), so it contracts as an element-wise scale and never as a K×K matrix.

    ``init`` is ``"zeros"``, ``"ones"``, ``"normal"`` or ``"signs"`` (random ±1, for a fixed
    ``O(1)^K`` node with ``trainable=False``). ``active=K′`` keeps only the first ``K′`` entries
    (an intrinsic-rank mask). Parameters: ``K`` (``K′`` with a mask; 0 if frozen).
    """

    init: str = "zeros"
    active: int | None = None
    kind: ClassVar[str] = "diagonal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.inds) != 1:
            raise GraphError(f"diagonal node {self.name!r} has indices {self.inds}; expected exactly one",
                             node=self.name)
        if not isinstance(self.init, str) or self.init not in DIAGONAL_INITS:
            raise GraphError(f"diagonal node {self.name!r}: unknown init {self.init!r}; expected one of "
                             f"{list(DIAGONAL_INITS)}", node=self.name)
        if self.active is not None and (isinstance(self.active, bool) or not isinstance(self.active, int)
                                        or not 0 < self.active <= self.sizes[0]):
            raise GraphError(f"diagonal node {self.name!r}: active must be an integer in [1, {self.sizes[0]}], "
                             f"got {self.active!r}", node=self.name)

    def num_parameters(self) -> int:
        if not self.trainable:
            return 0
        return self.sizes[0] if self.active is None else self.active

    def _extra(self) -> dict[str, Any]:
        d: dict[str, Any] = {"init": self.init}
        if self.active is not None:
            d["active"] = self.active
        return d


@dataclass(frozen=True)
class Unitary(Node):
    """An ``N×K`` matrix with orthonormal columns (``UᵀU = I``) by construction.

    ``inds`` is ``(*batch, row, column)`` with sizes ``(*B, N, K)``, ``K ≤ N``: leading indices make
    a batch of independent frames (a block-diagonal rotation), shared as hyperedges with the tensors
    they meet. ``param`` names a registered parametrization (:data:`tnpeft.params.UNITARY_PARAMS`:
    ``pauli``, ``cayley``, ``exp``, ``taylor``, ``householder``, ``givens``); ``options`` are its
    options (``layers``, ``intrinsic_rank``, ``bits``, ``order``, ``init="identity"``, …).
    Parameters: the parametrization's closed form times the batch size.
    """

    param: str = "pauli"
    options: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "unitary"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.inds) < 2:
            raise GraphError(f"unitary node {self.name!r} has indices {self.inds}; expected (*batch, row, column)",
                             node=self.name)
        n, k = self.sizes[-2:]
        if k > n:
            raise IndexSizeError(
                f"unitary node {self.name!r}: column index {self.inds[-1]!r} has size {k} > row size {n}; "
                "orthonormal columns need K ≤ N", node=self.name, index=self.inds[-1])
        p = UNITARY_PARAMS.get(self.param) if isinstance(self.param, str) else None
        if p is None:
            raise NodeKindError(f"unitary node {self.name!r}: unknown param {self.param!r}; expected one of "
                                f"{sorted(UNITARY_PARAMS)}", node=self.name)
        if not isinstance(self.options, dict):
            raise GraphError(f"unitary node {self.name!r}: options must be an object, got {self.options!r}", node=self.name)
        unknown = set(self.options) - set(p.options)
        if unknown:
            raise GraphError(f"unitary node {self.name!r}: param {self.param!r} takes options "
                             f"{list(p.options)}, not {sorted(unknown)}", node=self.name)
        for opt in ("layers", "intrinsic_rank", "bits", "order"):
            v = self.options.get(opt)
            hi = limits.MAX_ANGLE_BITS if opt == "bits" else 4096
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1
                                  or v > hi):
                raise GraphError(f"unitary node {self.name!r}: option {opt!r} must be a positive integer up to {hi}, "
                                 f"got {v!r}" + (" (2^52 levels already resolve angles to float64 precision)"
                                                 if opt == "bits" else ""), node=self.name)
        init = self.options.get("init", "random")
        if init not in ("random", "identity") or (init == "identity" and not p.identity_init):
            raise GraphError(f"unitary node {self.name!r}: init {init!r} is not available for param {self.param!r}"
                             + ("; its zero-angle circuit is a ±1 diagonal, not the identity" if init == "identity" else ""),
                             node=self.name)

    def __hash__(self) -> int:
        return hash((self.name, self.inds, self.sizes, self.param, tuple(sorted(self.options.items()))))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.sizes[:-2]

    def num_parameters(self) -> int:
        if not self.trainable:
            return 0
        n, k = self.sizes[-2:]
        return math.prod(self.batch_shape) * UNITARY_PARAMS[self.param].num_parameters(n, k, **self.options)

    def _extra(self) -> dict[str, Any]:
        d: dict[str, Any] = {"param": self.param}
        if self.options:
            d["options"] = dict(self.options)
        return d


@dataclass(frozen=True)
class Nonlinear(Node):
    """A map from the indices ``inputs`` to new indices ``outputs``: either an element-wise
    function (``fn`` in :data:`tnpeft.params.FUNCTIONS`, sizes kept, no parameters) or a map with
    trainable parameters (``fn`` in :data:`tnpeft.params.NONLINEAR_MAPS`, e.g. ``"qnn"``, a
    simulated quantum neural network; ``options`` configure it).

    It splits the network into stages contracted in sequence: the stage before it must produce
    exactly its ``inputs``; ``outputs`` feed the next stage. ``inds`` is ``inputs + outputs``.
    """

    fn: str = "identity"
    n_inputs: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "nonlinear"

    def __post_init__(self) -> None:
        super().__post_init__()
        known = self.fn in FUNCTIONS or self.fn in NONLINEAR_MAPS if isinstance(self.fn, str) else False
        if not known:
            raise NodeKindError(f"nonlinear node {self.name!r}: unknown function {self.fn!r}; expected one of "
                                f"{sorted(FUNCTIONS) + sorted(NONLINEAR_MAPS)}", node=self.name)
        if isinstance(self.n_inputs, bool) or not (isinstance(self.n_inputs, int) and 0 < self.n_inputs < len(self.inds)):
            raise GraphError(f"nonlinear node {self.name!r}: needs at least one input and one output index",
                             node=self.name)
        if not isinstance(self.options, dict):
            raise GraphError(f"nonlinear node {self.name!r}: options must be an object, got {self.options!r}",
                             node=self.name)
        ins, outs = self.inputs, self.outputs
        if self.fn in NONLINEAR_MAPS:
            try:
                NONLINEAR_MAPS[self.fn].check(self.in_size, self.out_size, node=self.name, **self.options)
            except ConfigError as e:
                raise GraphError(str(e), node=self.name) from None
            return
        if self.options:
            raise GraphError(f"nonlinear node {self.name!r}: element-wise function {self.fn!r} takes no options",
                             node=self.name)
        if tuple(self.sizes[: self.n_inputs]) != tuple(self.sizes[self.n_inputs:]):
            raise IndexSizeError(
                f"nonlinear node {self.name!r}: input indices {ins} have sizes {self.sizes[:self.n_inputs]} "
                f"but output indices {outs} have sizes {self.sizes[self.n_inputs:]}; an element-wise map "
                "keeps sizes", node=self.name)

    def __hash__(self) -> int:
        return hash((self.name, self.inds, self.sizes, self.fn, tuple(sorted(self.options.items()))))

    @property
    def elements(self) -> int:
        return 0

    @classmethod
    def elementwise(cls, name: str, inputs: dict[str, int] | tuple[str, ...], outputs: tuple[str, ...],
                    fn: str = "tanh", sizes: tuple[int, ...] | None = None) -> Nonlinear:
        """Build from input index names (with sizes) and output index names.

        ``Nonlinear.elementwise("act", {"r": 8}, ("s",), fn="tanh")`` maps index ``r`` to ``s``.
        """
        if isinstance(inputs, dict):
            sizes = tuple(inputs.values())
            inputs = tuple(inputs)
        if sizes is None:
            raise GraphError(f"nonlinear node {name!r}: give input sizes", node=name)
        return cls(name, tuple(inputs) + tuple(outputs), tuple(sizes) * 2, fn=fn, n_inputs=len(inputs))

    @classmethod
    def qnn(cls, name: str, inputs: dict[str, int], outputs: dict[str, int] | tuple[str, ...],
            **options: Any) -> Nonlinear:
        """A simulated quantum neural network node (see :mod:`tnpeft.params.qnn`).

        ``Nonlinear.qnn("Q", {"h": 8}, ("g",), fusion="product", layers=2)`` reads the 8 features
        on index ``h`` as rotation angles on 3 qubits and outputs ``h ⊙ q`` on index ``g``. Output
        sizes default to the input sizes (give a dict to choose them).
        """
        if not isinstance(outputs, dict):
            outputs = dict(zip(outputs, inputs.values()))
        return cls(name, tuple(inputs) + tuple(outputs), tuple(inputs.values()) + tuple(outputs.values()),
                   fn="qnn", n_inputs=len(inputs), options=dict(options))

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.inds[: self.n_inputs]

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.inds[self.n_inputs:]

    @property
    def in_size(self) -> int:
        return math.prod(self.sizes[: self.n_inputs])

    @property
    def out_size(self) -> int:
        return math.prod(self.sizes[self.n_inputs:])

    @property
    def is_elementwise(self) -> bool:
        return self.fn in FUNCTIONS

    def num_parameters(self) -> int:
        if self.is_elementwise or not self.trainable:
            return 0
        return NONLINEAR_MAPS[self.fn].num_parameters(self.in_size, self.out_size, **self.options)

    def _extra(self) -> dict[str, Any]:
        d: dict[str, Any] = {"fn": self.fn, "n_inputs": self.n_inputs}
        if self.options:
            d["options"] = dict(self.options)
        return d


NODE_KINDS: dict[str, type[Node]] = {c.kind: c for c in (Dense, Diagonal, Unitary, Nonlinear)}

_FIELDS = {
    "dense": {"init", "std"},
    "diagonal": {"init", "active"},
    "unitary": {"param", "options"},
    "nonlinear": {"fn", "n_inputs", "options"},
}


def node_from_dict(d: Any) -> Node:
    """Rebuild a node from :meth:`Node.to_dict` output, checking every field."""
    if not isinstance(d, dict):
        raise GraphError(f"a node must be a JSON object, got {type(d).__name__}")
    name = d.get("name")
    kind = d.get("kind")
    if not isinstance(kind, str) or kind not in NODE_KINDS:
        raise NodeKindError(f"node {name!r}: unknown kind {kind!r}; expected one of {sorted(NODE_KINDS)}",
                            node=name if isinstance(name, str) else None)
    allowed = {"kind", "name", "inds", "sizes", "trainable"} | _FIELDS[kind]
    extra = set(d) - allowed
    if extra:
        raise GraphError(f"{kind} node {name!r}: unknown field(s) {sorted(extra)}; expected some of {sorted(allowed)}",
                         node=name if isinstance(name, str) else None)
    for key in ("name", "inds", "sizes"):
        if key not in d:
            raise GraphError(f"{kind} node {name!r}: missing field {key!r}", node=name if isinstance(name, str) else None)
    if not isinstance(d["inds"], list) or not isinstance(d["sizes"], list):
        raise GraphError(f"{kind} node {name!r}: 'inds' and 'sizes' must be lists", node=name if isinstance(name, str) else None)
    kwargs = {k: v for k, v in d.items() if k not in ("kind",)}
    kwargs["inds"] = tuple(kwargs["inds"])
    kwargs["sizes"] = tuple(kwargs["sizes"])
    try:
        return NODE_KINDS[kind](**kwargs)
    except TypeError as e:  # a field of the wrong type that the dataclass rejected
        raise GraphError(f"{kind} node {name!r}: {e}", node=name if isinstance(name, str) else None) from None
