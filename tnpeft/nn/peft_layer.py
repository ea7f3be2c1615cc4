"""peft's adapter-layer protocol (``BaseTunerLayer``'s interface) on :class:`~tnpeft.TNLinear`:
what peft's generic code calls on a layer of tnpeft's peft method (:mod:`tnpeft.nn.peft_tuner`), so
the peft layer is tnpeft's own layer; and the mixed-adapter forward (one adapter per sample)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, cast

import torch
from torch import nn

from tnpeft.errors import AdapterStateError
from tnpeft.graph import Node
from tnpeft.runtime import GraphModule

if TYPE_CHECKING:  # pragma: no cover
    class AdapterDict(nn.ModuleDict):
        """``TNLinear.tn_adapters`` as the checker sees it: torch's ModuleDict is not generic."""

        def __getitem__(self, key: str) -> GraphModule: ...

        def __iter__(self) -> Iterator[str]: ...

        def values(self) -> Iterable[GraphModule]: ...  # type: ignore[override]

        def items(self) -> Iterable[tuple[str, GraphModule]]: ...  # type: ignore[override]



def graph_nodes(module: GraphModule) -> dict[str, Node]:
    """The nodes whose values ``module`` holds as children: its graph's and its output map's."""
    nodes = dict(module.graph.nodes)
    if module.graph.post is not None:
        nodes.update(module.graph.post.nodes)
    return nodes


def train_nodes(module: GraphModule, trainable: bool) -> None:
    """Let the trainable nodes (and hyper-networks) of ``module`` require gradients, or freeze all."""
    nodes = graph_nodes(module)
    for name, part in module.named_children():
        node = nodes.get(name)
        part.requires_grad_(trainable and (node is None or node.trainable))  # None: a hyper-network


class PeftLayerProtocol:
    """Mixed into :class:`~tnpeft.TNLinear`; reads the layer's adapters and flags."""

    base_layer: nn.Module
    active_adapters: list[str]
    merged_adapters: list[str]
    disabled: bool

    if TYPE_CHECKING:  # pragma: no cover
        @property
        def tn_adapters(self) -> AdapterDict: ...

    def _forward_per_sample(self, x: torch.Tensor, names: list[str], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``base(x)`` plus, for each sample ``i``, the update of adapter ``names[i]`` alone (none for
        ``"__base__"`` or an adapter this layer does not hold). Additive adapters only."""
        if len(names) != x.shape[0]:
            raise AdapterStateError(f"adapter_names has {len(names)} entries for a batch of {x.shape[0]} samples; "
                                    "give one adapter name per sample")
        if self.merged_adapters:
            raise AdapterStateError(f"adapters {self.merged_adapters} are merged into the weights; unmerge them "
                                    "before running a mixed-adapter batch")
        base: Callable[..., torch.Tensor] = self.base_layer
        result = base(x, *args, **kwargs)
        for name in dict.fromkeys(names):
            module = self.tn_adapters[name] if name in self.tn_adapters else None
            if module is None:
                continue
            if module.graph.mode != "add" or module.post is not None:
                raise AdapterStateError(f"adapter {name!r} changes the base output or input ({module.graph.mode}-mode"
                                        f"{', with an output map' if module.post is not None else ''}); a mixed-adapter "
                                        "batch adds one adapter's update per sample and needs additive adapters")
            rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=x.device)
            h = x.index_select(0, rows)
            if h.dtype != module.param_dtype and not torch.is_autocast_enabled():
                h = h.to(module.param_dtype)
            result = result.index_add(0, rows, module(h).to(result.dtype))
        return result


    # ------------------------------------------------------------------ peft's layer protocol
    adapter_layer_names = ("tnpeft_adapters",)
    other_param_names: tuple[str, ...] = ()

    def get_base_layer(self) -> nn.Module:
        """The wrapped layer."""
        return self.base_layer

    @property
    def merged(self) -> bool:
        """Whether any adapter is merged into the base weight."""
        return bool(self.merged_adapters)

    @property
    def disable_adapters(self) -> bool:
        """Whether the layer computes its base output only (peft's name for :attr:`disabled`)."""
        return self.disabled

    @property
    def active_adapter(self) -> str | list[str]:
        """The active adapter's name (a list when several are active)."""
        a = self.active_adapters
        return a[0] if len(a) == 1 else list(a)

    def enable_adapters(self, enabled: bool) -> None:
        """Run the active adapters (``True``) or the base layer alone (``False``)."""
        self.disabled = not enabled

    def set_adapter(self, adapter_names: str | Iterable[str], inference_mode: bool = False) -> None:
        """Make ``adapter_names`` (those this layer holds) the active adapters: their trainable nodes
        require gradients (none with ``inference_mode``); every other adapter is frozen."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self.active_adapters = [n for n in names if n in self.tn_adapters]
        for name, module in self.tn_adapters.items():
            train_nodes(module, name in self.active_adapters and not inference_mode)

    def set_requires_grad(self, adapter_names: str | Iterable[str], requires_grad: bool = True) -> None:
        """Switch the gradients of adapters ``adapter_names`` on (their trainable nodes) or off."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for name in names:
            if name in self.tn_adapters:
                train_nodes(self.tn_adapters[name], requires_grad)

    def _freeze_non_trainable_peft_weights(self, adapter_names: Iterable[str] | None = None) -> None:
        for module in self.tn_adapters.values():
            nodes = graph_nodes(module)
            for node_name, part in module.named_children():
                node = nodes.get(node_name)
                if node is not None and not node.trainable:
                    part.requires_grad_(False)

    def _all_available_adapter_names(self) -> list[str]:
        return sorted(self.tn_adapters)

    def _get_available_adapters(self) -> set[str]:
        return set(self.tn_adapters)

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device: torch.device | None = None) -> None:
        if adapter_name in self.tn_adapters:
            weight = cast(torch.Tensor, self.base_layer.weight)      # a linear layer's
            self.tn_adapters[adapter_name].to(device if device is not None else weight.device)

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return False
