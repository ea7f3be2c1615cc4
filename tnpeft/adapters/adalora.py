"""AdaLoRA (Zhang et al., ICLR 2023, arXiv 2303.10512): ``ΔW = P Λ Q`` with an orthogonality
regulariser and a budget schedule that prunes the least important singular triplets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from tnpeft.adapters.methods import check_positive_int, method_of, register
from tnpeft.errors import AdapterStateError, ConfigError
from tnpeft.graph import Dense, Diagonal, Graph
from tnpeft.storage import graph_modules

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.hooks import RemovableHandle
    from transformers import TrainerCallback


@register("adalora", paper="Zhang et al., ICLR 2023, arXiv 2303.10512", learning_rate=1e-2, advice=(
    "Give total_step (the run's length, as tnpeft train does) so that its rank-budget schedule ends inside the "
    "run; its rate is about 5× LoRA's (1e-2)."),
          training_hook=lambda model, **kw: AdaLoRAController(model, **kw))
def adalora(in_features: int, out_features: int, r: int = 12, target_r: int = 8, alpha: float = 8.0,
            dropout: float = 0.0, total_step: int | None = None, tinit: int = 0, tfinal: int = 0, delta_t: int = 1,
            beta1: float = 0.85, beta2: float = 0.85, orth_reg_weight: float = 0.5) -> Graph:
    r"""AdaLoRA: ``ΔW = P Λ Q``, ``P ∈ R^{M×r}``, ``Λ = diag(λ)``, ``Q ∈ R^{r×N}``, scale ``alpha / r``.

    Graph::

        in ──[Q: r×in]── r ──(Λ)── r ──[P: out×r]── out

    ``P``, ``Q`` start ``N(0, 0.02²)`` and ``λ`` at zero (peft's init). Training adds
    ``orth_reg_weight · mean(‖PᵀP − I‖²_F + ‖QQᵀ − I‖²_F)`` and prunes triplets from ``r`` to
    ``target_r`` per layer on average (a budget over all layers) between ``tinit`` and
    ``total_step − tfinal``, every ``delta_t`` steps, with the cubic schedule of the paper;
    importance is ``Ī·Ū`` (EMAs with ``beta1``, ``beta2`` of ``|w·∂L/∂w|`` and of its deviation).
    The schedule is run by :class:`AdaLoRAController` — attach it to the optimizer once; nothing has
    to be called between ``backward()`` and ``zero_grad()``. It is the method's training hook, so
    :func:`tnpeft.train.fit` and ``tnpeft train`` attach it by themselves.

    Parameters (before pruning): ``r (N + M) + r``.
    """
    check_positive_int("adalora", "r", r)
    check_positive_int("adalora", "target_r", target_r)
    check_positive_int("adalora", "delta_t", delta_t)
    if target_r > r:
        raise ConfigError(f"adalora: target_r {target_r} exceeds r {r}", field="target_r")
    if total_step is not None:
        check_positive_int("adalora", "total_step", total_step)
        if tinit + tfinal >= total_step:
            raise ConfigError(f"adalora: tinit + tfinal = {tinit + tfinal} leaves no budget phase in "
                              f"total_step = {total_step}", field="total_step")
    for name, v in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"adalora: {name} must be in [0, 1), got {v!r}", field=name)
    return Graph(
        [Dense("Q", ("r", "in"), (r, in_features), init="small_normal"),
         Diagonal("E", ("r",), (r,), init="zeros"),
         Dense("P", ("out", "r"), (out_features, r), init="small_normal")],
        in_features=in_features, out_features=out_features, scale=alpha / r, dropout=dropout, name="adalora",
    )


def budget_at(step: int, total: int, init_bgt: int, target_bgt: int, tinit: int, tfinal: int,
              delta_t: int) -> tuple[int, bool]:
    """The paper's cubic budget schedule: ``(budget, prune now?)`` at ``step`` (1-based)."""
    if step <= tinit:
        return init_bgt, False
    if step > total - tfinal:
        return target_bgt, True
    frac = 1.0 - (step - tinit) / (total - tfinal - tinit)
    return int((init_bgt - target_bgt) * frac ** 3 + target_bgt), (step - tinit) % delta_t == 0


class AdaLoRAController:
    """Runs AdaLoRA's regulariser and budget schedule for one adapter of a model.

    ``controller.attach(optimizer)`` registers two optimizer hooks: before each ``step()`` it adds the
    gradient of the orthogonality regulariser to ``P`` and ``Q``; after it, it updates the importance
    EMAs from the gradients and zeroes the least important ``λ`` entries so that the model keeps the
    scheduled budget. Works in a plain loop and in ``transformers.Trainer`` (via
    :meth:`trainer_callback`). ``controller.regularization()`` returns the regulariser as a loss
    term instead, for those who prefer to add it themselves (then pass ``add_regularizer=False``).
    """

    def __init__(self, model: nn.Module, adapter_name: str = "default", total_step: int | None = None,
                 add_regularizer: bool = True):
        self.modules: dict[str, Any] = {}
        hp: dict[str, Any] | None = None
        try:
            found = graph_modules(model, adapter_name)
        except (AdapterStateError, ConfigError):
            found = {}
        for path, m in found.items():
            if method_of(m.graph) == "adalora":
                self.modules[path] = m
                hp = m.graph.meta["hparams"]
        if not self.modules or hp is None:
            raise AdapterStateError(f"the model has no AdaLoRA adapter named {adapter_name!r}")
        self.hp = dict(hp)
        total = total_step or hp.get("total_step")
        if not total:
            raise ConfigError("AdaLoRA needs total_step (the number of optimizer steps) to schedule the budget",
                              field="total_step")
        self.total: int = total
        if self.hp["tinit"] + self.hp["tfinal"] >= self.total:
            raise ConfigError(f"tinit + tfinal must be below total_step = {self.total}", field="total_step")
        self.r = hp["r"]
        self.init_bgt = self.r * len(self.modules)
        self.target_bgt = hp["target_r"] * len(self.modules)
        self.add_regularizer = add_regularizer
        self.step = 0
        self.budget = self.init_bgt
        self._ipt: dict[int, torch.Tensor] = {}
        self._unc: dict[int, torch.Tensor] = {}
        self._final_keep: torch.Tensor | None = None
        self._handles: list[RemovableHandle] = []

    # ---------------------------------------------------------------- regulariser
    def _pq(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for m in self.modules.values():
            yield m.P.weight, m.Q.weight

    def regularization(self) -> torch.Tensor:
        """``orth_reg_weight · mean over matrices of ‖PᵀP − I‖²_F, ‖QQᵀ − I‖²_F``."""
        terms = []
        for p, q in self._pq():
            eye = torch.eye(self.r, dtype=p.dtype, device=p.device)
            terms.append(((p.T @ p - eye) ** 2).sum())
            terms.append(((q @ q.T - eye) ** 2).sum())
        weight: float = self.hp["orth_reg_weight"]
        return weight * torch.stack(terms).mean()

    def _add_regularizer_grad(self) -> None:
        w = self.hp["orth_reg_weight"] / (2 * len(self.modules))
        with torch.no_grad():
            for p, q in self._pq():
                eye = torch.eye(self.r, dtype=p.dtype, device=p.device)
                for t, g in ((p, 4 * w * p @ (p.T @ p - eye)), (q, 4 * w * (q @ q.T - eye) @ q)):
                    if t.grad is None:
                        t.grad = g.clone()
                    else:
                        t.grad.add_(g)

    # ---------------------------------------------------------------- importance and budget
    def _score(self, t: torch.Tensor) -> torch.Tensor:
        key = id(t)
        ipt = (t * t.grad).abs().detach() if t.grad is not None else torch.zeros_like(t)
        b1, b2 = self.hp["beta1"], self.hp["beta2"]
        if key not in self._ipt:
            self._ipt[key] = torch.zeros_like(t)
            self._unc[key] = torch.zeros_like(t)
        self._ipt[key].mul_(b1).add_(ipt, alpha=1 - b1)
        self._unc[key].mul_(b2).add_((ipt - self._ipt[key]).abs(), alpha=1 - b2)
        return self._ipt[key] * self._unc[key]

    @torch.no_grad()
    def update_and_allocate(self) -> int:
        """Advance one step: update importances and prune to the scheduled budget. Returns the budget."""
        self.step += 1
        scores = []
        for m in self.modules.values():
            s = self._score(m.E.weight) + self._score(m.P.weight).mean(0) + self._score(m.Q.weight).mean(1)
            scores.append(s)
        budget, prune = budget_at(self.step, self.total, self.init_bgt, self.target_bgt, self.hp["tinit"],
                                  self.hp["tfinal"], self.hp["delta_t"])
        self.budget = budget
        if not prune:
            return budget
        flat = torch.cat(scores)
        if self.step > self.total - self.hp["tfinal"] and self._final_keep is not None:
            keep = self._final_keep
        else:
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[torch.topk(flat, budget).indices] = True
            if self.step > self.total - self.hp["tfinal"] or self.step >= self.total:
                self._final_keep = keep
        for k, m in enumerate(self.modules.values()):
            m.E.weight.masked_fill_(~keep[k * self.r:(k + 1) * self.r], 0.0)
        return budget

    def rank_pattern(self) -> dict[str, int]:
        """Effective rank (non-zero λ entries) of every adapted module."""
        return {p: int((m.E.weight != 0).sum()) for p, m in self.modules.items()}

    # ---------------------------------------------------------------- checkpoints
    def _named(self) -> dict[str, torch.Tensor]:
        out = {}
        for path, m in self.modules.items():
            for node in ("E", "P", "Q"):
                out[f"{path}.{node}"] = getattr(m, node).weight
        return out

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``(scalars, tensors)``: the schedule position and the importance EMAs, keyed by module
        path and node (JSON- and safetensors-ready), for resuming a run exactly."""
        tensors: dict[str, torch.Tensor] = {}
        for name, t in self._named().items():
            if id(t) in self._ipt:
                tensors[f"ipt.{name}"] = self._ipt[id(t)]
                tensors[f"unc.{name}"] = self._unc[id(t)]
        if self._final_keep is not None:
            tensors["final_keep"] = self._final_keep.to(torch.uint8)
        return {"step": self.step, "budget": self.budget}, tensors

    def load_state_dict(self, scalars: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (raises :class:`ConfigError` on a mismatch)."""
        named = self._named()
        for key, v in tensors.items():
            kind, _, name = key.partition(".")
            if key == "final_keep":
                self._final_keep = v.to(torch.bool)
                continue
            if kind not in ("ipt", "unc") or name not in named or v.shape != named[name].shape:
                raise ConfigError(f"AdaLoRA state: unexpected tensor {key!r} for this model", field=key)
            (self._ipt if kind == "ipt" else self._unc)[id(named[name])] = v.to(named[name]).clone()
        self.step = int(scalars.get("step", 0))
        self.budget = int(scalars.get("budget", self.init_bgt))

    # ---------------------------------------------------------------- wiring
    def attach(self, optimizer: torch.optim.Optimizer) -> AdaLoRAController:
        """Hook into ``optimizer``: regulariser gradient before each step, allocation after it.
        Wrappers (accelerate's ``AcceleratedOptimizer``) are unwrapped to the torch optimizer."""
        while not hasattr(optimizer, "_optimizer_step_pre_hooks") and hasattr(optimizer, "optimizer"):
            optimizer = optimizer.optimizer
        if self.add_regularizer:
            self._handles.append(optimizer.register_step_pre_hook(lambda *a: self._add_regularizer_grad()))

        def allocate(*_: Any) -> None:
            self.update_and_allocate()
        self._handles.append(optimizer.register_step_post_hook(allocate))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def trainer_callback(self) -> TrainerCallback:
        """A ``transformers.TrainerCallback`` that attaches this controller to the Trainer's optimizer."""
        from transformers import TrainerCallback

        ctl = self

        class _AdaLoRACallback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any,
                               optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
                if optimizer is None:
                    raise AdapterStateError("the Trainer passed no optimizer to the AdaLoRA callback")
                ctl.attach(optimizer)

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                ctl.detach()

        return _AdaLoRACallback()
