"""A graph's schedule: nonlinear nodes cut the network into stages contracted in sequence.

Each :class:`ContractStep` contracts one connected group of linear nodes with the activations
entering it; each :class:`ApplyStep` applies one nonlinear node to one stage's output. The
schedule is computed once, when the graph is built.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

from tnpeft.errors import GraphError, UnreachableLegError
from tnpeft.graph.nodes import Node, Nonlinear


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


@dataclass(frozen=True)
class Schedule:
    """The steps in order, the index tuple of every activation (``0`` is the layer input), and the
    node names in data-flow order."""

    steps: tuple[ContractStep | ApplyStep, ...]
    activations: tuple[tuple[str, ...], ...]
    order: tuple[str, ...]


@dataclass(frozen=True)
class Component:
    """A connected group of linear nodes (joined by shared indices), as the scheduler sees it."""

    nodes: tuple[Node, ...]
    inds: tuple[str, ...]          # every index of its nodes, in order of appearance
    entries: tuple[str, ...]       # the indices it reads from an activation (the input or a nonlinear output)
    reads: frozenset[str]          # the activations those come from: "" the layer input, else a nonlinear node
    feeds: bool                    # whether it carries an output leg or a nonlinear node's input

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


@dataclass(frozen=True)
class _Legs:
    """The graph's open legs and the indices nonlinear nodes produce and consume."""

    in_inds: tuple[str, ...]
    out_inds: tuple[str, ...]
    produced_by: dict[str, str]    # a nonlinear node's output index → its node
    sources: frozenset[str]        # indices that enter a stage: the input legs and nonlinear outputs
    sinks: frozenset[str]          # indices that leave a stage: the output legs and nonlinear inputs

    @property
    def in_index(self) -> str | tuple[str, ...]:
        return self.in_inds[0] if len(self.in_inds) == 1 else self.in_inds

    @property
    def out_index(self) -> str | tuple[str, ...]:
        return self.out_inds[0] if len(self.out_inds) == 1 else self.out_inds

    def activation_of(self, index: str) -> str:
        """The activation a source index belongs to ("" for the layer input)."""
        return self.produced_by.get(index, "")


def build_schedule(nodes: list[Node], in_inds: tuple[str, ...], out_inds: tuple[str, ...]) -> Schedule:
    """The stages of a graph: which nodes contract together, in which order, on which activations.

    The linear nodes fall into connected components (joined by shared indices). Components that
    read the same activation — the layer input, or one nonlinear node's output — form one stage,
    contracted together: disconnected components are an outer product (a Kronecker adapter's two
    factors). In a graph without nonlinear nodes, a component that reads no input (a factor that
    carries only output legs) joins the one stage as well.

    Runs in time linear in the size of the graph. Raises a :class:`~tnpeft.errors.GraphError`
    subclass naming the node and index at fault when some part of the network cannot be reached
    from the input or feeds nothing."""
    nonlin = [n for n in nodes if isinstance(n, Nonlinear)]
    legs = _nonlinear_legs(nonlin, in_inds, out_inds)
    comps = [_component(c, legs) for c in _components([n for n in nodes if not isinstance(n, Nonlinear)])]
    _check_reachable(comps, bool(nonlin), legs)
    stages = _stages(comps, legs)
    return _Ordering(nodes, nonlin, comps, stages, legs).run()


def _nonlinear_legs(nonlin: list[Nonlinear], in_inds: tuple[str, ...], out_inds: tuple[str, ...]) -> _Legs:
    consumed = {i for n in nonlin for i in n.inputs}
    produced_by: dict[str, str] = {}
    for n in nonlin:
        for i in n.outputs:
            if i in produced_by or i in in_inds:
                raise GraphError(f"index {i!r} is produced twice (by nonlinear node {n.name!r} and by "
                                 f"{produced_by.get(i, 'the layer input')!r})", node=n.name, index=i)
            produced_by[i] = n.name
    for n in nonlin:
        for i in n.inputs:
            if i in out_inds:
                raise GraphError(f"nonlinear node {n.name!r} consumes the output leg {i!r}", node=n.name, index=i)
    return _Legs(in_inds, out_inds, produced_by, frozenset(in_inds) | frozenset(produced_by),
                 frozenset(out_inds) | frozenset(consumed))


def _component(nodes: list[Node], legs: _Legs) -> Component:
    inds = tuple(dict.fromkeys(i for n in nodes for i in n.inds))
    entries = tuple(i for i in inds if i in legs.sources)
    return Component(tuple(nodes), inds, entries, frozenset(legs.activation_of(i) for i in entries),
                     any(i in legs.sinks for i in inds))


def _check_reachable(comps: list[Component], has_nonlinear: bool, legs: _Legs) -> None:
    # a part that reaches no output is a factor of the stage it reads with (an input-only factor of a
    # Kronecker product); alone it would feed nothing
    for c in comps:
        if not c.feeds and not c.entries:
            raise UnreachableLegError(
                f"node(s) {c.names} carry no open leg and share no index with the rest of the "
                "graph: they would contract to a constant factor (the graph's scale is one); join them to the "
                "other nodes by a shared index, or remove them", node=c.names[0])
    unfed = [c for c in comps if not c.reads]
    if unfed and (has_nonlinear or len(unfed) == len(comps)):
        raise UnreachableLegError(
            f"node(s) {unfed[0].names} do not depend on the input: no path joins them to open leg "
            f"{legs.in_index!r} or to a nonlinear node's output"
            + ("" if not has_nonlinear else "; in a graph with nonlinear nodes every linear part must read the layer "
               "input or a nonlinear node's output"), node=unfed[0].names[0])


def _stages(comps: list[Component], legs: _Legs) -> list[list[int]]:
    """Components reading a common activation contract together (union-find over activations); in a
    linear graph, components that read nothing join the one stage. Every stage must feed something."""
    parent = list(range(len(comps)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    fed = [k for k, c in enumerate(comps) if c.reads]
    reader: dict[str, int] = {}
    for k in fed:
        for key in comps[k].reads:
            if key in reader:
                parent[find(k)] = find(reader[key])
            else:
                reader[key] = k
    for k, c in enumerate(comps):
        if not c.reads:   # a linear graph: one stage (its readers all read the layer input)
            parent[find(k)] = find(fed[0])
    groups: dict[int, list[int]] = defaultdict(list)
    for k in range(len(comps)):
        groups[find(k)].append(k)
    for members in groups.values():
        if not any(comps[k].feeds for k in members):
            names = [name for k in members for name in comps[k].names]
            raise UnreachableLegError(
                f"node(s) {names} feed nothing: no path joins them to open leg {legs.out_index!r} or to a nonlinear "
                "node's input; connect them to a later node by a shared index, or remove them", node=names[0])
    return list(groups.values())


class _Ordering:
    """Event-driven ordering of the stages and nonlinear nodes: a stage waits for the activations it
    reads, a nonlinear node for its inputs; ready items run in the order of their first node in the
    graph. :meth:`run` returns the schedule."""

    def __init__(self, nodes: list[Node], nonlin: list[Nonlinear], comps: list[Component],
                 stages: list[list[int]], legs: _Legs):
        self.nodes, self.nonlin, self.comps, self.legs = nodes, nonlin, comps, legs
        self.pos = {n.name: k for k, n in enumerate(nodes)}
        self.stages = [(min(self.pos[comps[k].nodes[0].name] for k in members), members,
                        frozenset().union(*(comps[k].reads for k in members))) for members in stages]
        self.missing: dict[tuple[str, int], int] = {}
        self.heap: list[tuple[int, int, int]] = []          # (position, 0 = stage / 1 = nonlinear, id)
        self.waiting_on: dict[str, list[int]] = defaultdict(list)
        self.nl_wait: dict[str, list[int]] = defaultdict(list)
        self.acts: list[tuple[str, ...]] = [legs.in_inds]
        self.avail: dict[str, int] = {i: 0 for i in legs.in_inds}
        self.consumed: set[int] = set()
        self.steps: list[ContractStep | ApplyStep] = []
        self.order: list[str] = []

    def _ready(self, kind: str, ident: int) -> None:
        self.missing[(kind, ident)] -= 1
        if not self.missing[(kind, ident)]:
            pos = self.stages[ident][0] if kind == "s" else self.pos[self.nonlin[ident].name]
            heapq.heappush(self.heap, (pos, 0 if kind == "s" else 1, ident))

    def _publish(self, out_id: int) -> None:
        for i in self.acts[out_id]:
            self.avail[i] = out_id
            for j in self.nl_wait.get(i, ()):
                self._ready("n", j)

    def run(self) -> Schedule:
        for sid, (p0, _, keys) in enumerate(self.stages):
            self.missing[("s", sid)] = len(keys - {""})
            for key in keys - {""}:
                self.waiting_on[key].append(sid)
            if not self.missing[("s", sid)]:
                heapq.heappush(self.heap, (p0, 0, sid))
        for j, n in enumerate(self.nonlin):
            self.missing[("n", j)] = len(set(n.inputs))
            for i in set(n.inputs):
                self.nl_wait[i].append(j)
        for i in self.legs.in_inds:  # nonlinear nodes reading the layer input directly
            for j in self.nl_wait.get(i, ()):
                self._ready("n", j)
        done = 0
        while self.heap:
            _, kind, ident = heapq.heappop(self.heap)
            done += 1
            self._contract(ident) if kind == 0 else self._apply(ident)
        if done < len(self.stages) + len(self.nonlin):
            self._stuck()
        return self._finish()

    def _contract(self, sid: int) -> None:
        members = self.stages[sid][1]
        comps = [self.comps[k] for k in members]
        used = {i for c in comps for i in c.inds}
        entries = list(dict.fromkeys(i for c in comps for i in c.entries))
        act_ids = tuple(dict.fromkeys(self.avail[i] for i in entries))
        for a in act_ids:
            extra = [i for i in self.acts[a] if i not in used]
            if extra:
                names = [name for c in comps for name in c.names]
                raise GraphError(
                    f"node(s) {names} take part of a stage output that also carries {extra}; a stage's output "
                    "must be consumed whole", node=names[0], index=extra[0])
        legs = self.legs
        shared = set(legs.in_inds) & set(legs.out_inds)
        inds = list(dict.fromkeys(i for c in comps for i in c.inds))
        exits = tuple(i for i in inds if (i in legs.sinks and i not in legs.sources) or i in shared)
        if set(exits) == set(legs.out_inds):
            exits = legs.out_inds
        self.acts.append(exits)
        out_id = len(self.acts) - 1
        self.consumed.update(act_ids)
        step_nodes = tuple(n.name for c in comps for n in _flow_order(list(c.nodes), list(c.entries)))
        self.steps.append(ContractStep(step_nodes, act_ids, exits, out_id))
        self.order.extend(step_nodes)
        self._publish(out_id)

    def _apply(self, j: int) -> None:
        n = self.nonlin[j]
        src = {self.avail[i] for i in n.inputs}
        if len(src) != 1 or set(self.acts[next(iter(src))]) != set(n.inputs):
            raise GraphError(_partial_input_message(n, [self.acts[a] for a in sorted(src)], sorted(src) == [0],
                                                    self.steps, self.nodes), node=n.name)
        a = next(iter(src))
        if self.acts[a] != n.inputs:  # same set, other order: the node defines the order it reads
            raise GraphError(f"nonlinear node {n.name!r} lists inputs {n.inputs} but the stage before it "
                             f"produces them in the order {self.acts[a]}; list them in that order", node=n.name)
        self.acts.append(n.outputs)
        out_id = len(self.acts) - 1
        self.consumed.add(a)
        self.steps.append(ApplyStep(n.name, a, out_id))
        self.order.append(n.name)
        for sid in self.waiting_on.get(n.name, ()):
            self._ready("s", sid)
        self._publish(out_id)

    def _stuck(self) -> None:
        waiting = [(sid, st) for sid, st in enumerate(self.stages) if self.missing[("s", sid)]]
        stuck = [self.comps[k].nodes[0].name for _, st in waiting for k in st[1]]
        stuck += [n.name for j, n in enumerate(self.nonlin) if self.missing[("n", j)]]
        never = sorted({i for _, st in waiting for k in st[1] for i in self.comps[k].entries if i not in self.avail}
                       | {i for j, n in enumerate(self.nonlin) if self.missing[("n", j)] for i in n.inputs
                          if i not in self.avail})
        raise UnreachableLegError(
            f"node(s) {stuck} cannot be reached from the input {self.legs.in_index!r}: indices {never} are "
            "never produced (a cycle through nonlinear nodes, or a missing stage)", node=stuck[0])

    def _finish(self) -> Schedule:
        out_inds = self.legs.out_inds
        first_out = out_inds[0]
        if first_out not in self.avail or self.acts[self.avail[first_out]] != out_inds:
            got = self.acts[self.avail[first_out]] if first_out in self.avail else None
            raise UnreachableLegError(
                f"the last stage must produce exactly the open leg(s) {out_inds}, got indices {got}",
                index=first_out)
        final = self.avail[first_out]
        unused = [k for k in range(len(self.acts)) if k not in self.consumed and k != final]
        if unused:
            raise UnreachableLegError(f"a stage output with indices {self.acts[unused[0]]} is used by nothing")
        return Schedule(tuple(self.steps), tuple(self.acts), tuple(self.order))


def _partial_input_message(n: Nonlinear, got: list[tuple[str, ...]], from_input: bool,
                           schedule: list[ContractStep | ApplyStep], nodes: list[Node]) -> str:
    """Why nonlinear node ``n`` cannot read its inputs, and what to do about it."""
    where = "the layer input" if from_input else "the stage before it"
    if len(got) > 1:
        return (f"nonlinear node {n.name!r} takes indices {n.inputs}, which come from {len(got)} different stage "
                f"outputs {got}; a nonlinear node maps one whole activation: join the nodes producing them into "
                "one connected stage (a shared bond), or give each part its own nonlinear node")
    extra = [i for i in got[0] if i not in n.inputs]
    holders = sorted({m.name for m in nodes if not isinstance(m, Nonlinear) and set(m.inds) & set(extra)},
                     key=[m.name for m in nodes].index)
    why = (f"; {extra} reach it through node(s) {holders}, which contract together with the nodes before it "
           "because they read the same activation" if holders and not from_input else "")
    return (f"nonlinear node {n.name!r} takes indices {n.inputs}, but {where} carries {got[0]}{why}. A nonlinear "
            f"node maps a whole activation: list {extra} among its inputs (and outputs) too, or contract them "
            "away with a linear node before it")


def _components(linear: list[Node]) -> list[list[Node]]:
    """Connected components of the linear nodes (joined by shared indices), each in graph order,
    ordered by their first node."""
    parent = list(range(len(linear)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[str, int] = {}
    for k, n in enumerate(linear):
        for i in n.inds:
            if i in first:
                parent[find(k)] = find(first[i])
            else:
                first[i] = k
    comps: dict[int, list[Node]] = defaultdict(list)
    for k, n in enumerate(linear):
        comps[find(k)].append(n)
    return list(comps.values())


def _flow_order(comp: list[Node], entries: list[str]) -> list[Node]:
    """The component's nodes breadth-first from the stage's inputs (level by level, graph order
    within a level), so node order follows the data flow."""
    holders: dict[str, list[int]] = defaultdict(list)
    for k, n in enumerate(comp):
        for i in n.inds:
            holders[i].append(k)
    seen = [False] * len(comp)
    out: list[Node] = []
    frontier = list(dict.fromkeys(entries))
    reached = set(frontier)
    while len(out) < len(comp):
        level = sorted({k for i in frontier for k in holders.get(i, ()) if not seen[k]})
        if not level:  # nothing touches the frontier: start from the first node left
            level = [next(k for k in range(len(comp)) if not seen[k])]
        frontier = []
        for k in level:
            seen[k] = True
            out.append(comp[k])
            for i in comp[k].inds:
                if i not in reached:
                    reached.add(i)
                    frontier.append(i)
    return out
