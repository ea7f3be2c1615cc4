"""The values of an adapter graph, and its torch forward pass.

:class:`GraphModule` owns one parametrization module per node and runs the graph's schedule:
each linear stage is one planned contraction (:mod:`tnpeft.contract`), each nonlinear node an
element-wise function. Plans are fetched from the process-wide cache once per batch-size bucket
and then kept on the module, so a steady-state forward does no planning and no cache look-up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tnpeft.contract import ContractionPlan, PlanView, count_cache_hit, plan_for
from tnpeft.contract.kernels import autocast_on
from tnpeft.errors import GraphError, NotMergeableError
from tnpeft.graph.nodes import Dense, Diagonal, Node, Nonlinear, Unitary
from tnpeft.graph.schedule import ApplyStep, ContractStep
from tnpeft.params import HYPERNETWORKS, NONLINEAR_MAPS, UNITARY_PARAMS, DenseParam, DiagonalParam, get_function
from tnpeft.params.unitary import FrameModule, FrameScope
from tnpeft.runtime.applied_frames import FrameApplication, frame_application

if TYPE_CHECKING:  # pragma: no cover
    from tnpeft.graph.graph import Graph

_BATCH = "__batch__"


class RuntimeStep(NamedTuple):
    """One step of the schedule as the forward runs it: the step, the position of its contraction
    plan (``-1`` for a nonlinear step), and the frame it applies instead of contracting (or ``None``)."""

    step: ContractStep | ApplyStep
    plan: int
    applied: FrameApplication | None


def _bucket(n: int) -> int:
    # plans depend on the batch size only through cost; round it up to a power of two so that
    # varying sequence lengths reuse a handful of plans instead of planning every step
    return 1 << max(0, (n - 1).bit_length())


def build_param(node: Node, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                rng: torch.Generator | None = None, scope: FrameScope | None = None) -> nn.Module:
    """The parametrization module of one node (frames join ``scope`` for batched materialization);
    ``rng`` draws the initial values."""
    if isinstance(node, Dense):
        return DenseParam(node.sizes, node.init, node.trainable, dtype, device, rng, std=node.std)
    if isinstance(node, Diagonal):
        return DiagonalParam(node.sizes[0], node.init, node.trainable, dtype, device, rng, active=node.active)
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


class GraphModule(nn.Module):
    """Trainable values of a :class:`~tnpeft.Graph` and its forward pass.

    ``module(x)`` returns ``scale · contract(graph, dropout(x))`` with shape ``(..., out_features)``.
    Parameters are registered as ``<node name>.<parameter>`` (e.g. ``A.weight``).

    Args:
        graph: the structure.
        dtype, device: of the parameters.
        rng: a ``torch.Generator`` for reproducible initialisation.
        scope: frames of equal shape in one :class:`~tnpeft.params.unitary.FrameScope` are
            materialized in one batched pass (``inject`` shares one scope across a model); by
            default the graph has its own.
        optimize: the contraction optimizer handed to cotengra (a preset name such as ``"auto"``,
            ``"greedy"``, ``"optimal"``, or an optimizer object); plans are cached per optimizer.

    Raises :class:`~tnpeft.errors.BudgetError` before allocating anything if the graph exceeds the
    allocation budgets (:meth:`tnpeft.Graph.check_budget`).
    """

    # the children are read straight from ``_modules`` on the hot path (no ``__getattr__``); torch
    # types that dict's values as ``Module | None`` and module attributes as ``Tensor | Module``
    _modules: dict[str, Any]
    _first_param: nn.Parameter | None

    def __init__(self, graph: Graph, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None, scope: FrameScope | None = None, optimize: object = "auto"):
        super().__init__()
        graph.check_budget()           # sizes bounded before anything is allocated
        self.graph = graph
        self.optimize = optimize
        scope = scope if scope is not None else FrameScope()
        self._fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for name, node in graph.nodes.items():
            if isinstance(node, Nonlinear):
                if node.is_elementwise:
                    self._fns[name] = get_function(node.fn, name)
                else:
                    m = NONLINEAR_MAPS[node.fn].build(node.sizes[: node.n_inputs], node.sizes[node.n_inputs:],
                                                      dtype=dtype, device=device, rng=rng,
                                                      node=name, **node.options)
                    m.requires_grad_(node.trainable)
                    self.add_module(name, m)
                    self._fns[name] = m
            elif name not in graph.generated:
                self.add_module(name, build_param(node, dtype, device, rng, scope))
        for name, net in graph.hypernetworks.items():
            gen = HYPERNETWORKS[net.kind].build(graph.generated_size(name), dtype=dtype, device=device, rng=rng,
                                                **net.options)
            join = getattr(gen, "join_scope", None)
            if join is not None:   # hyper-networks of one shape across layers run as one batch
                join(scope)
            self.add_module(name, gen)
        # the schedule as the hot loop reads it: each contraction with its plan's position, or the
        # frame it applies to the activation instead of forming the frame's matrix
        self._applied: dict[int, FrameApplication] = {}
        steps: list[RuntimeStep] = []
        k = 0
        for step in graph.schedule:
            if not isinstance(step, ContractStep):
                steps.append(RuntimeStep(step, -1, None))
                continue
            applied = None
            if len(step.inputs) == 1 and len(step.nodes) == 1 and step.nodes[0] not in graph.generated:
                name = step.nodes[0]
                applied = frame_application(graph.nodes[name], self._modules.get(name),
                                            (_BATCH,) + graph.activations[step.inputs[0]], (_BATCH,) + step.exits,
                                            graph.size_dict)
                if applied is not None:
                    self._applied[k] = applied
                    self._modules[name].leave_scope()   # never formed on the hot path: no batching
            steps.append(RuntimeStep(step, k, applied))
            k += 1
        self._steps = tuple(steps)
        # nodes whose tensor is a parameter, read without calling their module on the hot path
        self._weight_nodes = frozenset(
            name for name, node in graph.nodes.items() if name not in graph.generated and
            (isinstance(node, Dense) or (isinstance(node, Diagonal) and node.active is None)))
        self._gen_cache: dict[str, tuple[tuple[tuple[int, ...], ...], dict[str, torch.Tensor]]] = {}
        self._in_shape = (-1,) + tuple(graph.size_dict[i] for i in graph.in_inds)
        self._views: dict[tuple[int, torch.dtype, torch.device], list[PlanView]] = {}
        self._last_key: tuple[int, torch.dtype, torch.device] | None = None
        self._last_plans: list[ContractionPlan] | None = None
        self.__dict__["_first_param"] = next(iter(self.parameters()), None)  # a reference, not a registration

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype of the module's parameters (the default dtype if it has none)."""
        # the parameter object survives .to()/.half() (its data is swapped in place)
        p = self._first_param
        return p.dtype if p is not None else torch.get_default_dtype()

    def extra_repr(self) -> str:
        g = self.graph
        return f"{g.name or 'graph'}: {g.in_features} → {g.out_features}, scale={g.scale:g}"

    # ------------------------------------------------------------ node tensors
    def tensor(self, name: str) -> torch.Tensor:
        """The materialized tensor of node ``name``."""
        if name not in self.graph.nodes:
            raise GraphError(f"no node named {name!r}; the graph has {list(self.graph.nodes)}", node=name)
        if isinstance(self.graph.nodes[name], Nonlinear):
            raise GraphError(f"node {name!r} is nonlinear and has no tensor", node=name)
        if name in self.graph.generated:
            return self.generated_values(self.graph.generated[name])[name]
        m = self._modules[name]
        t: torch.Tensor = m.weight if name in self._weight_nodes else m()
        return t

    def generated_values(self, hypernetwork: str, probs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The tensors hyper-network ``hypernetwork`` fills, by node name.

        With gradients enabled they are generated afresh on every call (once per training
        forward); with gradients disabled (evaluation, merging) they are cached until a parameter
        of the hyper-network changes. ``probs`` replaces the simulated circuit probabilities (e.g.
        by ones measured on a quantum backend) and bypasses the cache.
        """
        gen = self._modules[hypernetwork]
        key = (tuple(p._version for p in gen.parameters()), tuple(p.data_ptr() for p in gen.parameters()))
        if probs is None and not torch.is_grad_enabled():
            hit = self._gen_cache.get(hypernetwork)
            if hit is not None and hit[0] == key:
                return hit[1]
        flat = gen(probs) if probs is not None else gen()
        out: dict[str, torch.Tensor] = {}
        start = 0
        for o in self.graph.hypernetworks[hypernetwork].outputs:
            shape = self.graph.nodes[o].sizes
            n = math.prod(shape)
            out[o] = flat[start:start + n].reshape(shape)
            start += n
        if probs is None and not torch.is_grad_enabled():
            self._gen_cache[hypernetwork] = (key, out)
        return out

    def clear_generated(self, hypernetwork: str | None = None) -> None:
        """Forget the cached generated values (of one hyper-network, or all)."""
        if hypernetwork is None:
            self._gen_cache.clear()
        else:
            self._gen_cache.pop(hypernetwork, None)

    def _tensors(self, names: tuple[str, ...]) -> list[torch.Tensor]:
        mods = self._modules
        gen = self.graph.generated
        if not gen:
            return [mods[n].weight if n in self._weight_nodes else mods[n]() for n in names]
        values: dict[str, torch.Tensor] = {}
        for g in dict.fromkeys(gen[n] for n in names if n in gen):
            values.update(self.generated_values(g))
        return [values[n] if n in values else mods[n].weight if n in self._weight_nodes else mods[n]() for n in names]

    # ------------------------------------------------------------ plans
    def _stage_views(self, rows: int, dtype: torch.dtype, device: torch.device) -> list[PlanView]:
        """The plans of the linear stages for ``rows`` input rows, with this graph's names; kept on
        the module per (batch-size bucket, dtype, device)."""
        key = (_bucket(rows), dtype, device)
        views = self._views.get(key)
        if views is None:
            g = self.graph
            sizes = dict(g.size_dict)
            sizes[_BATCH] = key[0]
            views = []
            for step in g.schedule:
                if isinstance(step, ContractStep):
                    inputs = [(_BATCH,) + g.activations[a] for a in step.inputs]
                    inputs += [g.nodes[n].inds for n in step.nodes]
                    names = [("x" if a == 0 else f"h{a}") for a in step.inputs] + list(step.nodes)
                    views.append(plan_for(inputs, (_BATCH,) + step.exits, sizes, names=names,
                                          key_extra=(str(dtype), str(device)), optimize=self.optimize))
            self._views[key] = views
        return views

    def _stage_plans(self, rows: int, dtype: torch.dtype, device: torch.device) -> list[ContractionPlan]:
        # the hot path: the plans last used, without a look-up, while the bucket stays the same
        key = (_bucket(rows), dtype, device)
        if key == self._last_key:
            count_cache_hit()
            return self._last_plans  # type: ignore[return-value]
        plans = [v.plan for v in self._stage_views(rows, dtype, device)]
        self._last_key, self._last_plans = key, plans
        return plans

    def plan(self, rows: int = 512) -> list[PlanView]:
        """The contraction plans (one per linear stage) used for ``rows`` input rows, each with this
        graph's operand and index names (``.describe()``, ``.order``, ``.tree``, ``.flops``)."""
        p = next(iter(self.parameters()), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        device = p.device if p is not None else torch.device("cpu")
        return self._stage_views(rows, dtype, device)

    # ------------------------------------------------------------ forward
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the first activation: checked (a floating-point tensor with ``in_features`` on its
        last axis, on the values' device), outside autocast cast to the parameters' dtype (as
        :class:`~tnpeft.nn.TNLinear` casts it), reshaped into the input legs, dropout applied."""
        g = self.graph
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise GraphError(f"graph {g.name or ''!s}: the input must be a floating-point tensor, got "
                             f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}", index=g.in_inds[0])
        if x.shape[-1] != g.in_features:
            raise GraphError(f"input has {x.shape[-1]} features on its last axis; graph {g.name or ''!s} expects "
                             f"open leg {g.in_index!r} of size {g.in_features}", index=g.in_inds[0])
        p = self._first_param
        if p is not None and p.device != x.device:
            raise GraphError(f"graph {g.name or ''!s}: the input is on {x.device}, the adapter's values on {p.device}"
                             + (" (the meta device holds no values: materialize the module first)"
                                if p.is_meta else "; move one of them"), index=g.in_inds[0])
        if p is not None and x.dtype != p.dtype and not autocast_on(x.device.type):
            x = x.to(p.dtype)
        h = x.reshape(self._in_shape)
        if g.dropout and self.training:
            h = F.dropout(h, g.dropout, True)
        return h

    def _run(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The stage loop — the one hot path of the forward. Without ``out``: the last activation
        (unscaled). With ``out`` (``(rows, out_features)``-viewable, an additive graph): the last
        contraction is added into ``out`` with the scale, as one matrix product where it is one."""
        plans = self._stage_plans(h.shape[0], h.dtype, h.device)
        acts: dict[int, torch.Tensor] = {0: h}
        last = len(self._steps) - 1
        g = self.graph
        for n, rs in enumerate(self._steps):
            step = rs.step
            if isinstance(step, ApplyStep):
                acts[step.output] = self._fns[step.node](acts[step.input])
                continue
            if rs.applied is not None:
                y = rs.applied.run(self._modules[rs.applied.node], acts[step.inputs[0]])
                if out is not None and n == last:
                    return out + g.scale * y.reshape(out.shape)
                acts[step.output] = y
                continue
            ops = [acts[a] for a in step.inputs] + self._tensors(step.nodes)
            if out is not None and n == last:
                return plans[rs.plan].accumulate(out.view(-1, g.out_features), *ops, alpha=g.scale).view(out.shape)
            acts[step.output] = plans[rs.plan](*ops)
        return acts[g.schedule[-1].output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.graph
        lead = x.shape[:-1]
        out = self._run(self._input(x))
        if g.scale != 1.0:
            out = out * g.scale
        return out.reshape(*lead, g.out_features)

    def accumulate(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out + scale · contract(graph, dropout(x))``. For an additive graph (``out`` of the
        adapter's dtype and contiguous) whose last contraction is one matrix product — for any
        number of output indices, as long as the product's rows and columns read the output in
        order — that product is one ``addmm`` with the base layer's output as its addend — no
        adapter-sized temporary, no separate scale and add — and in place when no gradient is
        recorded. Returns the result."""
        g = self.graph
        if (g.mode != "add" or out.dtype != x.dtype or not out.is_contiguous() or not x.is_floating_point()
                or (x.dtype != self.param_dtype and not autocast_on(x.device.type))
                or x.shape[-1] != g.in_features or not isinstance(g.schedule[-1], ContractStep)
                or torch.compiler.is_compiling()):   # compiled graphs fuse the add themselves
            y: torch.Tensor = self(x)   # nn.Module.__call__ is typed as returning Any
            return out + y.to(out.dtype)
        return self._run(self._input(x), out)

    def dense(self, scaled: bool = False) -> torch.Tensor:
        """ΔW, shape ``(out_features, in_features)``: the whole linear network contracted."""
        g = self.graph
        if not g.is_linear:
            bad = next(n for n in g.nodes.values() if isinstance(n, Nonlinear))
            raise NotMergeableError(
                f"graph {g.name or ''!s} has nonlinear node {bad.name!r}: its update depends on the input and is "
                "not a fixed matrix, so it cannot be materialized or merged")
        first = g.schedule[0]
        assert isinstance(first, ContractStep)   # a linear graph is one contraction
        names = first.nodes
        inputs = [g.nodes[n].inds for n in names]
        shared = g.shared_legs
        in_only = tuple(i for i in g.in_inds if i not in shared)
        plan = plan_for(inputs, g.out_inds + in_only, g.size_dict, names=names, key_extra=("dense",),
                        optimize=self.optimize)
        w = plan(*self._tensors(names))
        for ind in shared:  # a pass-through index: place the result on its diagonal
            pos = g.out_inds.index(ind)
            w = torch.diag_embed(w.movedim(pos, -1))          # (..., s, s): the new last axis is the in-side copy
            w = w.movedim(-2, pos)
            in_only = in_only + (ind,)
        order = [g.out_inds.index(i) for i in g.out_inds] + [len(g.out_inds) + in_only.index(i) for i in g.in_inds]
        w = w.permute(order).reshape(g.out_features, g.in_features)
        return w * g.scale if scaled and g.scale != 1.0 else w

    def to_quimb(self) -> Any:
        """A ``quimb.tensor.TensorNetwork`` with the node tensors (as numpy arrays), their index
        names, and tags ``{node name, KIND}``. The open legs stay open; a graph with nonlinear
        nodes has no such network (quimb networks are multilinear) and raises."""
        g = self.graph
        if not g.is_linear:
            bad = next(n for n in g.nodes.values() if isinstance(n, Nonlinear))
            raise NotMergeableError(f"nonlinear node {bad.name!r} has no quimb tensor; to_quimb needs a linear graph")
        import quimb.tensor as qtn

        with torch.no_grad():
            ts = [qtn.Tensor(self.tensor(name).detach().cpu().numpy(), inds=node.inds, tags={name, node.kind.upper()})
                  for name, node in g.nodes.items()]
        return qtn.TensorNetwork(ts)
