"""Weighted combinations of a model's adapters (peft's ``add_weighted_adapter``), as graph algebra.

Each adapted layer's parts are summed by :func:`tnpeft.graph.weighted_sum` into one new adapter
graph: ``"cat"`` exactly (the direct sum of the bonds), ``"svd"`` compressed to a rank with the
error measured, ``"linear"`` node by node for parts of one topology. The new adapter is added
inactive and frozen (``tnpeft.set_adapter(model, name)`` makes it run), like peft's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from tnpeft.algebra import COMBINATION_TYPES, Combination, check_additive, finite_weight, weighted_sum
from tnpeft.errors import AdapterStateError, ConfigError, NonFiniteError, NotMergeableError, TNPeftError
from tnpeft.graph import Dense, Graph
from tnpeft.nn.layer import TNLinear
from tnpeft.nn.model import (
    adapter_names,
    check_adapter_name,
    install_modules,
    tn_layers,
)
from tnpeft.nn.transaction import SCOPE_ATTR, transaction
from tnpeft.params.unitary import FrameScope
from tnpeft.runtime import GraphModule


@dataclass
class CombinationReport:
    """What :func:`add_weighted_adapter` built.

    Attributes:
        adapter_name: the new adapter.
        combination_type: ``"cat"``, ``"svd"`` or ``"linear"``.
        modules: per adapted module path: ``{"rank", "exact", "error", "how"}`` (``error`` is the
            relative Frobenius error of the layer's update against the exact weighted sum).
    """

    adapter_name: str
    combination_type: str
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        """The largest relative error over the modules."""
        return max((m["error"] for m in self.modules.values()), default=0.0)

    @property
    def exact(self) -> bool:
        """Whether every module's update is the exact weighted sum."""
        return all(m["exact"] for m in self.modules.values())

    def to_dict(self) -> dict[str, Any]:
        return {"adapter_name": self.adapter_name, "combination_type": self.combination_type,
                "max_error": self.max_error, "exact": self.exact, "modules": self.modules}


def additive_part(layer: TNLinear, name: str) -> GraphModule:
    """Adapter ``name`` of ``layer`` as a linear additive module: itself, or for an input-mode
    (multiplicative) adapter ``y = W (D x)`` its additive equivalent ``W (D − I)`` (a dense node)
    computed from the layer's base weight — which needs the layer to have nothing merged."""
    module = layer.tn_adapters[name]
    g = module.graph
    if g.mode == "add" or not g.is_linear:
        check_additive(module, f"adapter {name!r}")
        return module
    if layer.merged_adapters:
        raise AdapterStateError(f"adapter {name!r} is input-mode (W' = W·D): its additive update W (D − I) is taken "
                                f"from the base weight, but {layer.merged_adapters} are merged into it; unmerge "
                                "first (tnpeft.unmerge)")
    with torch.no_grad():
        w = layer.base_layer.weight.detach().to(torch.float64)
        w = w.T if layer.fan_in_fan_out else w
        d = module.dense(scaled=True).detach().to(torch.float64)
        delta = w @ d - w
    dense = Graph([Dense("W", ("out", "in"), tuple(delta.shape), init="zeros")], name=f"{g.name or name}-additive")
    out = GraphModule(dense, dtype=module.param_dtype, device=delta.device)
    with torch.no_grad():
        out.get_parameter("W.weight").copy_(delta.to(out.param_dtype))
    return out


def _check_arguments(model: nn.Module, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                     combination_type: str, svd_rank: int | None) -> None:
    """Every argument of :func:`add_weighted_adapter` checked before anything is computed."""
    check_adapter_name(adapter_name)
    known = adapter_names(model)
    if adapter_name in known:
        raise AdapterStateError(f"the model already has an adapter named {adapter_name!r}; pick another name or "
                                "delete it first (tnpeft.delete_adapter)")
    if isinstance(adapters, str) or not adapters:
        raise ConfigError(f"adapters must be a non-empty list of adapter names, got {adapters!r}", field="adapters")
    for a in adapters:
        if a not in known:
            raise AdapterStateError(f"no adapter named {a!r} on this model; it has {known}")
    if len(set(adapters)) != len(adapters):
        raise ConfigError(f"adapters {list(adapters)} names an adapter twice; give it one summed weight",
                          field="adapters")
    if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__len__") or len(weights) != len(adapters):
        raise ConfigError(f"adapters {list(adapters)} need a list of weights, one per adapter; got {weights!r}",
                          field="weights")
    bad = [w for w in weights if not finite_weight(w)]
    if bad:
        raise ConfigError(f"weights must be finite numbers (int, float or a numpy scalar), got {bad[0]!r} in "
                          f"{list(weights)!r}", field="weights")
    if combination_type not in COMBINATION_TYPES:
        raise ConfigError(f"combination_type must be one of {list(COMBINATION_TYPES)}, got {combination_type!r}",
                          field="combination_type")
    if svd_rank is not None and (isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank < 1):
        raise ConfigError(f"svd_rank must be a positive integer, got {svd_rank!r}", field="svd_rank")


def add_weighted_adapter(model: nn.Module, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                         combination_type: str = "svd", svd_rank: int | None = None) -> CombinationReport:
    """Add adapter ``adapter_name`` whose update is ``Σ wᵢ · sᵢ ΔWᵢ`` of ``adapters`` on every layer
    that holds any of them (peft's ``add_weighted_adapter``; task arithmetic with negative weights).

    Args:
        adapters: names of the model's adapters — any linear ones, built-in or user-defined.
        weights: one finite number per adapter (each adapter's own scale is folded in too).
        adapter_name: the new adapter's name (added inactive; ``tnpeft.set_adapter`` runs it).
        combination_type: ``"svd"`` (peft's default: the exact sum truncated to ``svd_rank`` by an
            SVD, its error measured), ``"cat"`` (exact: the direct sum of the parts' bonds — the
            topology is kept when the parts share one, else their low-rank factors are
            concatenated) or ``"linear"`` (parts of one topology and equal sizes, node-wise: the
            size of one part, with cross terms; its error is measured).
        svd_rank: the rank kept by ``"svd"`` (default: the largest rank among the parts).

    Input-mode (multiplicative) adapters such as OFT enter ``"cat"`` and ``"svd"`` through their
    additive equivalent ``W (D − I)`` on the layer's base weight (so the layer must have nothing
    merged); ``"linear"`` refuses them. Nonlinear adapters (QWTHN) are refused with a
    :class:`~tnpeft.errors.NotMergeableError` naming the node. Everything is computed before the
    model changes; on any error it is exactly as it was.

    Returns a :class:`CombinationReport` (ranks and errors per module), also kept in the adapter's
    record (``tnpeft.nn.adapter_config(model, adapter_name)["combination"]``).
    """
    _check_arguments(model, adapters, weights, adapter_name, combination_type, svd_rank)
    report = CombinationReport(adapter_name, combination_type)
    built: dict[str, GraphModule] = {}
    for path, layer in tn_layers(model):
        present = [(a, w) for a, w in zip(adapters, weights) if a in layer.tn_adapters]
        if not present:
            continue
        try:
            if combination_type == "linear":
                for a, _ in present:
                    check_additive(layer.tn_adapters[a], f"adapter {a!r}")
            parts = [additive_part(layer, a) for a, _ in present]
            c: Combination = weighted_sum(parts, [w for _, w in present], combination_type, rank=svd_rank)
        except (NotMergeableError, AdapterStateError) as e:
            raise type(e)(f"module {path!r}: {e}") from None
        except NonFiniteError as e:
            terms = ", ".join(f"{a!r} with weight {w:g}" for a, w in present)
            raise ConfigError(f"module {path!r}: adapter {adapter_name!r} = {combination_type} of {terms}: {e}; use "
                              "smaller weights (or check the adapters' values with tnpeft.verify)",
                              field="weights") from None
        except TNPeftError as e:
            raise ConfigError(f"module {path!r}: {e}", field="combination_type") from None
        c.module.train(layer.training)
        built[path] = c.module
        report.modules[path] = {"rank": c.rank, "exact": c.exact, "error": c.error, "how": c.how}
    method = "lora" if all(_is_lora_shaped(m.graph) for m in built.values()) else None
    record = {"method": method, "target_modules": sorted(built), "modules_to_save": [], "hparams": {},
              "combination": {"adapters": list(adapters), "weights": [float(w) for w in weights],
                              "combination_type": combination_type, "svd_rank": svd_rank,
                              "max_error": report.max_error, "exact": report.exact}}
    with transaction(model):
        install_modules(model, adapter_name, getattr(model, SCOPE_ATTR, None) or FrameScope(), built, record)
        for _, layer in tn_layers(model):     # the new adapter inactive and frozen; every other flag as it was
            if adapter_name in layer.active_adapters:
                layer.active_adapters.remove(adapter_name)
        for module in built.values():
            module.requires_grad_(False)
    return report


def _is_lora_shaped(g: Graph) -> bool:
    return list(g.nodes) == ["A", "B"] and g.meta.get("method") == "lora"
