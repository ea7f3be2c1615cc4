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
    in_index = in_inds[0] if len(in_inds) == 1 else in_inds
    out_index = out_inds[0] if len(out_inds) == 1 else out_inds
    shared_legs = set(in_inds) & set(out_inds)
    pos = {n.name: k for k, n in enumerate(nodes)}
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
    sources = set(in_inds) | set(nl_out)
    sinks = set(out_inds) | set(nl_in)
    # the activation a source index belongs to: "" is the layer input, else the nonlinear node's name
    source_of = {**{i: "" for i in in_inds}, **nl_out}

    comps = _components(linear)
    infos = []
    for c in comps:
        inds = list(dict.fromkeys(i for n in c for i in n.inds))
        entries = [i for i in inds if i in sources]
        infos.append((c, inds, entries, set(dict.fromkeys(source_of[i] for i in entries))))
    # a part that reaches no output is a factor of the stage it reads with (an input-only factor of a
    # Kronecker product); alone it would feed nothing
    feeds = [any(i in sinks for i in info[1]) for info in infos]
    for info, f in zip(infos, feeds):
        if not f and not info[2]:
            raise UnreachableLegError(
                f"node(s) {[n.name for n in info[0]]} carry no open leg and share no index with the rest of the "
                "graph: they would contract to a constant factor (the graph's scale is one); join them to the "
                "other nodes by a shared index, or remove them", node=info[0][0].name)
    fed = [k for k, info in enumerate(infos) if info[3]]
    unfed = [k for k, info in enumerate(infos) if not info[3]]
    if unfed and (nonlin or not fed):
        c = infos[unfed[0]][0]
        raise UnreachableLegError(
            f"node(s) {[n.name for n in c]} do not depend on the input: no path joins them to open leg "
            f"{in_index!r} or to a nonlinear node's output"
            + ("" if not nonlin else "; in a graph with nonlinear nodes every linear part must read the layer "
               "input or a nonlinear node's output"), node=c[0].name)

    # stages: components reading a common activation contract together (union-find over activations)
    parent = list(range(len(infos)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    reader: dict[str, int] = {}
    for k in fed:
        for key in infos[k][3]:
            if key in reader:
                parent[find(k)] = find(reader[key])
            else:
                reader[key] = k
    for k in unfed:   # a linear graph: one stage (its readers all read the layer input)
        parent[find(k)] = find(fed[0])
    groups: dict[int, list[int]] = defaultdict(list)
    for k in range(len(infos)):
        groups[find(k)].append(k)
    for members in groups.values():
        if not any(feeds[k] for k in members):
            c = infos[members[0]][0]
            raise UnreachableLegError(
                f"node(s) {[n.name for k in members for n in infos[k][0]]} feed nothing: no path joins them to open "
                f"leg {out_index!r} or to a nonlinear node's input; connect them to a later node by a shared index, "
                "or remove them", node=c[0].name)

    # event-driven: a stage waits for the activations it reads, a nonlinear node for its inputs;
    # ready items run in the order of their first node in the graph
    stages = []
    for members in groups.values():
        keys = set().union(*(infos[k][3] for k in members))
        stages.append((min(pos[infos[k][0][0].name] for k in members), members, keys))
    waiting_on: dict[str, list[int]] = defaultdict(list)
    missing = {}
    heap: list[tuple[int, int, int]] = []   # (position, 0 = stage / 1 = nonlinear, id)
    for sid, (p0, _, keys) in enumerate(stages):
        missing[("s", sid)] = len(keys - {""})
        for key in keys - {""}:
            waiting_on[key].append(sid)
        if not missing[("s", sid)]:
            heapq.heappush(heap, (p0, 0, sid))
    nl_wait: dict[str, list[int]] = defaultdict(list)
    for j, n in enumerate(nonlin):
        missing[("n", j)] = len(set(n.inputs))
        for i in set(n.inputs):
            nl_wait[i].append(j)
    acts: list[tuple[str, ...]] = [in_inds]
    avail: dict[str, int] = {i: 0 for i in in_inds}
    consumed: set[int] = set()
    schedule: list[ContractStep | ApplyStep] = []
    order: list[str] = []

    def publish(out_id: int) -> None:
        for i in acts[out_id]:
            avail[i] = out_id
            for j in nl_wait.get(i, ()):
                missing[("n", j)] -= 1
                if not missing[("n", j)]:
                    heapq.heappush(heap, (pos[nonlin[j].name], 1, j))

    for i in in_inds:  # nonlinear nodes reading the layer input directly
        for j in nl_wait.get(i, ()):
            missing[("n", j)] -= 1
            if not missing[("n", j)]:
                heapq.heappush(heap, (pos[nonlin[j].name], 1, j))
    done = 0
    while heap:
        _, kind, ident = heapq.heappop(heap)
        done += 1
        if kind == 0:
            _, members, _ = stages[ident]
            inds = list(dict.fromkeys(i for k in members for i in infos[k][1]))
            used = set(inds)
            entries = list(dict.fromkeys(i for k in members for i in infos[k][2]))
            act_ids = tuple(dict.fromkeys(avail[i] for i in entries))
            for a in act_ids:
                extra = [i for i in acts[a] if i not in used]
                if extra:
                    names = [n.name for k in members for n in infos[k][0]]
                    raise GraphError(
                        f"node(s) {names} take part of a stage output that also carries {extra}; a stage's output "
                        "must be consumed whole", node=names[0], index=extra[0])
            exits = tuple(i for i in inds if (i in sinks and i not in sources) or i in shared_legs)
            if set(exits) == set(out_inds):
                exits = out_inds
            acts.append(exits)
            out_id = len(acts) - 1
            consumed.update(act_ids)
            step_nodes = tuple(n.name for k in members for n in _flow_order(infos[k][0], infos[k][2]))
            schedule.append(ContractStep(step_nodes, act_ids, exits, out_id))
            order.extend(step_nodes)
            publish(out_id)
        else:
            n = nonlin[ident]
            src = {avail[i] for i in n.inputs}
            if len(src) != 1 or set(acts[next(iter(src))]) != set(n.inputs):
                raise GraphError(_partial_input_message(n, [acts[a] for a in sorted(src)], sorted(src) == [0],
                                                        schedule, nodes), node=n.name)
            a = next(iter(src))
            if acts[a] != n.inputs:  # same set, other order: the node defines the order it reads
                raise GraphError(f"nonlinear node {n.name!r} lists inputs {n.inputs} but the stage before it "
                                 f"produces them in the order {acts[a]}; list them in that order", node=n.name)
            acts.append(n.outputs)
            out_id = len(acts) - 1
            consumed.add(a)
            schedule.append(ApplyStep(n.name, a, out_id))
            order.append(n.name)
            for sid in waiting_on.get(n.name, ()):
                missing[("s", sid)] -= 1
                if not missing[("s", sid)]:
                    heapq.heappush(heap, (stages[sid][0], 0, sid))
            publish(out_id)
    if done < len(stages) + len(nonlin):
        stuck = [infos[k][0][0].name for sid, st in enumerate(stages) if missing[("s", sid)] for k in st[1]]
        stuck += [n.name for j, n in enumerate(nonlin) if missing[("n", j)]]
        never = sorted({i for sid, st in enumerate(stages) if missing[("s", sid)] for k in st[1]
                        for i in infos[k][2] if i not in avail}
                       | {i for j, n in enumerate(nonlin) if missing[("n", j)] for i in n.inputs if i not in avail})
        raise UnreachableLegError(
            f"node(s) {stuck} cannot be reached from the input {in_index!r}: indices {never} are "
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
