"""The adapter graph: nodes wired by named indices, with open legs for the layer's input and
output. A graph is a value: it validates on construction, never changes afterwards, and holds no
tensors — equal structures are equal graphs (``==``, ``hash``), so one graph can be shared by any
number of layers and callers. Its values live in a runtime, :class:`tnpeft.runtime.GraphModule`
(``GraphModule(graph)``), which every adapted layer owns.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from types import MappingProxyType
from typing import Any, Callable, Hashable, Iterable, Mapping

from tnpeft.errors import (
    BudgetError,
    DanglingIndexError,
    GraphError,
    IndexSizeError,
    UnreachableLegError,
)
from tnpeft.fileio import parse_json
from tnpeft.graph.hypernetwork import HyperNetwork
from tnpeft.graph.names import check_elements
from tnpeft.graph.nodes import Dense, Node, Unitary, node_from_dict
from tnpeft.graph.schedule import ApplyStep, ContractStep, build_schedule
from tnpeft.params import limits

FORMAT_VERSION = 1


def _check_count(what: str, n: int) -> None:
    if n > limits.MAX_NODES:
        raise BudgetError(f"a graph has {n:,} {what}; the limit is {limits.MAX_NODES:,} "
                          "(tnpeft.params.limits.MAX_NODES)")


def _plain(value: Any) -> Any:
    """A JSON-ready copy of (possibly read-only) mappings and sequences."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Graph:
    """A tensor-network adapter: ``y = x Wᵀ + scale · contract(graph, x)``.

    Args:
        nodes: the nodes (:class:`Dense`, :class:`Diagonal`, :class:`Unitary`, :class:`Nonlinear`).
        in_index: the name of the open leg that meets the layer input ``x`` (default ``"in"``), or
            a tuple of names: the input is then reshaped (row-major) into those legs, as a
            tensor-train / MPO reads a vector of size ``n₁·n₂·…``. An index named in both legs
            passes straight through (the update is block-diagonal in it, e.g. OFT's blocks).
        out_index: the same for the output leg(s) (default ``"out"``).
        in_features, out_features: the layer's sizes; checked against the nodes if given.
        scale: the factor ``s`` on the adapter's output (LoRA: ``alpha / r``).
        dropout: dropout probability applied to ``x`` on the adapter path in training.
        name: a short name shown in reports and diagrams.
        meta: JSON-ready metadata (the builder and its hyper-parameters, the paper reference).
        mode: ``"add"`` (default): ``y = base(x) + scale · contract(graph, x)``. ``"input"``: the
            graph transforms the layer's input, ``y = base(contract(graph, x))`` — a multiplicative
            adapter such as OFT (``W' = W R``); in and out legs then both have the layer's input size.
        hypernetworks: hyper-networks (:class:`HyperNetwork`) that fill dense nodes with generated
            values (QPA); a generated node owns no parameters and the hyper-network's are counted
            instead.

    Validation on construction raises a :class:`tnpeft.errors.GraphError` subclass naming the node
    and index at fault: an index with two sizes, a dangling index, an open leg that cannot be
    reached, a node that does not depend on the input, a nonlinear node whose inputs are not
    produced by one stage.
    """

    def __init__(self, nodes: Iterable[Node], *, in_index: str | tuple[str, ...] = "in",
                 out_index: str | tuple[str, ...] = "out", in_features: int | None = None,
                 out_features: int | None = None, scale: float = 1.0, dropout: float = 0.0, name: str = "",
                 meta: Mapping[str, Any] | None = None, mode: str = "add",
                 hypernetworks: Iterable[HyperNetwork] = ()):
        nodes = list(nodes)
        if not nodes:
            raise GraphError("a graph needs at least one node")
        _check_count("nodes", len(nodes))
        for n in nodes:
            if not isinstance(n, Node):
                raise GraphError(f"graph nodes must be Node objects (Dense, Diagonal, Unitary, Nonlinear), "
                                 f"got {type(n).__name__}")
        counts = Counter(n.name for n in nodes)
        dup = sorted(x for x, c in counts.items() if c > 1)
        if dup:
            raise GraphError(f"node name {dup[0]!r} is used by {counts[dup[0]]} nodes; names must be unique",
                             node=dup[0])
        in_inds = self._legs("in_index", in_index)
        out_inds = self._legs("out_index", out_index)
        if mode not in ("add", "input"):
            raise GraphError(f"mode must be 'add' or 'input', got {mode!r}")
        if not isinstance(name, str):
            raise GraphError(f"graph name must be a string, got {name!r}")
        if meta is not None and not isinstance(meta, Mapping):
            raise GraphError(f"graph meta must be a mapping, got {type(meta).__name__}")
        # an index in both legs passes straight through: the update is block-diagonal in it
        self.shared_legs = tuple(i for i in in_inds if i in out_inds)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
            raise GraphError(f"scale must be a finite real number, got {scale!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise GraphError(f"dropout must be in [0, 1), got {dropout!r}")
        self._nodes_list = nodes
        self.in_index = in_inds[0] if len(in_inds) == 1 else in_inds
        self.out_index = out_inds[0] if len(out_inds) == 1 else out_inds
        self.in_inds = in_inds
        self.out_inds = out_inds
        self.mode = mode
        self.scale = float(scale)
        self.dropout = float(dropout)
        self.name = name
        self.meta: Mapping[str, Any] = MappingProxyType(dict(meta or {}))
        self.size_dict: Mapping[str, int] = self._check_sizes(nodes)
        for legs, want, what in ((in_inds, in_features, "in_features"), (out_inds, out_features, "out_features")):
            for leg in legs:
                if leg not in self.size_dict:
                    raise UnreachableLegError(
                        f"open leg {leg!r} is attached to no node; expected some node to carry index {leg!r}",
                        index=leg)
            got = math.prod(self.size_dict[leg] for leg in legs)
            if want is not None and got != want:
                holder = next(n.name for n in nodes if legs[0] in n.inds)
                sizes = " × ".join(f"{leg}={self.size_dict[leg]}" for leg in legs)
                raise IndexSizeError(f"{what}={want} but the open leg(s) have size {got} ({sizes}, on node {holder!r})",
                                     node=holder, index=legs[0])
        self.in_features = math.prod(self.size_dict[i] for i in in_inds)
        self.out_features = math.prod(self.size_dict[i] for i in out_inds)
        if mode == "input" and self.in_features != self.out_features:
            raise GraphError(f"an input-mode graph maps the layer input to itself, but its legs have sizes "
                             f"{self.in_features} → {self.out_features}")
        self._check_dangling(nodes)
        schedule = build_schedule(nodes, in_inds, out_inds)
        self.schedule: tuple[ContractStep | ApplyStep, ...] = schedule.steps
        self.activations: tuple[tuple[str, ...], ...] = schedule.activations
        by_name = {n.name: n for n in nodes}
        self.nodes: Mapping[str, Node] = MappingProxyType({k: by_name[k] for k in schedule.order})
        self.hypernetworks: Mapping[str, HyperNetwork] = MappingProxyType(
            self._check_hypernetworks(list(hypernetworks), by_name))
        #: generated node name → the hyper-network that fills it
        self.generated: Mapping[str, str] = MappingProxyType(
            {o: g.name for g in self.hypernetworks.values() for o in g.outputs})
        self.size_dict = MappingProxyType(self.size_dict)
        self._signature = (tuple(json.dumps(n.to_dict(), sort_keys=True) for n in self._nodes_list),
                           self.in_inds, self.out_inds, self.scale, self.dropout, self.mode,
                           tuple(json.dumps(g.to_dict(), sort_keys=True) for g in self.hypernetworks.values()))
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise GraphError(f"a Graph is a value and cannot be changed (setting {name!r}); build a new Graph, "
                             "and keep tensors in a GraphModule(graph)")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Callable[[Any], Graph], tuple[dict[str, Any]]]:  # pickling (DDP, multiprocessing) rebuilds the value from its JSON form
        return (Graph.from_dict, (self.to_dict(),))

    # ---------------------------------------------------------------- validation
    @staticmethod
    def _legs(what: str, value: Any) -> tuple[str, ...]:
        legs = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else None
        if not legs or not all(isinstance(v, str) and v.isidentifier() for v in legs):
            raise GraphError(f"{what} must be an index name or a non-empty tuple of index names, got {value!r}")
        if len(set(legs)) != len(legs):
            raise GraphError(f"{what} {value!r} names an index twice")
        return legs

    @staticmethod
    def _check_sizes(nodes: list[Node]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        owner: dict[str, str] = {}
        for n in nodes:
            for ind, size in zip(n.inds, n.sizes):
                if ind in sizes and sizes[ind] != size:
                    raise IndexSizeError(
                        f"index {ind!r} has size {sizes[ind]} on node {owner[ind]!r} but size "
                        f"{size} on node {n.name!r}; an index has one size", node=n.name, index=ind)
                sizes.setdefault(ind, size)
                owner.setdefault(ind, n.name)
        return sizes

    def check_budget(self) -> None:
        """Raise :class:`BudgetError` unless a module of this graph fits tnpeft's allocation
        budgets (:mod:`tnpeft.params.limits`): every node tensor (a dense or diagonal node, a unitary
        node's frames, a generated node) and every node's parameters at most ``MAX_TENSOR_ELEMENTS``
        elements, all node tensors together at most ``MAX_GRAPH_ELEMENTS``, and at most
        ``MAX_PARAMETERS`` trainable parameters. :class:`GraphModule` calls it before it allocates
        anything; it reads the graph alone."""
        for n in self._nodes_list:
            for what, count in (("its tensor", n.elements), ("its parameters", n.num_parameters())):
                check_elements(n.name, what, count)
        elements = sum(n.elements for n in self._nodes_list)
        if elements > limits.MAX_GRAPH_ELEMENTS:
            big = max(self._nodes_list, key=lambda n: n.elements)
            raise BudgetError(f"graph {self.name or ''!s}: its node tensors have {elements:,} elements together "
                              f"(node {big.name!r} alone {big.elements:,}); the limit is "
                              f"{limits.MAX_GRAPH_ELEMENTS:,} (tnpeft.params.limits.MAX_GRAPH_ELEMENTS)", node=big.name)
        params = self.num_parameters()
        if params > limits.MAX_PARAMETERS:
            rows = [(n.name, n.num_parameters()) for n in self._nodes_list if n.name not in self.generated]
            rows += [(k, g.shape(self.generated_size(k)).num_parameters) for k, g in self.hypernetworks.items()]
            big_name, big_count = max(rows, key=lambda r: r[1])
            raise BudgetError(f"graph {self.name or ''!s}: {params:,} trainable parameters ({big_name!r} alone "
                              f"{big_count:,}); the limit is {limits.MAX_PARAMETERS:,} "
                              "(tnpeft.params.limits.MAX_PARAMETERS)", node=big_name)

    @staticmethod
    def _check_hypernetworks(nets: list[Any], by_name: dict[str, Node]) -> dict[str, HyperNetwork]:
        _check_count("hyper-networks", len(nets))
        out: dict[str, HyperNetwork] = {}
        owner: dict[str, str] = {}
        for g in nets:
            if not isinstance(g, HyperNetwork):
                raise GraphError(f"graph hypernetworks must be HyperNetwork objects, got {type(g).__name__}")
            if g.name in by_name or g.name in out:
                raise GraphError(f"hyper-network name {g.name!r} is already used by a node or hyper-network",
                                 node=g.name)
            for o in g.outputs:
                if o not in by_name:
                    raise GraphError(f"hyper-network {g.name!r} fills node {o!r}, but the graph has no such node; "
                                     f"nodes: {list(by_name)}", node=g.name)
                if not isinstance(by_name[o], Dense):
                    raise GraphError(f"hyper-network {g.name!r} fills node {o!r} of kind {by_name[o].kind!r}; only "
                                     "dense nodes can be generated", node=o)
                if o in owner:
                    raise GraphError(f"node {o!r} is filled by two hyper-networks ({owner[o]!r} and {g.name!r})",
                                     node=o)
                owner[o] = g.name
            g.shape(sum(math.prod(by_name[o].sizes) for o in g.outputs))  # validates the options
            out[g.name] = g
        return out

    def generated_size(self, hypernetwork: str) -> int:
        """How many values hyper-network ``hypernetwork`` produces (its output nodes' total size)."""
        return sum(math.prod(self.nodes[o].sizes) for o in self.hypernetworks[hypernetwork].outputs)

    def _check_dangling(self, nodes: list[Node]) -> None:
        count: dict[str, list[str]] = defaultdict(list)
        for n in nodes:
            for ind in n.inds:
                count[ind].append(n.name)
        for ind, holders in count.items():
            if ind not in self.in_inds + self.out_inds and len(holders) < 2:
                raise DanglingIndexError(
                    f"index {ind!r} of node {holders[0]!r} is connected to nothing else; every index but the "
                    f"open legs {self.in_index!r} and {self.out_index!r} must join two or more nodes",
                    node=holders[0], index=ind)

    # ---------------------------------------------------------------- structure
    @property
    def is_linear(self) -> bool:
        """True when the update is one fixed matrix ΔW (no nonlinear stage): it can be merged."""
        return len(self.schedule) == 1 and isinstance(self.schedule[0], ContractStep)

    @property
    def is_orthogonal(self) -> bool:
        """True when the graph's matrix ``dense()`` is orthogonal by construction: a
        linear graph of square unitary nodes only (used to unmerge input-mode adapters by a transpose)."""
        return self.is_linear and all(isinstance(n, Unitary) and n.sizes[-1] == n.sizes[-2]
                                      for n in self.nodes.values())

    def num_parameters(self) -> int:
        """Trainable scalars of the adapter, from the graph alone (nothing is allocated)."""
        own = sum(n.num_parameters() for n in self._nodes_list if n.name not in self.generated)
        return own + sum(g.shape(self.generated_size(k)).num_parameters for k, g in self.hypernetworks.items())

    def num_generated(self) -> int:
        """Values produced by hyper-networks (not trained themselves): e.g. the LoRA factors QPA generates."""
        return sum(self.generated_size(k) for k in self.hypernetworks)

    def parameter_table(self) -> list[dict[str, Any]]:
        """One row per node (name, kind, indices with sizes, trainable parameters), then one per
        hyper-network (with the nodes it fills and how many values it generates)."""
        rows = [{"node": n.name, "kind": n.kind, "inds": dict(zip(n.inds, n.sizes)),
                 "parameters": 0 if n.name in self.generated else n.num_parameters(),
                 "trainable": n.trainable and n.name not in self.generated,
                 **({"generated_by": self.generated[n.name]} if n.name in self.generated else {})}
                for n in self.nodes.values()]
        for k, g in self.hypernetworks.items():
            rows.append({"node": k, "kind": f"hypernetwork:{g.kind}", "inds": {}, "parameters":
                         g.shape(self.generated_size(k)).num_parameters, "trainable": True,
                         "generates": list(g.outputs), "generated_values": self.generated_size(k)})
        return rows

    def signature(self) -> tuple[Hashable, ...]:
        """A hashable key of the structure (not the values): equal graphs contract the same way."""
        return self._signature

    def replace(self, **changes: Any) -> Graph:
        """A new graph equal to this one but for ``changes`` (any constructor argument: ``nodes``,
        ``scale``, ``name``, ``meta``, …), validated like any graph."""
        args: dict[str, Any] = {"nodes": self._nodes_list, "in_index": self.in_index, "out_index": self.out_index,
                                "scale": self.scale, "dropout": self.dropout, "name": self.name,
                                "meta": _plain(self.meta), "mode": self.mode,
                                "hypernetworks": list(self.hypernetworks.values())}
        unknown = set(changes) - set(args)
        if unknown:
            raise GraphError(f"Graph.replace: unknown field(s) {sorted(unknown)}; expected some of {sorted(args)}")
        args.update(changes)
        return Graph(args.pop("nodes"), **args)

    def same_values_layout(self, other: Graph) -> bool:
        """True if ``other`` computes the same function family with the same tensors (equal up to
        the nodes' initialisation): values saved from one load into the other."""
        def strip(g: Graph) -> list[dict[str, Any]]:
            return [{k: v for k, v in n.to_dict().items() if k not in ("init", "std")} for n in g._nodes_list]

        def gens(g: Graph) -> list[dict[str, Any]]:
            return [x.to_dict() for x in g.hypernetworks.values()]

        return (strip(self) == strip(other) and (self.in_inds, self.out_inds, self.scale, self.mode) ==
                (other.in_inds, other.out_inds, other.scale, other.mode) and gens(self) == gens(other))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.signature() == other.signature()

    def __hash__(self) -> int:
        return hash(self.signature())

    def __repr__(self) -> str:
        body = ", ".join(f"{n.name}:{n.kind}[{','.join(f'{i}={s}' for i, s in zip(n.inds, n.sizes))}]"
                         for n in self.nodes.values())
        label = f"{self.name!r}, " if self.name else ""
        return (f"Graph({label}{self.in_index}={self.in_features} → {self.out_index}={self.out_features}, "
                f"nodes=[{body}], scale={self.scale:g}, params={self.num_parameters():,})")

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The structure and hyper-parameters as a JSON-ready dict (no tensor values)."""
        d = {"format": "tnpeft.graph", "version": FORMAT_VERSION, "name": self.name,
             "in_index": self.in_index if isinstance(self.in_index, str) else list(self.in_index),
             "out_index": self.out_index if isinstance(self.out_index, str) else list(self.out_index),
             "scale": self.scale, "dropout": self.dropout, "mode": self.mode, "meta": _plain(self.meta),
             "nodes": [n.to_dict() for n in self._nodes_list]}
        if self.hypernetworks:
            d["hypernetworks"] = [g.to_dict() for g in self.hypernetworks.values()]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """Serialize the structure to JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Any) -> Graph:
        """Rebuild a graph from :meth:`to_dict` output. Only data is read; no code runs."""
        if not isinstance(d, dict):
            raise GraphError(f"a graph must be a JSON object, got {type(d).__name__}")
        if d.get("format") != "tnpeft.graph":
            raise GraphError(f"not a tnpeft graph: field 'format' is {d.get('format')!r}, expected 'tnpeft.graph'")
        if type(d.get("version")) is not int or d.get("version") != FORMAT_VERSION:    # not true, nor 1.0
            raise GraphError(f"graph format version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        allowed = {"format", "version", "name", "in_index", "out_index", "scale", "dropout", "mode", "meta", "nodes",
                   "hypernetworks", "generators"}
        extra = set(d) - allowed
        if extra:
            raise GraphError(f"unknown graph field(s) {sorted(extra)}; expected some of {sorted(allowed)}")
        if not isinstance(d.get("nodes"), list):
            raise GraphError("graph field 'nodes' must be a list of node objects")
        _check_count("nodes", len(d["nodes"]))
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise GraphError("graph field 'meta' must be an object")
        legs = {k: (tuple(d[k]) if isinstance(d.get(k), list) else d.get(k, k[:-6])) for k in ("in_index", "out_index")}
        if "hypernetworks" in d and "generators" in d:
            raise GraphError("graph fields 'hypernetworks' and 'generators' (its older name) are both present")
        gens = d.get("hypernetworks", d.get("generators", []))   # files of tnpeft 0.1 say 'generators'
        if not isinstance(gens, list):
            raise GraphError("graph field 'hypernetworks' must be a list of hyper-network objects")
        _check_count("hyper-networks", len(gens))
        return cls([node_from_dict(n) for n in d["nodes"]], in_index=legs["in_index"], out_index=legs["out_index"],
                   scale=d.get("scale", 1.0), dropout=d.get("dropout", 0.0), name=d.get("name", ""), meta=meta,
                   mode=d.get("mode", "add"), hypernetworks=[HyperNetwork.from_dict(g) for g in gens])

    @classmethod
    def from_json(cls, text: str) -> Graph:
        """Parse JSON text written by :meth:`to_json` (nested at most
        :data:`tnpeft.fileio.MAX_JSON_DEPTH` deep)."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise GraphError(f"graph JSON must be text, got {type(text).__name__}")
        return cls.from_dict(parse_json(text, "graph JSON", error=GraphError))
