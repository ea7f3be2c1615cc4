"""Model-level operations: inject adapters into a transformers (or any torch) model, switch,
disable, merge, unload, count."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple

import torch
from torch import nn

from tnpeft.errors import AdapterStateError, ConfigError, GraphError, TargetModuleError, TNPeftError
from tnpeft.graph import Graph, GraphModule, register_source
from tnpeft.nn.config import AdapterConfig
from tnpeft.nn.layer import LINEAR_TYPES, TNLinear, layer_sizes
from tnpeft.params.unitary import FrameScope

_CONFIGS_ATTR = "tnpeft_configs"
_SCOPE_ATTR = "_tnpeft_frame_scope"
_SEQ_CLS_HEADS = ("classifier", "score")


# ---------------------------------------------------------------------- matching
def _matches(rule: str | tuple[str, ...], name: str) -> bool:
    if isinstance(rule, str):
        return re.fullmatch(rule, name) is not None
    return name in rule or any(name.endswith("." + t) for t in rule)


def _output_head_names(model: nn.Module) -> set[str]:
    """Names of the output head that ``"all-linear"`` leaves out (peft's convention)."""
    head = None
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        try:
            head = get()
        except (NotImplementedError, AttributeError):
            head = None
    if head is None:
        for attr in _SEQ_CLS_HEADS:
            cand = getattr(model, attr, None)
            if isinstance(cand, nn.Module):
                head = cand
                break
    if head is None:
        return set()
    inside = {id(m) for m in head.modules()}
    return {name for name, m in model.named_modules() if id(m) in inside}


def tn_layers(model: nn.Module) -> Iterator[tuple[str, TNLinear]]:
    """Every :class:`TNLinear` of the model with its dotted name."""
    for name, m in model.named_modules():
        if isinstance(m, TNLinear):
            yield name, m


def adapter_modules(model: nn.Module, adapter_name: str = "default") -> dict[str, GraphModule]:
    """The graph modules of adapter ``adapter_name`` by module path; :class:`AdapterStateError` if
    the model has no adapter of that name."""
    out = {path: layer.tn_adapters[adapter_name] for path, layer in tn_layers(model)
           if adapter_name in layer.tn_adapters}
    if not out:
        raise AdapterStateError(f"the model has no adapter named {adapter_name!r}")
    return out


@register_source
def _model_source(source: object, adapter_name: str) -> dict[str, GraphModule] | None:
    # lets every tool that takes "an adapter" (circuit export, checks, hooks) take a model
    if isinstance(source, nn.Module) and not isinstance(source, GraphModule):
        return adapter_modules(source, adapter_name)
    return None


def adapter_config(model: nn.Module, adapter_name: str = "default") -> dict[str, Any] | None:
    """The JSON record adapter ``adapter_name`` was injected (or loaded) with: method, targets,
    ``modules_to_save``, hyper-parameters; ``None`` if the model has none."""
    return getattr(model, _CONFIGS_ATTR, {}).get(adapter_name)


def adapter_method(model: nn.Module, adapter_name: str = "default") -> str | None:
    """The registered method of adapter ``adapter_name`` (``None`` for a hand-made graph)."""
    record = adapter_config(model, adapter_name) or {}
    name = record.get("method", record.get("adapter"))   # "adapter": records written by tnpeft 0.1
    return name if isinstance(name, str) else None


def find_targets(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Dotted names of the modules ``config`` selects, in model order (peft's matching rules)."""
    inside_tn: set[str] = set()
    for name, m in tn_layers(model):
        inside_tn.update(f"{name}.{sub}" for sub, _ in m.named_modules() if sub)
    rule = config.target_modules
    all_linear = isinstance(rule, str) and rule.lower() == "all-linear"
    heads = _output_head_names(model) if all_linear else set()
    found: list[str] = []
    for name, m in model.named_modules():
        if not name or name in inside_tn:
            continue
        if config.exclude_modules and _matches(config.exclude_modules, name):
            continue
        if all_linear:
            if isinstance(m, LINEAR_TYPES + (TNLinear,)) and name not in heads:
                found.append(name)
            continue
        if _matches(rule, name):
            if not isinstance(m, LINEAR_TYPES + (TNLinear,)):
                raise TargetModuleError(
                    f"target_modules {rule!r} matched module {name!r} of type {type(m).__name__}; tnpeft adapts "
                    "nn.Linear and transformers' Conv1D layers only", field="target_modules")
            found.append(name)
    if not found:
        linear = [n for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES) and n not in inside_tn]
        sample = sorted({n.rsplit(".", 1)[-1] for n in linear})[:12]
        raise TargetModuleError(
            f"target_modules {rule!r} matched no module of the model; its linear layers are named like {sample}",
            field="target_modules")
    return found


# ---------------------------------------------------------------------- inject
def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def build_graphs(model: nn.Module, config: AdapterConfig, targets: list[str]) -> dict[str, Graph]:
    """One graph per target module, from the config's builder; nothing is changed on the model."""
    graphs: dict[str, Graph] = {}
    for name in targets:
        layer = model.get_submodule(name)
        n_in, n_out = (layer.in_features, layer.out_features) if isinstance(layer, TNLinear) else layer_sizes(layer)
        try:
            g = config.builder(n_in, n_out, **config.hparams)
        except TNPeftError as e:  # say which layer: the same hyper-parameters may fit some layers only
            if e.args:
                e.args = (f"module {name!r} ({n_in} → {n_out}): {e.args[0]}",) + e.args[1:]
            raise
        except Exception as e:  # a user's builder failing: say where
            raise ConfigError(f"adapter {config.method!r} failed to build for module {name!r} "
                              f"({n_in} → {n_out}): {type(e).__name__}: {e}") from e
        if not isinstance(g, Graph):
            raise ConfigError(f"adapter {config.method!r} returned {type(g).__name__} for module {name!r}; "
                              "a builder must return a tnpeft.Graph")
        want = (n_in, n_in) if g.mode == "input" else (n_in, n_out)
        if (g.in_features, g.out_features) != want:
            raise GraphError(f"adapter {config.method!r} built a graph {g.in_features} → {g.out_features} for "
                             f"module {name!r}, which needs {want[0]} → {want[1]}")
        graphs[name] = g
    return graphs


def attach_graphs(model: nn.Module, graphs: dict[str, Graph], adapter_name: str,
                  config: dict[str, Any], rng: torch.Generator | None = None) -> None:
    """Wrap each named module in a :class:`TNLinear` (if not yet) and add the graph as ``adapter_name``
    (initial values drawn with ``rng``; ``config`` is the JSON record kept with it)."""
    for name in graphs:
        layer = model.get_submodule(name)
        if isinstance(layer, TNLinear) and adapter_name in layer.tn_adapters:
            raise AdapterStateError(f"module {name!r} already has an adapter named {adapter_name!r}; pick another "
                                    "name or delete it first")
    scope = getattr(model, _SCOPE_ATTR, None)
    if scope is None:
        scope = FrameScope()  # one per model: equal-shaped frames of all layers are built together
        setattr(model, _SCOPE_ATTR, scope)
    for name, g in graphs.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, TNLinear):
            layer = TNLinear(layer)
            _set_submodule(model, name, layer)
        layer.add_adapter(adapter_name, g, rng=rng, scope=scope, optimize=config.get("optimize", "auto"))
    if not hasattr(model, _CONFIGS_ATTR):
        setattr(model, _CONFIGS_ATTR, {})
    getattr(model, _CONFIGS_ATTR)[adapter_name] = config
    set_adapter(model, adapter_name)


def inject(model: nn.Module, config: AdapterConfig, adapter_name: str = "default",
           rng: torch.Generator | None = None) -> nn.Module:
    """Add adapter ``adapter_name`` to every module ``config`` targets, freeze everything else,
    make it the active adapter and return the model (changed in place). ``rng`` (a
    ``torch.Generator``) draws the initial values reproducibly.

    Every graph is built and checked before the model is touched: on error the model is unchanged.
    """
    if not isinstance(config, AdapterConfig):
        raise ConfigError(f"inject takes an AdapterConfig, got {type(config).__name__}")
    if not isinstance(adapter_name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", adapter_name):
        raise ConfigError(f"adapter_name {adapter_name!r} must be a non-empty name of letters, digits, '_' or '-'",
                          field="adapter_name")
    targets = find_targets(model, config)
    saved = find_modules_to_save(model, config.modules_to_save, set(targets))
    graphs = build_graphs(model, config, targets)
    record = config.to_dict()
    record["modules_to_save"] = saved
    attach_graphs(model, graphs, adapter_name, record, rng)
    return model


def find_modules_to_save(model: nn.Module, names: tuple[str, ...] | list[str], targets: set[str]) -> list[str]:
    """Full dotted names of the modules listed in ``modules_to_save`` (exact names or dotted suffixes)."""
    found: list[str] = []
    for want in names:
        hits = [n for n, _ in model.named_modules() if n and (n == want or n.endswith("." + want))]
        hits = [h for h in hits if not any(h.startswith(f) for f in found)]
        if not hits:
            raise TargetModuleError(f"modules_to_save entry {want!r} matches no module of the model",
                                    field="modules_to_save")
        for h in hits:
            if h in targets:
                raise TargetModuleError(f"module {h!r} is both adapted and in modules_to_save; choose one",
                                        field="modules_to_save")
        found.extend(hits)
    return found


def saved_modules(model: nn.Module, adapter_name: str) -> list[str]:
    """Full names of the modules trained and saved along with adapter ``adapter_name``."""
    return list((adapter_config(model, adapter_name) or {}).get("modules_to_save") or [])


def adapter_names(model: nn.Module) -> list[str]:
    """Names of every adapter on the model, in the order they were added."""
    names: list[str] = []
    for _, layer in tn_layers(model):
        for n in layer.tn_adapters:
            if n not in names:
                names.append(n)
    return names


def active_adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters active on some layer of the model, in the order they were added."""
    active = {n for _, layer in tn_layers(model) for n in layer.active_adapters}
    return [n for n in adapter_names(model) if n in active]


def set_adapter(model: nn.Module, names: str | list[str]) -> None:
    """Make ``names`` the active adapter(s): they run in the forward pass and are trainable;
    every other adapter is inactive and frozen, and so is the base model."""
    names = [names] if isinstance(names, str) else list(names)
    known = adapter_names(model)
    for n in names:
        if n not in known:
            raise AdapterStateError(f"no adapter named {n!r} on this model; it has {known}")
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        for path in saved_modules(model, n):
            model.get_submodule(path).requires_grad_(True)
    for _, layer in tn_layers(model):
        layer.active_adapters = [n for n in names if n in layer.tn_adapters]
        for n in layer.active_adapters:
            graph = layer.tn_adapters[n].graph
            for node_name, mod in layer.tn_adapters[n].named_children():
                node = graph.nodes.get(node_name)
                mod.requires_grad_(True if node is None else node.trainable)  # None: a hyper-network


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: inside it the model computes its base output only."""
    layers = [m for _, m in tn_layers(model)]
    before = [m.disabled for m in layers]
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m, b in zip(layers, before):
            m.disabled = b


def merge(model: nn.Module, adapter_names: list[str] | None = None, safe_merge: bool = False) -> nn.Module:
    """Add the active (or named) adapters into the base weights; their forward then costs nothing."""
    for _, layer in tn_layers(model):
        names = [n for n in adapter_names if n in layer.tn_adapters] if adapter_names is not None else None
        layer.merge(names, safe_merge=safe_merge)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract every merged adapter from the base weights again."""
    for _, layer in tn_layers(model):
        layer.unmerge()
    return model


def unload(model: nn.Module, merge_first: bool = False) -> nn.Module:
    """Replace every :class:`TNLinear` by its base layer (after merging the active adapters if
    ``merge_first``) and return the plain model. ``merge_and_unload`` is ``unload(model, True)``."""
    for name, layer in list(tn_layers(model)):
        if merge_first:
            layer.merge()
        else:
            layer.unmerge()
        _set_submodule(model, name, layer.base_layer)
    for attr in (_CONFIGS_ATTR, _SCOPE_ATTR):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the active adapters into the base weights and remove every adapter layer."""
    return unload(model, merge_first=True)


class ParameterCount(NamedTuple):
    """Trainable and total parameter counts of a model."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def trainable_parameters(model: nn.Module) -> ParameterCount:
    """``(trainable, total)`` numbers of scalars, counting shared parameters once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCount(trainable, total)


def print_trainable_parameters(model: nn.Module) -> None:
    """Print the counts in peft's format: ``trainable params: … || all params: … || trainable%: …``."""
    c = trainable_parameters(model)
    print(f"trainable params: {c.trainable:,d} || all params: {c.total:,d} || trainable%: {c.percent:.4f}")
