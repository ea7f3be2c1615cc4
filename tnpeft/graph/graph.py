"""The adapter graph: nodes wired by named indices, with open legs for the layer's input and
output. A graph is a value: it validates on construction and never changes afterwards.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from tnpeft.errors import DanglingIndexError, GraphError, IndexSizeError, NotMergeableError, UnreachableLegError
from tnpeft.graph.nodes import Node, Nonlinear, node_from_dict

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tnpeft.graph.module import GraphModule

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ContractStep:
    """Contract the linear nodes ``nodes`` with the activations ``inputs`` (by id), producing
    activation ``output`` with indices ``batch + exits``."""

    nodes: tuple[str, ...]
    inputs: tuple[int, ...]
    exits: tuple[str, ...]
    output: int


@dataclass(frozen=True)
class ApplyStep:
    """Apply nonlinear node ``node`` to activation ``input``, producing activation ``output``."""

    node: str
    input: int
    output: int


class Graph:
    """A tensor-network adapter: ``y = x Wᵀ + scale · contract(graph, x)``.

    Args:
        nodes: the nodes (:class:`Dense`, :class:`Diagonal`, :class:`Unitary`, :class:`Nonlinear`).
        in_index: the name of the open leg that meets the layer input ``x`` (default ``"in"``).
        out_index: the name of the open leg that becomes the layer output (default ``"out"``).
        in_features, out_features: the layer's sizes; checked against the nodes if given.
        scale: the factor ``s`` on the adapter's output (LoRA: ``alpha / r``).
        dropout: dropout probability applied to ``x`` on the adapter path in training.
        name: a short name shown in reports and diagrams.
        meta: JSON-ready metadata (the builder and its hyper-parameters, the paper reference).

    Validation on construction raises a :class:`tnpeft.errors.GraphError` subclass naming the node
    and index at fault: an index with two sizes, a dangling index, an open leg that cannot be
    reached, a node that does not depend on the input, a nonlinear node whose inputs are not
    produced by one stage.
    """

    def __init__(self, nodes: Iterable[Node], *, in_index: str = "in", out_index: str = "out",
                 in_features: int | None = None, out_features: int | None = None, scale: float = 1.0,
                 dropout: float = 0.0, name: str = "", meta: Mapping[str, Any] | None = None):
        nodes = list(nodes)
        if not nodes:
            raise GraphError("a graph needs at least one node")
        for n in nodes:
            if not isinstance(n, Node):
                raise GraphError(f"graph nodes must be Node objects (Dense, Diagonal, Unitary, Nonlinear), "
                                 f"got {type(n).__name__}")
        names = [n.name for n in nodes]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            d = sorted(dup)[0]
            raise GraphError(f"node name {d!r} is used by {names.count(d)} nodes; names must be unique", node=d)
        for what, value in (("in_index", in_index), ("out_index", out_index)):
            if not isinstance(value, str) or not value.isidentifier():
                raise GraphError(f"{what} must be an index name (an identifier), got {value!r}")
        if not isinstance(name, str):
            raise GraphError(f"graph name must be a string, got {name!r}")
        if meta is not None and not isinstance(meta, Mapping):
            raise GraphError(f"graph meta must be a mapping, got {type(meta).__name__}")
        if in_index == out_index:
            raise GraphError(f"in_index and out_index are both {in_index!r}; the open legs need two names",
                             index=in_index)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
            raise GraphError(f"scale must be a finite real number, got {scale!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise GraphError(f"dropout must be in [0, 1), got {dropout!r}")
        self._nodes_list = nodes
        self.in_index = in_index
        self.out_index = out_index
        self.scale = float(scale)
        self.dropout = float(dropout)
        self.name = name
        self.meta = dict(meta or {})
        self.size_dict = self._check_sizes(nodes)
        for leg, want, what in ((in_index, in_features, "in_features"), (out_index, out_features, "out_features")):
            if leg not in self.size_dict:
                raise UnreachableLegError(
                    f"open leg {leg!r} is attached to no node; expected some node to carry index {leg!r}",
                    index=leg)
            if want is not None and self.size_dict[leg] != want:
                holder = next(n.name for n in nodes if leg in n.inds)
                raise IndexSizeError(
                    f"{what}={want} but node {holder!r} gives open leg {leg!r} size {self.size_dict[leg]}",
                    node=holder, index=leg)
        self.in_features = self.size_dict[in_index]
        self.out_features = self.size_dict[out_index]
        self._check_dangling(nodes)
        self.schedule, self.activations, order = self._build_schedule(nodes)
        by_name = {n.name: n for n in nodes}
        self.nodes: dict[str, Node] = {k: by_name[k] for k in order}
        self._module: GraphModule | None = None

    # ---------------------------------------------------------------- validation
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

    def _check_dangling(self, nodes: list[Node]) -> None:
        count: dict[str, list[str]] = defaultdict(list)
        for n in nodes:
            for ind in n.inds:
                count[ind].append(n.name)
        for ind, holders in count.items():
            if ind not in (self.in_index, self.out_index) and len(holders) < 2:
                raise DanglingIndexError(
                    f"index {ind!r} of node {holders[0]!r} is connected to nothing else; every index but the "
                    f"open legs {self.in_index!r} and {self.out_index!r} must join two or more nodes",
                    node=holders[0], index=ind)

    def _build_schedule(self, nodes: list[Node]):
        linear = [n for n in nodes if not isinstance(n, Nonlinear)]
        nonlin = [n for n in nodes if isinstance(n, Nonlinear)]
        nl_in = {i: n.name for n in nonlin for i in n.inputs}
        nl_out: dict[str, str] = {}
        for n in nonlin:
            for i in n.outputs:
                if i in nl_out or i == self.in_index:
                    raise GraphError(f"index {i!r} is produced twice (by nonlinear node {n.name!r} and by "
                                     f"{nl_out.get(i, 'the layer input')!r})", node=n.name, index=i)
                nl_out[i] = n.name
        for n in nonlin:
            for i in n.inputs:
                if i == self.out_index:
                    raise GraphError(f"nonlinear node {n.name!r} consumes the output leg {i!r}", node=n.name, index=i)
        # connected components of the linear nodes (joined by shared indices)
        parent = {n.name: n.name for n in linear}

        def find(a: str) -> str:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        holders: dict[str, list[str]] = defaultdict(list)
        for n in linear:
            for i in n.inds:
                holders[i].append(n.name)
        for hs in holders.values():
            for h in hs[1:]:
                parent[find(h)] = find(hs[0])
        comps: dict[str, list[Node]] = defaultdict(list)
        for n in linear:
            comps[find(n.name)].append(n)
        sources = {self.in_index} | set(nl_out)
        sinks = {self.out_index} | set(nl_in)

        def comp_inds(c: list[Node]) -> list[str]:
            return list(dict.fromkeys(i for n in c for i in n.inds))

        pending = dict(comps)
        for c in pending.values():
            inds = comp_inds(c)
            if not any(i in sources for i in inds):
                raise UnreachableLegError(
                    f"node(s) {[n.name for n in c]} do not depend on the input: no path joins them to open leg "
                    f"{self.in_index!r} or to a nonlinear node's output", node=c[0].name)
            if not any(i in sinks for i in inds):
                raise UnreachableLegError(
                    f"node(s) {[n.name for n in c]} feed nothing: no path joins them to open leg "
                    f"{self.out_index!r} or to a nonlinear node's input", node=c[0].name)
        pending_nl = {n.name: n for n in nonlin}
        acts: list[tuple[str, ...]] = [(self.in_index,)]
        avail: dict[str, int] = {self.in_index: 0}
        consumed: set[int] = set()
        schedule: list[ContractStep | ApplyStep] = []
        order: list[str] = []
        while pending or pending_nl:
            progress = False
            for k in list(pending):
                c = pending[k]
                inds = comp_inds(c)
                entries = [i for i in inds if i in sources]
                if not all(i in avail for i in entries):
                    continue
                act_ids = tuple(dict.fromkeys(avail[i] for i in entries))
                for a in act_ids:
                    extra = [i for i in acts[a] if i not in inds]
                    if extra:
                        raise GraphError(
                            f"node(s) {[n.name for n in c]} take part of a stage output that also carries "
                            f"{extra}; a stage's output must be consumed whole", node=c[0].name, index=extra[0])
                exits = tuple(i for i in inds if i in sinks and i not in sources)
                acts.append(exits)
                out_id = len(acts) - 1
                for i in exits:
                    avail[i] = out_id
                consumed.update(act_ids)
                schedule.append(ContractStep(tuple(n.name for n in self._flow_order(c, entries)), act_ids,
                                             exits, out_id))
                order.extend(schedule[-1].nodes)
                del pending[k]
                progress = True
            for name in list(pending_nl):
                n = pending_nl[name]
                if not all(i in avail for i in n.inputs):
                    continue
                src = {avail[i] for i in n.inputs}
                if len(src) != 1 or set(acts[next(iter(src))]) != set(n.inputs):
                    got = [acts[s] for s in src]
                    raise GraphError(
                        f"nonlinear node {name!r} takes indices {n.inputs}, but the stage(s) before it produce "
                        f"{got}; its inputs must be exactly one stage's output", node=name)
                a = next(iter(src))
                if acts[a] != n.inputs:  # same set, other order: the node defines the order it reads
                    raise GraphError(f"nonlinear node {name!r} lists inputs {n.inputs} but the stage before it "
                                     f"produces them in the order {acts[a]}; list them in that order", node=name)
                acts.append(n.outputs)
                out_id = len(acts) - 1
                for i in n.outputs:
                    avail[i] = out_id
                consumed.add(a)
                schedule.append(ApplyStep(name, a, out_id))
                order.append(name)
                del pending_nl[name]
                progress = True
            if not progress:
                stuck = [n.name for c in pending.values() for n in c] + list(pending_nl)
                missing = sorted({i for c in pending.values() for i in comp_inds(c) if i in sources and i not in avail}
                                 | {i for n in pending_nl.values() for i in n.inputs if i not in avail})
                raise UnreachableLegError(
                    f"node(s) {stuck} cannot be reached from the input {self.in_index!r}: indices {missing} are "
                    "never produced (a cycle through nonlinear nodes, or a missing stage)", node=stuck[0])
        if self.out_index not in avail or acts[avail[self.out_index]] != (self.out_index,):
            got = acts[avail[self.out_index]] if self.out_index in avail else None
            raise UnreachableLegError(
                f"the last stage must produce exactly the open leg {self.out_index!r}, got indices {got}",
                index=self.out_index)
        final = avail[self.out_index]
        unused = [k for k in range(len(acts)) if k not in consumed and k != final]
        if unused:
            raise UnreachableLegError(f"a stage output with indices {acts[unused[0]]} is used by nothing")
        return tuple(schedule), tuple(acts), order

    @staticmethod
    def _flow_order(comp: list[Node], entries: list[str]) -> list[Node]:
        # breadth-first from the stage's inputs, so node order follows the data flow
        seen: list[Node] = []
        frontier = set(entries)
        rest = list(comp)
        while rest:
            nxt = [n for n in rest if frontier & set(n.inds)] or [rest[0]]
            for n in nxt:
                seen.append(n)
                rest.remove(n)
                frontier |= set(n.inds)
        return seen

    # ---------------------------------------------------------------- structure
    @property
    def is_linear(self) -> bool:
        """True when the update is one fixed matrix ΔW (no nonlinear stage): it can be merged."""
        return len(self.schedule) == 1 and isinstance(self.schedule[0], ContractStep)

    def num_parameters(self) -> int:
        """Trainable scalars of the adapter, from the graph alone (nothing is allocated)."""
        return sum(n.num_parameters() for n in self._nodes_list)

    def parameter_table(self) -> list[dict[str, Any]]:
        """One row per node: name, kind, indices with sizes, trainable parameters."""
        return [{"node": n.name, "kind": n.kind, "inds": dict(zip(n.inds, n.sizes)),
                 "parameters": n.num_parameters(), "trainable": n.trainable} for n in self.nodes.values()]

    def signature(self) -> tuple:
        """A hashable key of the structure (not the values): equal graphs contract the same way."""
        return (tuple(json.dumps(n.to_dict(), sort_keys=True) for n in self._nodes_list),
                self.in_index, self.out_index, self.scale, self.dropout)

    def same_values_layout(self, other: Graph) -> bool:
        """True if ``other`` computes the same function family with the same tensors (equal up to
        the nodes' initialisation): values saved from one load into the other."""
        strip = lambda g: [{k: v for k, v in n.to_dict().items() if k != "init"} for n in g._nodes_list]  # noqa: E731
        return (strip(self) == strip(other) and (self.in_index, self.out_index, self.scale) ==
                (other.in_index, other.out_index, other.scale))

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
        return {"format": "tnpeft.graph", "version": FORMAT_VERSION, "name": self.name,
                "in_index": self.in_index, "out_index": self.out_index, "scale": self.scale,
                "dropout": self.dropout, "meta": self.meta,
                "nodes": [n.to_dict() for n in self._nodes_list]}

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
        if d.get("version") != FORMAT_VERSION:
            raise GraphError(f"graph format version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        allowed = {"format", "version", "name", "in_index", "out_index", "scale", "dropout", "meta", "nodes"}
        extra = set(d) - allowed
        if extra:
            raise GraphError(f"unknown graph field(s) {sorted(extra)}; expected some of {sorted(allowed)}")
        if not isinstance(d.get("nodes"), list):
            raise GraphError("graph field 'nodes' must be a list of node objects")
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise GraphError("graph field 'meta' must be an object")
        return cls([node_from_dict(n) for n in d["nodes"]], in_index=d.get("in_index", "in"),
                   out_index=d.get("out_index", "out"), scale=d.get("scale", 1.0), dropout=d.get("dropout", 0.0),
                   name=d.get("name", ""), meta=meta)

    @classmethod
    def from_json(cls, text: str) -> Graph:
        """Parse JSON text written by :meth:`to_json`."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise GraphError(f"graph JSON does not parse: {e}") from None
        return cls.from_dict(d)

    # ---------------------------------------------------------------- values
    @property
    def module(self) -> GraphModule:
        """The graph's own trainable values (created on first use with the default init)."""
        if self._module is None:
            from tnpeft.graph.module import GraphModule

            self._module = GraphModule(self)
        return self._module

    def tensor(self, name: str) -> torch.Tensor:
        """One node's materialized tensor (a unitary node gives its N×K orthonormal frame)."""
        return self.module.tensor(name)

    def dense(self, scaled: bool = False) -> torch.Tensor:
        """The materialized update ΔW of shape ``(out_features, in_features)`` (times ``scale``
        if ``scaled``). Raises :class:`NotMergeableError` if the graph has a nonlinear stage."""
        return self.module.dense(scaled=scaled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``scale · contract(graph, x)`` for ``x`` of shape ``(..., in_features)``."""
        return self.module(x)

    def save(self, directory: str) -> None:
        """Write ``graph.json`` and ``graph.safetensors`` (the values) into ``directory`` atomically."""
        from tnpeft.graph.io import save_graph

        save_graph(self, directory)

    @classmethod
    def load(cls, directory: str) -> Graph:
        """Read a graph saved by :meth:`save`, with its values."""
        from tnpeft.graph.io import load_graph

        return load_graph(directory)

    def to_quimb(self):
        """A ``quimb.tensor.TensorNetwork`` with the node tensors (as numpy arrays), their index
        names, and tags ``{node name, KIND}``. The open legs stay open; nonlinear nodes are left out
        (quimb networks are multilinear) and raise if present."""
        if not self.is_linear:
            bad = next(n for n in self.nodes.values() if isinstance(n, Nonlinear))
            raise NotMergeableError(f"nonlinear node {bad.name!r} has no quimb tensor; to_quimb needs a linear graph")
        import quimb.tensor as qtn

        ts = []
        for name, node in self.nodes.items():
            data = self.tensor(name).detach().cpu().numpy()
            ts.append(qtn.Tensor(data, inds=node.inds, tags={name, node.kind.upper()}))
        return qtn.TensorNetwork(ts)
