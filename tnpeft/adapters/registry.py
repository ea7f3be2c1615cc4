"""The registry of adapter builders: name → ``builder(in_features, out_features, **hparams) -> Graph``."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from tnpeft.errors import ConfigError

Builder = Callable[..., "Graph"]  # noqa: F821
ADAPTERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``builder`` available as ``AdapterConfig(adapter=name)`` and ``tnpeft count name``."""

    def deco(fn: Builder) -> Builder:
        ADAPTERS[name] = fn
        fn.adapter_name = name  # type: ignore[attr-defined]
        return fn

    return deco


def get_builder(adapter: str | Builder) -> Builder:
    """Resolve an adapter name (or pass a builder callable through)."""
    if callable(adapter):
        return adapter
    if adapter not in ADAPTERS:
        raise ConfigError(f"unknown adapter {adapter!r}; expected one of {sorted(ADAPTERS)} or a builder function",
                          field="adapter")
    return ADAPTERS[adapter]


def hparam_names(builder: Builder) -> list[str]:
    """The hyper-parameters a builder takes (all its arguments after in_features, out_features)."""
    params = list(inspect.signature(builder).parameters.values())[2:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_hparams(adapter: str | Builder, hparams: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` naming any hyper-parameter the builder does not take."""
    builder = get_builder(adapter)
    sig = inspect.signature(builder)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    known = hparam_names(builder)
    for k in hparams:
        if k not in known:
            label = adapter if isinstance(adapter, str) else getattr(builder, "__name__", "adapter")
            raise ConfigError(f"{label}: unknown hyper-parameter {k!r}; expected one of {known}", field=k)


def check_positive_int(adapter: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{adapter}: hyper-parameter {field!r} must be a positive integer, got {value!r}",
                          field=field)
    return value
