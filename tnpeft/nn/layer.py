"""``TNLinear``: a frozen linear layer plus named tensor-network adapters."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

import torch
from torch import nn

from tnpeft.errors import AdapterStateError, BudgetError, ConfigError, GraphError, NotMergeableError
from tnpeft.graph import Graph
from tnpeft.nn.peft_layer import PeftLayerProtocol

if TYPE_CHECKING:  # pragma: no cover
    from tnpeft.nn.peft_layer import AdapterDict
from tnpeft.nn.quantized import float_weight, write_weight
from tnpeft.params.unitary import FrameScope
from tnpeft.runtime import (
    GraphModule,
    SharedValues,
    delta_weight,
    merged_bias,
    merged_weight,
    unmerged_bias,
    unmerged_weight,
)

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


def target_sizes(layer: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of a linear layer or of an adapted one (:class:`TNLinear`)."""
    return (layer.in_features, layer.out_features) if isinstance(layer, TNLinear) else layer_sizes(layer)


def adapter_dtype(base_layer: nn.Module) -> torch.dtype:
    """The dtype of an adapter's values on ``base_layer``: float32, float64 if the base weight is."""
    w = cast(torch.Tensor, base_layer.weight)
    return w.dtype if w.dtype == torch.float64 else torch.float32


def adapter_module(base_layer: nn.Module, graph: Graph, rng: torch.Generator | None = None,
                   scope: FrameScope | None = None, optimize: object = "auto", where: str = "",
                   shared: SharedValues | None = None) -> GraphModule:
    """A new :class:`GraphModule` of ``graph`` for ``base_layer``: parameters on the base weight's
    device, float32 (float64 if the base weight is), in the base layer's train/eval mode, reading
    its shared nodes from ``shared``. An allocation failure is a :class:`ConfigError` naming
    ``where``; nothing else is changed."""
    w = cast(torch.Tensor, base_layer.weight)   # a linear layer's (nn.Module.__getattr__ is untyped)
    dtype = adapter_dtype(base_layer)
    try:
        module = GraphModule(graph, dtype=dtype, device=w.device, rng=rng, scope=scope, optimize=optimize,
                             shared=shared)
    except BudgetError as e:
        if where and e.args:
            e.args = (where + e.args[0],) + e.args[1:]
        raise
    except (RuntimeError, MemoryError) as e:   # the allocator: sizes within the budgets, but not in memory
        raise ConfigError(f"{where}the adapter's {graph.num_parameters():,} parameters cannot be allocated on "
                          f"{w.device}: {str(e).splitlines()[0][:200]}") from None
    module.train(base_layer.training)
    return module


#: the buffer of a layer holding its half-precision base weight as it was before the first merge
BASE_COPY = "tn_weight_before_merge"
BASE_BIAS_COPY = "tn_bias_before_merge"


def _wrapped_base_keys(module: TNLinear, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    # a state dict with the plain model's names for the base layer (``<layer>.weight``, as
    # ``save_pretrained`` of an adapted model writes them) loads into ``<layer>.base_layer.weight``
    for name in module.base_layer.state_dict(keep_vars=True):
        plain, wrapped = prefix + name, prefix + "base_layer." + name
        if plain in state_dict and wrapped not in state_dict:
            state_dict[wrapped] = state_dict.pop(plain)


class TNLinear(PeftLayerProtocol, nn.Module):
    """Wraps a frozen ``nn.Linear`` or GPT-2 ``Conv1D`` and adds the outputs of its active adapters:

    ``y = base(x) + Σ_active scale_a · contract(graph_a, x)``; multiplicative adapters transform
    the input first (input mode) or the base output (output mode, post maps).

    Attributes:
        base_layer: the wrapped layer (its weight is what ``merge`` changes).
        tn_adapters: ``nn.ModuleDict`` of adapter name → :class:`~tnpeft.graph.GraphModule`
            (registered as ``tnpeft_adapters``: parameter names read
            ``<layer>.tnpeft_adapters.<adapter>.<node>.<param>``).
        active_adapters: names used in the forward pass.
        merged_adapters: names currently added into ``base_layer``'s weight (they act whether or not
            they are active, until unmerged).
        disabled: when True the layer computes ``base(x)`` only (merged adapters are unmerged first).

    ``merge``, ``unmerge`` and ``delete_adapter`` compute the new weight before they write it: on
    error the layer is unchanged.
    """

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        if not isinstance(base_layer, LINEAR_TYPES):
            raise TypeError(f"TNLinear wraps nn.Linear or Conv1D, got {type(base_layer).__name__}")
        self.base_layer: nn.Linear | Conv1D = base_layer
        self.in_features, self.out_features = layer_sizes(base_layer)
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        # registered as "tnpeft_adapters" (peft's and transformers' key conventions want the method's
        # prefix, "tnpeft_", in the name); read it as ``layer.tn_adapters``
        self.tnpeft_adapters = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False
        #: one adapter name (or ``"__base__"``) per sample of the batch while a mixed-adapter batch
        #: runs (:func:`tnpeft.nn.mixed_adapters`), else ``None``
        self.sample_adapters: list[str] | None = None
        self.register_load_state_dict_pre_hook(_wrapped_base_keys)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.train(base_layer.training)

    @property
    def tn_adapters(self) -> AdapterDict:
        """Adapter name → :class:`~tnpeft.GraphModule` (the submodule ``tnpeft_adapters``)."""
        return cast("AdapterDict", self._modules["tnpeft_adapters"])

    # ------------------------------------------------------------------ adapters
    def check_graph(self, name: str, graph: Graph) -> None:
        """Raise unless ``graph`` fits this layer under the new adapter name ``name``."""
        if name in self.tn_adapters:
            raise AdapterStateError(f"this layer already has an adapter named {name!r}")
        if not graph.fits(self.in_features, self.out_features):
            raise GraphError(f"adapter {name!r} maps {graph.in_features} → {graph.out_features} features but the "
                             f"layer is {self.in_features} → {self.out_features} (an additive adapter maps in → out, "
                             "an input-mode one in → in, an output-mode one out → out)")

    def attach_adapter(self, name: str, module: GraphModule) -> GraphModule:
        """Register a built :class:`GraphModule` as adapter ``name`` (active; in this layer's mode)."""
        self.check_graph(name, module.graph)
        module.train(self.training)
        self.tn_adapters[name] = module
        self.active_adapters.append(name)
        return module

    def add_adapter(self, name: str, graph: Graph, rng: torch.Generator | None = None,
                    scope: FrameScope | None = None, optimize: object = "auto") -> GraphModule:
        """Attach ``graph`` as adapter ``name`` (parameters on the base weight's device, float32 or
        the base dtype if that is float64; initial values drawn with ``rng``; frames batched with
        the other layers in ``scope``; plans made by cotengra's ``optimize``)."""
        self.check_graph(name, graph)
        return self.attach_adapter(name, adapter_module(self.base_layer, graph, rng, scope, optimize))

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` (unmerging it first if it is merged)."""
        if name not in self.tn_adapters:
            raise AdapterStateError(f"no adapter named {name!r} on this layer; it has {list(self.tn_adapters)}")
        if name in self.merged_adapters:
            self.unmerge([name])
        del self.tn_adapters[name]
        if name in self.active_adapters:
            self.active_adapters.remove(name)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        base: Callable[..., torch.Tensor] = self.base_layer   # nn.Module.__call__ is typed as returning Any
        if self.disabled:
            if self.merged_adapters:
                self.unmerge()
            return base(x, *args, **kwargs)
        if self.sample_adapters is not None:
            return self._forward_per_sample(x, self.sample_adapters, *args, **kwargs)
        merged = self.merged_adapters
        pending = [self.tn_adapters[n] for n in self.active_adapters if n not in merged]
        if not pending:  # nothing active, or everything merged: the base layer alone
            return base(x, *args, **kwargs)
        w = getattr(self.base_layer, "weight", None)
        if isinstance(w, torch.Tensor) and w.is_meta and not getattr(x, "is_meta", True):
            raise AdapterStateError(f"this layer ({self.in_features} → {self.out_features}) is on the meta device and "
                                    f"holds no values, the input is on {x.device}; materialize the model first")
        h = x
        for module in pending:  # multiplicative adapters transform the input first
            if module.graph.mode == "input":
                h = module(h.to(module.param_dtype)).to(x.dtype)
        result = base(h, *args, **kwargs)
        # output-side maps in order (a loop: the compiler cannot trace a walrus in a comprehension)
        maps: list[GraphModule] = []
        for m in pending:
            post = m if m.graph.mode == "output" else m.post
            if post is not None:
                maps.append(post)
        if maps:
            result = self._output_maps(result, maps)
        for module in pending:
            if module.graph.mode != "add":
                continue
            h = x
            p_dtype = module.param_dtype
            if h.dtype != p_dtype and not torch.is_autocast_enabled():
                h = h.to(p_dtype)
            # the adapter's last product takes the base output as its addend (one addmm, no temporary)
            result = module.accumulate(result, h)
        return result

    def _output_maps(self, y: torch.Tensor, maps: list[GraphModule]) -> torch.Tensor:
        """``P_k(⋯P_1(y))``: output-mode maps on the base output; one that leaves the bias out maps
        ``y − b`` and adds ``b`` back."""
        b = self.base_layer.bias
        for m in maps:
            keep = b is not None and not m.graph.bias
            h = y - b if keep else y
            h = m(h.to(m.param_dtype)).to(y.dtype)
            y = h + b if keep else h
        return y

    def weight_tensors(self) -> list[torch.Tensor]:
        """The base layer's tensors a merge may change: its weight, and its bias if it has one."""
        b = self.base_layer.bias
        return [self.base_layer.weight] + ([b] if b is not None else [])

    # ------------------------------------------------------------------ merge
    def delta_weight(self, name: str) -> torch.Tensor:
        """``scale · ΔW`` of adapter ``name`` in the base weight's layout (transposed for Conv1D)."""
        return delta_weight(self.tn_adapters[name], self.fan_in_fan_out)

    def _input_mode(self, name: str) -> bool:
        # multiplicative: input-mode or output-mode (they do not commute with additive updates)
        return self.tn_adapters[name].graph.mode != "add"

    def merge_order(self, adapter_names: Iterable[str] | None = None) -> list[str]:
        """The adapters :meth:`merge` would add, in order, after checking that it can.

        Every name must be a linear adapter of this layer; adapters already merged are left out
        (with a warning). Multiplicative (input-mode) adapters go first — inactive ones, then the
        active ones last-applied first, so that ``W' = W D_k ⋯ D_1`` computes what
        ``W (D_k ⋯ D_1 x)`` did — then additive ones. A merge that would change what the layer
        computes is refused: a multiplicative adapter after an additive one is merged, and any merge
        that leaves an active adapter unmerged next to a merged one on a layer with a multiplicative
        adapter (its update does not commute with the others: merge the layer's active adapters at once).
        """
        names = list(adapter_names) if adapter_names is not None else list(self.active_adapters)
        for name in names:
            if name not in self.tn_adapters:
                raise AdapterStateError(f"no adapter named {name!r} on this layer; it has {list(self.tn_adapters)}")
            g = self.tn_adapters[name].graph
            if not g.is_linear:
                bad = next((n.name for n in g.nodes.values() if n.kind == "nonlinear"), "?")
                raise NotMergeableError(f"adapter {name!r} has nonlinear node {bad!r}: its update depends on the "
                                        "input and cannot be merged into the weight")
        todo = []
        for name in dict.fromkeys(names):
            if name in self.merged_adapters:
                warnings.warn(f"adapter {name!r} is already merged; skipping", stacklevel=3)
            else:
                todo.append(name)
        if not todo:
            return todo
        active = self.active_adapters
        # input maps merge last-applied first (W D_k ⋯ D_1), output maps first-applied first (P_k ⋯ P_1 W)
        todo.sort(key=lambda n: (1, 0) if not self._input_mode(n) else
                  (0, -active.index(n) if n in active else -len(active) - 1)
                  if self.tn_adapters[n].graph.mode == "input" else (0, active.index(n) if n in active else -1))
        first = next((n for n in todo if self._input_mode(n)), None)
        if first is not None and any(not self._input_mode(m) for m in self.merged_adapters):
            raise AdapterStateError(f"merge input-mode adapter {first!r} before additive ones (unmerge them first): "
                                    "W' = W R + ΔW depends on the order")
        after = self.merged_adapters + todo
        pending = [n for n in active if n not in after]
        multiplicative = next((n for n in after + pending if self._input_mode(n)), None)
        if pending and multiplicative is not None:
            raise AdapterStateError(f"adapter {multiplicative!r} is multiplicative (input-mode): merging {todo} would "
                                    f"leave {pending} running unmerged on the merged weight, which computes something "
                                    "else; merge the layer's active adapters together (tnpeft.merge(model))")
        return todo

    def merge(self, adapter_names: Iterable[str] | None = None, safe_merge: bool = False) -> None:
        """Add the active (or named) adapters' updates into the base weight.

        The new weight is computed in full before it replaces the old one; with ``safe_merge`` it is
        also checked for NaN/inf first. On error the weight is unchanged. A half-precision weight
        (float16, bfloat16) is kept as it was before the first merge (a non-persistent buffer, the
        weight's size), so that unmerging restores it exactly instead of subtracting in a precision
        that rounds. A quantized base weight (bitsandbytes int8 / 4-bit) is dequantized, updated and
        quantized again (:mod:`tnpeft.nn.quantized`)."""
        todo = self.merge_order(adapter_names)
        if not todo:
            return
        w, b = self.base_layer.weight, self.base_layer.bias
        with torch.no_grad():
            new = float_weight(self.base_layer)
            new_b: torch.Tensor | None = None if b is None else b.detach()
            for name in todo:
                new = self._weight_arith(merged_weight, name, new)
                new_b = merged_bias(self.tn_adapters[name], new_b)
            if safe_merge and not (torch.isfinite(new).all() and (new_b is None or torch.isfinite(new_b).all())):
                raise AdapterStateError(f"merging adapter(s) {todo} gives NaN or infinite weights; not merged")
            if not self.merged_adapters and w.is_floating_point() and torch.finfo(w.dtype).bits < 32:
                self.register_buffer(BASE_COPY, w.detach().clone(), persistent=False)
                if b is not None:       # an output map may scale it
                    self.register_buffer(BASE_BIAS_COPY, b.detach().clone(), persistent=False)
            write_weight(self.base_layer, new)
            if b is not None and new_b is not None:
                b.copy_(new_b)
        self.merged_adapters.extend(todo)

    def unmerge(self, adapter_names: Iterable[str] | None = None) -> None:
        """Take merged adapters' updates out of the base weight again, last merged first (all merged
        ones by default; names that are not merged are skipped). When a multiplicative (input-mode)
        adapter is merged, every merged adapter of the layer comes out: its update does not commute
        with the others. The new weight is computed in full before it is written."""
        names = list(adapter_names) if adapter_names is not None else list(self.merged_adapters)
        if any(n in names for n in self.merged_adapters) and any(map(self._input_mode, self.merged_adapters)):
            names = list(self.merged_adapters)
        todo = [n for n in reversed(self.merged_adapters) if n in names]
        if not todo:
            return
        b = self.base_layer.bias
        base = getattr(self, BASE_COPY, None)
        with torch.no_grad():
            if base is not None:     # the kept half-precision weight, with the adapters that stay merged
                new = base
                for name in [n for n in self.merged_adapters if n not in todo]:
                    new = self._weight_arith(merged_weight, name, new)
            else:
                new = float_weight(self.base_layer)
                for name in todo:
                    new = self._weight_arith(unmerged_weight, name, new)
            new_b: torch.Tensor | None = None if b is None else b.detach()
            base_b = getattr(self, BASE_BIAS_COPY, None)
            if base is not None and base_b is not None:     # the kept bias, likewise
                new_b = base_b
                for name in [n for n in self.merged_adapters if n not in todo]:
                    new_b = merged_bias(self.tn_adapters[name], new_b)
            else:
                for name in todo:       # an output map that scaled the bias
                    new_b = unmerged_bias(self.tn_adapters[name], new_b)
            write_weight(self.base_layer, new)
            if b is not None and new_b is not None:
                b.copy_(new_b)
        self.merged_adapters = [n for n in self.merged_adapters if n not in todo]
        if base is not None and not self.merged_adapters:
            delattr(self, BASE_COPY)
            if hasattr(self, BASE_BIAS_COPY):
                delattr(self, BASE_BIAS_COPY)

    def _weight_arith(self, fn: Callable[[GraphModule, torch.Tensor, bool], torch.Tensor], name: str,
                      w: torch.Tensor) -> torch.Tensor:
        try:
            out = fn(self.tn_adapters[name], w, self.fan_in_fan_out)
        except torch.linalg.LinAlgError as e:  # type: ignore[attr-defined]  # (torch omits it from __all__) an input-mode update that is not invertible
            raise AdapterStateError(f"adapter {name!r}: its input-mode update cannot be inverted to unmerge it "
                                    f"({str(e).splitlines()[0]})") from None
        except (RuntimeError, MemoryError) as e:
            raise AdapterStateError(f"adapter {name!r}: the {math.prod(w.shape):,}-element weight update cannot be "
                                    f"computed: {str(e).splitlines()[0][:200]}") from None
        return out

    def extra_repr(self) -> str:
        return f"active={self.active_adapters}, merged={self.merged_adapters}, disabled={self.disabled}"
