"""``TNLinear``: a frozen linear layer plus named tensor-network adapters."""

from __future__ import annotations

import warnings
from typing import Iterable

import torch
from torch import nn

from tnpeft.errors import AdapterStateError, GraphError
from tnpeft.graph import Graph, GraphModule, delta_weight, merged_weight, unmerged_weight
from tnpeft.params.unitary import FrameScope

try:  # GPT-2 style layers: y = x W + b with W of shape (in, out)
    from transformers.pytorch_utils import Conv1D
except Exception:  # pragma: no cover - transformers is a dependency, but keep the layer usable without it
    class Conv1D(nn.Module):  # type: ignore[no-redef]
        pass

LINEAR_TYPES = (nn.Linear, Conv1D)


def layer_sizes(layer: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or ``Conv1D``."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):
        w = layer.weight
        return w.shape[0], w.shape[1]
    raise TypeError(type(layer).__name__)


class TNLinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` or GPT-2 ``Conv1D`` and adds the outputs of its active adapters:

    ``y = base(x) + Σ_active scale_a · contract(graph_a, x)``.

    Attributes:
        base_layer: the wrapped layer (its weight is what ``merge`` changes).
        tn_adapters: ``nn.ModuleDict`` of adapter name → :class:`~tnpeft.graph.GraphModule`.
        active_adapters: names used in the forward pass.
        merged_adapters: names currently added into ``base_layer``'s weight.
        disabled: when True the layer computes ``base(x)`` only (merged adapters are unmerged first).
    """

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        if not isinstance(base_layer, LINEAR_TYPES):
            raise TypeError(f"TNLinear wraps nn.Linear or Conv1D, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.in_features, self.out_features = layer_sizes(base_layer)
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.tn_adapters = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False

    # ------------------------------------------------------------------ adapters
    def add_adapter(self, name: str, graph: Graph, rng: torch.Generator | None = None,
                    scope: FrameScope | None = None, optimize: object = "auto") -> GraphModule:
        """Attach ``graph`` as adapter ``name`` (parameters on the base weight's device, float32 or
        the base dtype if that is float64; initial values drawn with ``rng``; frames batched with
        the other layers in ``scope``; plans made by cotengra's ``optimize``)."""
        if name in self.tn_adapters:
            raise AdapterStateError(f"this layer already has an adapter named {name!r}")
        want = (self.in_features, self.in_features) if graph.mode == "input" else (self.in_features, self.out_features)
        if (graph.in_features, graph.out_features) != want:
            raise GraphError(f"adapter {name!r} maps {graph.in_features} → {graph.out_features} features but the "
                             f"layer needs {want[0]} → {want[1]}"
                             + (" (an input-mode adapter transforms the layer's input)" if graph.mode == "input" else ""))
        w = self.base_layer.weight
        dtype = w.dtype if w.dtype == torch.float64 else torch.float32
        module = GraphModule(graph, dtype=dtype, device=w.device, rng=rng, scope=scope, optimize=optimize)
        self.tn_adapters[name] = module
        self.active_adapters.append(name)
        return module

    def delete_adapter(self, name: str) -> None:
        if name in self.merged_adapters:
            self.unmerge([name])
        del self.tn_adapters[name]
        if name in self.active_adapters:
            self.active_adapters.remove(name)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disabled:
            if self.merged_adapters:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        merged = self.merged_adapters
        pending = [self.tn_adapters[n] for n in self.active_adapters if n not in merged]
        if not pending:  # nothing active, or everything merged: the base layer alone
            return self.base_layer(x, *args, **kwargs)
        h = x
        for module in pending:  # multiplicative adapters transform the input first
            if module.graph.mode == "input":
                h = module(h.to(module.param_dtype)).to(x.dtype)
        result = self.base_layer(h, *args, **kwargs)
        for module in pending:
            if module.graph.mode == "input":
                continue
            h = x
            p_dtype = module.param_dtype
            if h.dtype != p_dtype and not torch.is_autocast_enabled():
                h = h.to(p_dtype)
            # the adapter's last product takes the base output as its addend (one addmm, no temporary)
            result = module.accumulate(result, h)
        return result

    # ------------------------------------------------------------------ merge
    def delta_weight(self, name: str) -> torch.Tensor:
        """``scale · ΔW`` of adapter ``name`` in the base weight's layout (transposed for Conv1D)."""
        return delta_weight(self.tn_adapters[name], self.fan_in_fan_out)

    def merge(self, adapter_names: Iterable[str] | None = None, safe_merge: bool = False) -> None:
        """Add the active (or named) adapters' updates into the base weight.

        With ``safe_merge`` the new weight is checked for NaN/inf before it replaces the old one.
        """
        names = list(adapter_names) if adapter_names is not None else list(self.active_adapters)
        # multiplicative (input-mode) adapters first: the forward is base(R x) + ΔW x = (W R + ΔW) x
        names.sort(key=lambda n: n not in self.tn_adapters or self.tn_adapters[n].graph.mode != "input")
        w = self.base_layer.weight
        for name in names:
            if name not in self.tn_adapters:
                raise AdapterStateError(f"no adapter named {name!r} on this layer; it has {list(self.tn_adapters)}")
            if name in self.merged_adapters:
                warnings.warn(f"adapter {name!r} is already merged; skipping", stacklevel=2)
                continue
            input_mode = self.tn_adapters[name].graph.mode == "input"
            if input_mode and any(self.tn_adapters[m].graph.mode != "input" for m in self.merged_adapters):
                raise AdapterStateError(f"merge input-mode adapter {name!r} before additive ones (unmerge them first): "
                                        "W' = W R + ΔW depends on the order")
            with torch.no_grad():
                module = self.tn_adapters[name]
                if input_mode or safe_merge:
                    new = merged_weight(module, w.data, self.fan_in_fan_out)
                    if safe_merge and not torch.isfinite(new).all():
                        raise AdapterStateError(f"merging adapter {name!r} gives NaN or infinite weights; not merged")
                    w.data.copy_(new)
                else:  # in place: no second weight-sized tensor
                    w.data.add_(delta_weight(module, self.fan_in_fan_out).to(w.dtype))
            self.merged_adapters.append(name)

    def unmerge(self, adapter_names: Iterable[str] | None = None) -> None:
        """Subtract merged adapters' updates from the base weight again (all merged ones by default)."""
        names = list(adapter_names) if adapter_names is not None else list(self.merged_adapters)
        w = self.base_layer.weight
        for name in reversed(names):
            if name not in self.merged_adapters:
                continue
            with torch.no_grad():
                module = self.tn_adapters[name]
                if module.graph.mode == "input":
                    w.data.copy_(unmerged_weight(module, w.data, self.fan_in_fan_out))
                else:  # in place
                    w.data.sub_(delta_weight(module, self.fan_in_fan_out).to(w.dtype))
            self.merged_adapters.remove(name)

    def extra_repr(self) -> str:
        return f"active={self.active_adapters}, merged={self.merged_adapters}, disabled={self.disabled}"
