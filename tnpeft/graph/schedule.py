"""A graph's schedule: nonlinear nodes cut the network into stages contracted in sequence.

Each :class:`ContractStep` contracts one connected group of linear nodes with the activations
entering it; each :class:`ApplyStep` applies one nonlinear node to one stage's output. The
schedule is computed once, when the graph is built.
"""

from __future__ import annotations

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


def build_schedule(nodes: list[Node], in_inds: tuple[str, ...], out_inds: tuple[str, ...]) -> Schedule:
    """The stages of a graph: which nodes contract together, in which order, on which activations.

    Raises a :class:`~tnpeft.errors.GraphError` subclass naming the node and index at fault when
    some part of the network cannot be reached from the input or feeds nothing."""
    in_index = in_inds[0] if len(in_inds) == 1 else in_inds
    out_index = out_inds[0] if len(out_inds) == 1 else out_inds
    shared_legs = tuple(i for i in in_inds if i in out_inds)
    linear = [n for n in nodes if not isinstance(n, Nonlinear)]
    nonlin = [n for n in nodes if isinstance(n, Nonlinear)]
    nl_in = {i: n.name for n in nonlin for i in n.inputs}
    nl_out: dict[str, str] = {}
    for n in nonlin:
        for i in n.outputs:
            if i in nl_out or i in in_inds:
                raise GraphError(f"index {i!r} is produced twice (by nonlinear node {n.name!r} and by "
                                 f"{nl_out.get(i, 'the layer input')!r})", node=n.name, index=i)
            nl_out[i] = n.name
    for n in nonlin:
        for i in n.inputs:
            if i in out_inds:
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
    sources = set(in_inds) | set(nl_out)
    sinks = set(out_inds) | set(nl_in)

    def comp_inds(c: list[Node]) -> list[str]:
        return list(dict.fromkeys(i for n in c for i in n.inds))

    pending = dict(comps)
    for c in pending.values():
        inds = comp_inds(c)
        if not any(i in sources for i in inds):
            raise UnreachableLegError(
                f"node(s) {[n.name for n in c]} do not depend on the input: no path joins them to open leg "
                f"{in_index!r} or to a nonlinear node's output", node=c[0].name)
        if not any(i in sinks for i in inds):
            raise UnreachableLegError(
                f"node(s) {[n.name for n in c]} feed nothing: no path joins them to open leg "
                f"{out_index!r} or to a nonlinear node's input", node=c[0].name)
    pending_nl = {n.name: n for n in nonlin}
    acts: list[tuple[str, ...]] = [in_inds]
    avail: dict[str, int] = {i: 0 for i in in_inds}
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
            exits = tuple(i for i in inds if (i in sinks and i not in sources) or i in shared_legs)
            if set(exits) == set(out_inds):
                exits = out_inds
            acts.append(exits)
            out_id = len(acts) - 1
            for i in exits:
                avail[i] = out_id
            consumed.update(act_ids)
            schedule.append(ContractStep(tuple(n.name for n in _flow_order(c, entries)), act_ids,
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
                f"node(s) {stuck} cannot be reached from the input {in_index!r}: indices {missing} are "
                "never produced (a cycle through nonlinear nodes, or a missing stage)", node=stuck[0])
    first_out = out_inds[0]
    if first_out not in avail or acts[avail[first_out]] != out_inds:
        got = acts[avail[first_out]] if first_out in avail else None
        raise UnreachableLegError(
            f"the last stage must produce exactly the open leg(s) {out_inds}, got indices {got}",
            index=first_out)
    final = avail[first_out]
    unused = [k for k in range(len(acts)) if k not in consumed and k != final]
    if unused:
        raise UnreachableLegError(f"a stage output with indices {acts[unused[0]]} is used by nothing")
    return Schedule(tuple(schedule), tuple(acts), tuple(order))


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
