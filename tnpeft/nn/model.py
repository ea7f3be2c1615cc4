"""Model-level operations: inject adapters into a transformers (or any torch) model, switch,
disable, count. Every call that changes the model is all or nothing (:mod:`tnpeft.nn.transaction`)."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple

import torch
from torch import nn

from tnpeft.errors import AdapterStateError, ConfigError, GraphError, TargetModuleError, TNPeftError
from tnpeft.graph import Graph
from tnpeft.graph.names import adapter_name_problem
from tnpeft.nn.config import AdapterConfig
from tnpeft.nn.layer import LINEAR_TYPES, TNLinear, adapter_module, layer_sizes
from tnpeft.nn.transaction import CONFIGS_ATTR, SCOPE_ATTR, transaction
from tnpeft.params.unitary import FrameScope
from tnpeft.runtime import GraphModule
from tnpeft.storage import register_source

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
    return getattr(model, CONFIGS_ATTR, {}).get(adapter_name)


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
def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def check_adapter_name(name: object) -> str:
    """``name`` if it can name an adapter, else :class:`ConfigError` (field ``adapter_name``)."""
    problem = adapter_name_problem(name)
    if problem:
        raise ConfigError(problem, field="adapter_name")
    return name  # type: ignore[return-value]


def enclosing_adapter_layer(model: nn.Module, path: str) -> str | None:
    """The path of the :class:`TNLinear` that ``path`` lies strictly inside (its base layer, an
    adapter's own modules), or ``None``."""
    parts = path.split(".")
    m: nn.Module = model
    for k, part in enumerate(parts[:-1]):
        child = m._modules.get(part)   # walking the tree without raising
        if child is None:
            return None
        m = child
        if isinstance(m, TNLinear):
            return ".".join(parts[:k + 1])
    return None


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


def build_modules(model: nn.Module, graphs: dict[str, Graph], adapter_name: str, rng: torch.Generator | None = None,
                  optimize: object = "auto") -> tuple[FrameScope, dict[str, GraphModule]]:
    """The value modules of adapter ``adapter_name`` for each path's graph, built (and checked to fit)
    without changing the model: ``(the model's frame scope, {path: GraphModule})``. Install them
    with :func:`install_modules`."""
    for name, g in graphs.items():
        layer = model.get_submodule(name)
        if isinstance(layer, TNLinear):
            layer.check_graph(adapter_name, g)
            if adapter_name in layer.tn_adapters:
                raise AdapterStateError(f"module {name!r} already has an adapter named {adapter_name!r}; pick "
                                        "another name or delete it first")
    scope = getattr(model, SCOPE_ATTR, None) or FrameScope()  # one per model: frames of all layers built together
    modules: dict[str, GraphModule] = {}
    for name, g in graphs.items():
        layer = model.get_submodule(name)
        base = layer.base_layer if isinstance(layer, TNLinear) else layer
        module = adapter_module(base, g, rng=rng, scope=scope, optimize=optimize, where=f"module {name!r}: ")
        if isinstance(layer, TNLinear):
            module.train(layer.training)
        modules[name] = module
    return scope, modules


def install_modules(model: nn.Module, adapter_name: str, scope: FrameScope, modules: dict[str, GraphModule],
                    record: dict[str, Any]) -> None:
    """Put modules built by :func:`build_modules` into the model (wrapping each layer in a
    :class:`TNLinear` if it is not one yet, in the layer's train/eval mode) and keep ``record``, the
    adapter's JSON record. Call it inside a :func:`~tnpeft.nn.transaction.transaction`."""
    if getattr(model, SCOPE_ATTR, None) is None:
        setattr(model, SCOPE_ATTR, scope)
    for name, module in modules.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, TNLinear):
            layer = TNLinear(layer)
            set_submodule(model, name, layer)
        layer.attach_adapter(adapter_name, module)
    if not hasattr(model, CONFIGS_ATTR):
        setattr(model, CONFIGS_ATTR, {})
    getattr(model, CONFIGS_ATTR)[adapter_name] = record


def inject(model: nn.Module, config: AdapterConfig, adapter_name: str = "default",
           rng: torch.Generator | None = None) -> nn.Module:
    """Add adapter ``adapter_name`` to every module ``config`` targets, freeze everything else,
    make it the active adapter and return the model (changed in place). ``rng`` (a
    ``torch.Generator``) draws the initial values reproducibly.

    Every graph is built and checked against the size budgets, and every value module allocated,
    before the model is touched; new modules follow the host layer's train/eval mode. On any error
    the model is exactly as it was.
    """
    if not isinstance(config, AdapterConfig):
        raise ConfigError(f"inject takes an AdapterConfig, got {type(config).__name__}")
    check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise AdapterStateError(f"the model already has an adapter named {adapter_name!r}; pick another name or "
                                "delete it first (tnpeft.delete_adapter)")
    targets = find_targets(model, config)
    saved = find_modules_to_save(model, config.modules_to_save, set(targets))
    graphs = build_graphs(model, config, targets)
    scope, modules = build_modules(model, graphs, adapter_name, rng, config.optimize)
    record = config.to_dict()
    record["modules_to_save"] = saved
    with transaction(model):
        install_modules(model, adapter_name, scope, modules, record)
        set_adapter(model, adapter_name)
    return model


def check_saved_paths(model: nn.Module, paths: list[str], targets: set[str], error: type[TNPeftError],
                      where: str = "") -> None:
    """Raise ``error`` unless every path of ``modules_to_save`` names a whole module that is not an
    adapted layer, does not contain one (or a target), does not lie inside one, and does not
    overlap another saved path."""
    adapted = targets | {n for n, _ in tn_layers(model)}
    for k, p in enumerate(paths):
        inside = enclosing_adapter_layer(model, p)
        clash = next((t for t in sorted(adapted) if t == p or t.startswith(p + ".") or p.startswith(t + ".")), None)
        if inside is not None or clash is not None:
            what = (f"lies inside the adapted layer {inside!r}" if inside is not None else
                    "is an adapted layer" if clash == p else
                    f"contains the adapted layer {clash!r}" if clash is not None and clash.startswith(p + ".") else
                    f"lies inside the adapted layer {clash!r}")
            raise error(f"{where}modules_to_save entry {p!r} {what}; a saved module must be a whole module "
                        "apart from the adapted ones")
        other = next((q for q in paths[:k] if q == p or q.startswith(p + ".") or p.startswith(q + ".")), None)
        if other is not None:
            raise error(f"{where}modules_to_save entries {other!r} and {p!r} overlap")


def find_modules_to_save(model: nn.Module, names: tuple[str, ...] | list[str], targets: set[str]) -> list[str]:
    """Full dotted names of the modules listed in ``modules_to_save`` (exact names or dotted
    suffixes), checked not to overlap the adapted layers or each other."""
    found: list[str] = []
    for want in names:
        hits = [n for n, _ in model.named_modules() if n and (n == want or n.endswith("." + want))]
        hits = [h for h in hits if not any(h == f or h.startswith(f + ".") for f in found)]
        if not hits:
            raise TargetModuleError(f"modules_to_save entry {want!r} matches no module of the model",
                                    field="modules_to_save")
        found.extend(hits)
    try:
        check_saved_paths(model, found, targets, TargetModuleError)
    except TargetModuleError as e:
        e.field = "modules_to_save"
        raise
    return found


def saved_modules(model: nn.Module, adapter_name: str) -> list[str]:
    """Full names of the modules trained and saved along with adapter ``adapter_name``."""
    return list((adapter_config(model, adapter_name) or {}).get("modules_to_save") or [])


def adapter_names(model: nn.Module) -> list[str]:
    """Names of every adapter on the model, in the order they were added (the order of the records
    tnpeft keeps; adapters added to layers by hand follow, in model order)."""
    found: dict[str, None] = {}
    for _, layer in tn_layers(model):
        found.update(dict.fromkeys(layer.tn_adapters))
    recorded = [n for n in getattr(model, CONFIGS_ATTR, {}) if n in found]
    return recorded + [n for n in found if n not in recorded]


def active_adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters active on some layer of the model, in the order they were added."""
    active = {n for _, layer in tn_layers(model) for n in layer.active_adapters}
    return [n for n in adapter_names(model) if n in active]


def set_adapter(model: nn.Module, names: str | list[str]) -> None:
    """Make ``names`` the active adapter(s): they run in the forward pass and are trainable;
    every other adapter is inactive and frozen, and so is the base model. Merged adapters that are
    not among ``names`` are unmerged first (their update leaves the weights); so is every merged
    adapter of a layer where a multiplicative (input-mode) adapter would otherwise run unmerged next
    to merged ones. All or nothing."""
    names = [names] if isinstance(names, str) else list(names)
    known = adapter_names(model)
    for n in names:
        if n not in known:
            raise AdapterStateError(f"no adapter named {n!r} on this model; it has {known}")
    with transaction(model) as tx:
        for _, layer in tn_layers(model):
            leaving = [n for n in layer.merged_adapters if n not in names]
            pending = [n for n in names if n in layer.tn_adapters and n not in layer.merged_adapters]
            if pending and layer.merged_adapters and any(
                    layer.tn_adapters[n].graph.mode == "input" for n in layer.merged_adapters + pending):
                leaving = list(layer.merged_adapters)  # unmerged next to merged ones, they would compute else
            if leaving:
                tx.backup(layer.base_layer.weight)
                layer.unmerge(leaving)
        activate(model, names)


def activate(model: nn.Module, names: list[str]) -> None:
    """Set which adapters run and train (the flags only; see :func:`set_adapter`)."""
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


def trainable_parameters_line(model: nn.Module) -> str:
    """The counts in peft's format: ``trainable params: … || all params: … || trainable%: …``."""
    c = trainable_parameters(model)
    return f"trainable params: {c.trainable:,d} || all params: {c.total:,d} || trainable%: {c.percent:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    """Print :func:`trainable_parameters_line` (peft's ``print_trainable_parameters``)."""
    print(trainable_parameters_line(model))
