"""Base layers whose weight is quantized (bitsandbytes ``Linear8bitLt`` / ``Linear4bit``).

Such layers subclass ``nn.Linear``, so an adapter wraps them like any linear layer and its forward
adds ``s·contract(graph, x)`` to the quantized layer's output. Merging has to leave the integer
representation: the weight is dequantized, the update added in float32, and the sum quantized again
(``W' = Q(Q⁻¹(W_q) + ΔW)``): the merged layer equals the unmerged one up to the quantization error
of one more rounding, and unmerging rounds once more. A weight of a quantized kind this module does
not know is refused with an error that names it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tnpeft.errors import AdapterStateError

#: weight classes of bitsandbytes and the quantization they stand for
_KINDS = {"Int8Params": "int8", "Params4bit": "4bit"}


def quantization(layer: nn.Module) -> str | None:
    """``"int8"``, ``"4bit"``, another quantized weight's class name, or ``None`` for a float weight."""
    w = getattr(layer, "weight", None)
    if w is None or w.dtype.is_floating_point:
        return None
    return _KINDS.get(type(w).__name__, type(w).__name__)


def _check_known(layer: nn.Module, kind: str) -> None:
    if kind not in _KINDS.values():
        raise AdapterStateError(f"the base layer {type(layer).__name__} holds a quantized weight of type {kind} "
                                f"({layer.weight.dtype}); tnpeft merges into float weights and bitsandbytes' int8 and "
                                "4-bit weights only")


def float_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a float tensor of its logical shape (dequantized when it is quantized;
    the weight itself, detached, when it is not)."""
    kind = quantization(layer)
    w: Any = layer.weight           # bitsandbytes' weights carry attributes torch's types do not know
    if kind is None:
        return torch.as_tensor(w).detach()
    _check_known(layer, kind)
    import bitsandbytes as bnb

    if kind == "int8":
        state = getattr(layer, "state", None)
        scb = state.SCB if state is not None and state.SCB is not None else w.SCB
        if scb is None:
            raise AdapterStateError(f"the int8 weight of {type(layer).__name__} carries no scales (SCB); it cannot "
                                    "be dequantized to merge into it")
        out: torch.Tensor = bnb.functional.int8_vectorwise_dequant(w.data, scb).float()
        return out
    data, qs = w.data, w.quant_state
    if getattr(qs, "packing_format_for_cpu", False):   # repacked for a CPU kernel: unpack a copy first
        inverse = getattr(bnb.functional, "_convert_weight_packed_for_cpu_inverse", None)
        if inverse is None:
            raise AdapterStateError("the 4-bit weight is packed for a CPU kernel and this bitsandbytes cannot unpack "
                                    "it; merge before the first evaluation forward, or keep the adapter unmerged")
        data, qs = inverse(data, qs)
    sizes: Any = layer                                    # a Linear4bit: its logical in/out features
    out4: torch.Tensor = bnb.functional.dequantize_4bit(data, qs).float()
    return out4.reshape(int(sizes.out_features), int(sizes.in_features))


def write_weight(layer: nn.Module, new: torch.Tensor) -> None:
    """Make ``new`` (float, the weight's logical shape) the layer's weight: copied in place into a
    float weight; quantized again into a new int8 / 4-bit weight object, which replaces the old one
    (left intact, so that restoring it restores the layer)."""
    kind = quantization(layer)
    w: Any = layer.weight
    lyr: Any = layer                # bitsandbytes' layer: its ``state`` and a weight object to replace
    if kind is None:
        with torch.no_grad():
            w.copy_(new)
        return
    _check_known(layer, kind)
    import bitsandbytes as bnb

    device = w.device
    with torch.no_grad():
        if kind == "int8":
            state = lyr.state
            if w.CB is None and state.CB is not None:   # after a forward the quantized rows live in the layer's state
                w.CB, w.SCB = state.CB, state.SCB
            param = bnb.nn.Int8Params(new.detach().to("cpu", torch.float32), requires_grad=False,
                                      has_fp16_weights=w.has_fp16_weights).to(device)
            lyr.weight = param
            state.reset_grads()
            return
        options = {k: v for k, v in w.__dict__.items() if not k.startswith("_") and k != "data"}
        options.update(bnb_quantized=False, requires_grad=False, quant_state=None)
        dtype = getattr(w.quant_state, "dtype", torch.float32)
        lyr.weight = bnb.nn.Params4bit(new.detach().to("cpu", dtype), **options).to(device)
