"""The registry of adapter methods: name → :class:`Method` (builder, hyper-parameters, training hook).

A *method* is a builder ``(in_features, out_features, **hparams) -> Graph`` registered under a
name, plus what generic code needs to know about it: its hyper-parameters with their defaults,
the paper it implements, and optionally a *training hook* — something the training loop attaches
to the optimizer (AdaLoRA's budget schedule). Generic code (training, checkpoints, the command
line) asks the registry and never names a method.

``@register(name)`` also tags every graph the builder returns: ``graph.meta["method"]`` and
``graph.meta["hparams"]`` (the arguments it was called with, defaults filled in), so builders
do not write their own tags.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from tnpeft.errors import ConfigError
from tnpeft.graph import Graph

Builder = Callable[..., Graph]

#: a hyper-parameter without a default
REQUIRED = inspect.Parameter.empty


class TrainingHook(Protocol):
    """What a method's training hook offers the training loop (which calls nothing else).

    ``attach(optimizer)`` registers whatever it must do around each optimizer step and returns the
    hook; ``detach()`` undoes that; ``state_dict()`` returns ``(scalars, tensors)`` — JSON values
    and tensors — that :meth:`load_state_dict` restores, so that a resumed run continues exactly.
    """

    def attach(self, optimizer: torch.optim.Optimizer) -> TrainingHook: ...

    def detach(self) -> None: ...

    def state_dict(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]: ...

    def load_state_dict(self, scalars: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...


#: ``factory(model, adapter_name=..., total_step=...) -> TrainingHook``
HookFactory = Callable[..., TrainingHook]


@dataclass(frozen=True)
class Method:
    """A registered adapter method.

    Attributes:
        name: the registered name (``AdapterConfig(name, ...)``, ``tnpeft count name``).
        builder: the builder (graphs it returns carry ``meta["method"]`` and ``meta["hparams"]``).
        hparams: hyper-parameter name → default (:data:`REQUIRED` when it has none), in order.
        paper: the reference it implements, if any.
        training_hook: a factory ``(model, adapter_name=..., total_step=...) -> TrainingHook`` for
            methods whose training needs more than the optimizer (AdaLoRA), else ``None``.
        aliases: other names a hyper-parameter answers to (``{"r": "rank"}``: ``r`` means the rank).
        learning_rate: the method's starting learning rate with AdamW (the demo's rate, and the centre
            of ``compare``'s default grid, from Python and from the shell alike).
        advice: one line of practical advice (what measurements say about using it), shown by
            ``tnpeft adapters``; ``None`` when there is none.
    """

    name: str
    builder: Builder
    hparams: dict[str, Any] = field(default_factory=dict)
    paper: str | None = None
    training_hook: HookFactory | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    learning_rate: float = 2e-3
    advice: str | None = None


#: the learning rate of a method registered without one
DEFAULT_LEARNING_RATE = 2e-3

METHODS: dict[str, Method] = {}


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _signature_hparams(fn: Callable[..., Any]) -> dict[str, Any]:
    # ``site`` is not a hyper-parameter: inject gives model-wide builders the layer's place in the model
    params = list(inspect.signature(fn).parameters.values())[2:]
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name != "site"}


def register(name: str, *, paper: str | None = None, training_hook: HookFactory | None = None,
             aliases: dict[str, str] | None = None,
             learning_rate: float = DEFAULT_LEARNING_RATE, advice: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``AdapterConfig(name, ...)``, ``tnpeft count name``
    and in every other tool, and tag the graphs it returns with the method's name and the
    hyper-parameters they were built with (those that are JSON values). ``aliases`` maps other
    names to hyper-parameters (``{"r": "rank"}``); giving both names at once is an error.
    ``learning_rate`` is the method's starting rate (AdamW), what the demo and ``compare`` use;
    ``advice`` a line of practical advice that ``tnpeft adapters`` prints."""
    if advice is not None and (not isinstance(advice, str) or not advice.strip()):
        raise ConfigError(f"method {name!r}: advice must be a non-empty string, got {advice!r}", field="advice")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not 0 < learning_rate < 1e3:
        raise ConfigError(f"method {name!r}: learning_rate must be a positive number, got {learning_rate!r}",
                          field="learning_rate")
    lr = float(learning_rate)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"a method name must be an identifier, got {name!r}", field="name")
    alias = dict(aliases or {})

    def deco(fn: Builder) -> Builder:
        sig = inspect.signature(fn)
        for a, target in alias.items():
            if target not in sig.parameters or a in sig.parameters:
                raise ConfigError(f"method {name!r}: alias {a!r} must name a new word for one of its "
                                  f"hyper-parameters, not {target!r}", field="aliases")

        @functools.wraps(fn)
        def builder(*args: Any, **kwargs: Any) -> Graph:
            for a, target in alias.items():
                if a in kwargs:
                    if target in kwargs:
                        raise ConfigError(f"{name}: {a!r} is another name for {target!r}; give one of them",
                                          field=a)
                    kwargs[target] = kwargs.pop(a)
            graph = fn(*args, **kwargs)
            if isinstance(graph, Graph):
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                hp = {k: v for k, v in list(bound.arguments.items())[2:] if _json_ready(v) and k != "site"}
                tags: dict[str, Any] = {"method": name, "hparams": hp}
                if paper:
                    tags["paper"] = paper
                graph = graph.replace(meta={**tags, **{k: v for k, v in graph.meta.items() if k not in tags}})
            return graph

        builder.method = name  # type: ignore[attr-defined]
        builder.aliases = alias  # type: ignore[attr-defined]
        METHODS[name] = Method(name, builder, _signature_hparams(fn), paper, training_hook, alias, lr,
                               " ".join(advice.split()) if advice else None)
        return builder

    return deco


def method_table() -> list[dict[str, Any]]:
    """Every registered method as a JSON-ready row: name, paper, hyper-parameters with their
    defaults (``"required"`` for none; a non-JSON default as its ``repr``), aliases, whether it
    has a training hook, its learning rate and its advice — what ``tnpeft adapters`` prints."""
    def shown(v: Any) -> Any:
        return "required" if v is REQUIRED else v if _json_ready(v) else repr(v)

    return [{"name": m.name, "paper": m.paper, "hparams": {k: shown(v) for k, v in m.hparams.items()},
             "aliases": dict(m.aliases), "training_hook": m.training_hook is not None,
             "learning_rate": m.learning_rate, "advice": m.advice} for m in METHODS.values()]


def get_method(name: str) -> Method:
    """The registered method called ``name``; :class:`ConfigError` listing the known ones otherwise."""
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"unknown adapter {name!r}; expected a registered method {sorted(METHODS)} or a builder "
                          "function", field="method")
    return METHODS[name]


def get_builder(method: str | Builder) -> Builder:
    """Resolve a method name (or pass a builder callable through)."""
    if callable(method):
        return method
    return get_method(method).builder


def method_of(graph: Graph) -> str | None:
    """The registered method a graph was built by (``None`` for a hand-made graph). Graphs saved by
    tnpeft 0.1 carry the name as ``meta["adapter"]``."""
    name = graph.meta.get("method", graph.meta.get("adapter"))
    return name if isinstance(name, str) else None


def hparam_names(builder: Builder) -> list[str]:
    """The hyper-parameters a builder takes (all its arguments after in_features, out_features)."""
    return list(_signature_hparams(builder))


def check_hparams(method: str | Builder, hparams: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming any hyper-parameter the builder does not take."""
    builder = get_builder(method)
    sig = inspect.signature(builder)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    known = hparam_names(builder)
    known += [a for a in getattr(builder, "aliases", {}) if a not in known]
    for k in hparams:
        if k not in known:
            label = method if isinstance(method, str) else getattr(builder, "__name__", "adapter")
            raise ConfigError(f"{label}: unknown hyper-parameter {k!r}; expected one of {known}", field=k)


def check_positive_int(method: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{method}: hyper-parameter {field!r} must be a positive integer, got {value!r}",
                          field=field)
    return value
