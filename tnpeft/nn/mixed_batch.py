"""Mixed-adapter batches: one adapter per sample in one forward pass (peft's ``adapter_names=``).

Inside ``with tnpeft.mixed_adapters(model, ["a", "b", "__base__"]):`` every adapted layer computes
``y_i = base(x_i) + s_a · contract(graph_a, x_i)`` for sample ``i`` and its adapter ``a`` —
exactly what a forward with ``a`` alone active computes for that sample. ``"__base__"`` means no
adapter; a layer that does not hold a sample's adapter gives its base output for that sample.
The base layer runs once on the whole batch; each adapter runs once on its samples.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from torch import nn

from tnpeft.errors import AdapterStateError, ConfigError
from tnpeft.nn.model import adapter_names as model_adapter_names
from tnpeft.nn.model import tn_layers

#: the name that stands for "no adapter" in a mixed batch (peft's)
BASE = "__base__"


def check_mixed_batch(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` as a list after checking that a mixed batch can run them: each is ``"__base__"`` or
    an adapter of the model, every one of them additive (``mode="add"``; QWTHN's nonlinear update
    is additive too) and nothing is merged."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"adapter_names must be a list of adapter names, one per sample, got {names!r}",
                          field="adapter_names")
    known = model_adapter_names(model)
    for n in dict.fromkeys(names):
        if n != BASE and n not in known:
            raise AdapterStateError(f"adapter_names names {n!r}, which is not an adapter of this model; it has "
                                    f"{known} (and {BASE!r} for the base model)")
    for path, layer in tn_layers(model):
        if layer.merged_adapters:
            raise AdapterStateError(f"module {path!r}: adapters {layer.merged_adapters} are merged into the weights; "
                                    "unmerge them before a mixed-adapter batch")
        for n in dict.fromkeys(names):
            if n in layer.tn_adapters and layer.tn_adapters[n].graph.mode != "add":
                raise AdapterStateError(f"module {path!r}: adapter {n!r} is multiplicative (input-mode: y = W D x); "
                                        "a mixed-adapter batch adds one adapter's update per sample and needs "
                                        "additive adapters")
    return list(names)


@contextmanager
def mixed_adapters(model: nn.Module, adapter_names: Sequence[str]) -> Iterator[nn.Module]:
    """Context manager: inside it, sample ``i`` of every batch runs through adapter
    ``adapter_names[i]`` only (``"__base__"``: none). Every forward inside must have
    ``len(adapter_names)`` samples; everything is checked on entry
    (:func:`check_mixed_batch`)."""
    names = check_mixed_batch(model, adapter_names)
    layers = [layer for _, layer in tn_layers(model)]
    before = [layer.sample_adapters for layer in layers]
    for layer in layers:
        layer.sample_adapters = names
    try:
        yield model
    finally:
        for layer, b in zip(layers, before):
            layer.sample_adapters = b
