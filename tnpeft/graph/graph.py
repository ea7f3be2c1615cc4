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
from tnpeft.graph.nodes import Dense, Generator, Node, Nonlinear, node_from_dict

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
        generators: hyper-networks (:class:`Generator`) that fill dense nodes with generated values
            (QPA); a generated node owns no parameters and the generator's are counted instead.

    Validation on construction raises a :class:`tnpeft.errors.GraphError` subclass naming the node
    and index at fault: an index with two sizes, a dangling index, an open leg that cannot be
    reached, a node that does not depend on the input, a nonlinear node whose inputs are not
    produced by one stage.
    """

    def __init__(self, nodes: Iterable[Node], *, in_index: str | tuple[str, ...] = "in",
                 out_index: str | tuple[str, ...] = "out", in_features: int | None = None,
                 out_features: int | None = None, scale: float = 1.0, dropout: float = 0.0, name: str = "",
                 meta: Mapping[str, Any] | None = None, mode: str = "add",
                 generators: Iterable[Generator] = ()):
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
        self.meta = dict(meta or {})
        self.size_dict = self._check_sizes(nodes)
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
        self.schedule, self.activations, order = self._build_schedule(nodes)
        by_name = {n.name: n for n in nodes}
        self.nodes: dict[str, Node] = {k: by_name[k] for k in order}
        self.generators: dict[str, Generator] = self._check_generators(list(generators), by_name)
        self.generated: dict[str, str] = {o: g.name for g in self.generators.values() for o in g.outputs}
        self._module: GraphModule | None = None

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

    @staticmethod
    def _check_generators(gens: list[Any], by_name: dict[str, Node]) -> dict[str, Generator]:
        out: dict[str, Generator] = {}
        owner: dict[str, str] = {}
        for g in gens:
            if not isinstance(g, Generator):
                raise GraphError(f"graph generators must be Generator objects, got {type(g).__name__}")
            if g.name in by_name or g.name in out:
                raise GraphError(f"generator name {g.name!r} is already used by a node or generator", node=g.name)
            for o in g.outputs:
                if o not in by_name:
                    raise GraphError(f"generator {g.name!r} fills node {o!r}, but the graph has no such node; "
                                     f"nodes: {list(by_name)}", node=g.name)
                if not isinstance(by_name[o], Dense):
                    raise GraphError(f"generator {g.name!r} fills node {o!r} of kind {by_name[o].kind!r}; only "
                                     "dense nodes can be generated", node=o)
                if o in owner:
                    raise GraphError(f"node {o!r} is filled by two generators ({owner[o]!r} and {g.name!r})", node=o)
                owner[o] = g.name
            g.shape(sum(math.prod(by_name[o].sizes) for o in g.outputs))  # validates the options
            out[g.name] = g
        return out

    def generated_size(self, generator: str) -> int:
        """How many values generator ``generator`` produces (its output nodes' total size)."""
        return sum(math.prod(self.nodes[o].sizes) for o in self.generators[generator].outputs)

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

    def _build_schedule(self, nodes: list[Node]):
        linear = [n for n in nodes if not isinstance(n, Nonlinear)]
        nonlin = [n for n in nodes if isinstance(n, Nonlinear)]
        nl_in = {i: n.name for n in nonlin for i in n.inputs}
        nl_out: dict[str, str] = {}
        for n in nonlin:
            for i in n.outputs:
                if i in nl_out or i in self.in_inds:
                    raise GraphError(f"index {i!r} is produced twice (by nonlinear node {n.name!r} and by "
                                     f"{nl_out.get(i, 'the layer input')!r})", node=n.name, index=i)
                nl_out[i] = n.name
        for n in nonlin:
            for i in n.inputs:
                if i in self.out_inds:
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
        sources = set(self.in_inds) | set(nl_out)
        sinks = set(self.out_inds) | set(nl_in)

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
        acts: list[tuple[str, ...]] = [self.in_inds]
        avail: dict[str, int] = {i: 0 for i in self.in_inds}
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
                exits = tuple(i for i in inds if (i in sinks and i not in sources) or i in self.shared_legs)
                if set(exits) == set(self.out_inds):
                    exits = self.out_inds
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
        first_out = self.out_inds[0]
        if first_out not in avail or acts[avail[first_out]] != self.out_inds:
            got = acts[avail[first_out]] if first_out in avail else None
            raise UnreachableLegError(
                f"the last stage must produce exactly the open leg(s) {self.out_inds}, got indices {got}",
                index=first_out)
        final = avail[first_out]
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

    @property
    def is_orthogonal(self) -> bool:
        """True when the graph's matrix ``dense()`` is orthogonal by construction: a
        linear graph of square unitary nodes only (used to unmerge input-mode adapters by a transpose)."""
        from tnpeft.graph.nodes import Unitary

        return self.is_linear and all(isinstance(n, Unitary) and n.sizes[-1] == n.sizes[-2]
                                      for n in self.nodes.values())

    def num_parameters(self) -> int:
        """Trainable scalars of the adapter, from the graph alone (nothing is allocated)."""
        own = sum(n.num_parameters() for n in self._nodes_list if n.name not in self.generated)
        return own + sum(g.shape(self.generated_size(k)).num_parameters for k, g in self.generators.items())

    def num_generated(self) -> int:
        """Values produced by generators (not trained themselves): e.g. the LoRA factors QPA generates."""
        return sum(self.generated_size(k) for k in self.generators)

    def parameter_table(self) -> list[dict[str, Any]]:
        """One row per node (name, kind, indices with sizes, trainable parameters), then one per
        generator (with the nodes it fills and how many values it generates)."""
        rows = [{"node": n.name, "kind": n.kind, "inds": dict(zip(n.inds, n.sizes)),
                 "parameters": 0 if n.name in self.generated else n.num_parameters(),
                 "trainable": n.trainable and n.name not in self.generated,
                 **({"generated_by": self.generated[n.name]} if n.name in self.generated else {})}
                for n in self.nodes.values()]
        for k, g in self.generators.items():
            rows.append({"node": k, "kind": f"generator:{g.kind}", "inds": {}, "parameters":
                         g.shape(self.generated_size(k)).num_parameters, "trainable": True,
                         "generates": list(g.outputs), "generated_values": self.generated_size(k)})
        return rows

    def signature(self) -> tuple:
        """A hashable key of the structure (not the values): equal graphs contract the same way."""
        return (tuple(json.dumps(n.to_dict(), sort_keys=True) for n in self._nodes_list),
                self.in_inds, self.out_inds, self.scale, self.dropout, self.mode,
                tuple(json.dumps(g.to_dict(), sort_keys=True) for g in self.generators.values()))

    def same_values_layout(self, other: Graph) -> bool:
        """True if ``other`` computes the same function family with the same tensors (equal up to
        the nodes' initialisation): values saved from one load into the other."""
        strip = lambda g: [{k: v for k, v in n.to_dict().items() if k not in ("init", "std")} for n in g._nodes_list]  # noqa: E731
        gens = lambda g: [x.to_dict() for x in g.generators.values()]  # noqa: E731
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
             "scale": self.scale, "dropout": self.dropout, "mode": self.mode, "meta": self.meta,
             "nodes": [n.to_dict() for n in self._nodes_list]}
        if self.generators:
            d["generators"] = [g.to_dict() for g in self.generators.values()]
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
        if d.get("version") != FORMAT_VERSION:
            raise GraphError(f"graph format version {d.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        allowed = {"format", "version", "name", "in_index", "out_index", "scale", "dropout", "mode", "meta", "nodes",
                   "generators"}
        extra = set(d) - allowed
        if extra:
            raise GraphError(f"unknown graph field(s) {sorted(extra)}; expected some of {sorted(allowed)}")
        if not isinstance(d.get("nodes"), list):
            raise GraphError("graph field 'nodes' must be a list of node objects")
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise GraphError("graph field 'meta' must be an object")
        legs = {k: (tuple(d[k]) if isinstance(d.get(k), list) else d.get(k, k[:-6])) for k in ("in_index", "out_index")}
        gens = d.get("generators", [])
        if not isinstance(gens, list):
            raise GraphError("graph field 'generators' must be a list of generator objects")
        return cls([node_from_dict(n) for n in d["nodes"]], in_index=legs["in_index"], out_index=legs["out_index"],
                   scale=d.get("scale", 1.0), dropout=d.get("dropout", 0.0), name=d.get("name", ""), meta=meta,
                   mode=d.get("mode", "add"), generators=[Generator.from_dict(g) for g in gens])

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

    def draw(self, path: str | None = None, **kwargs: Any):
        """Draw the tensor diagram (see :func:`tnpeft.draw.draw_graph`); save it to ``path``
        (``.svg``/``.png``) if given. Returns the matplotlib figure."""
        from tnpeft.draw import draw_graph

        return draw_graph(self, path, **kwargs)

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
