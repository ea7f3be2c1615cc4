"""``AdapterConfig``: which adapter, with which hyper-parameters, on which modules."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from tnpeft.adapters import check_hparams, get_builder
from tnpeft.contract import check_optimizer
from tnpeft.errors import ConfigError


class AdapterConfig:
    """What to inject: ``AdapterConfig("lora", target_modules=["c_attn", "c_fc"], r=8, alpha=16)``.

    Args:
        method: a registered method name (``"lora"``, …, or one of yours registered with
            :func:`tnpeft.adapters.register`) or a builder function
            ``(in_features, out_features, **hparams) -> Graph`` for a topology of your own.
        target_modules: peft's rules: a string is a regular expression matched against the whole
            dotted module name (``re.fullmatch``), except ``"all-linear"``, which takes every
            ``nn.Linear``/``Conv1D`` but the output head; a list matches exact names or dotted
            suffixes (``"query"`` matches ``encoder.layer.0.attention.self.query``).
        exclude_modules: same rules; matching modules are never adapted.
        modules_to_save: names (exact or dotted suffix) of whole modules to train and save with the
            adapter, e.g. a new classification head ``["classifier"]``.
        optimize: the contraction optimizer cotengra uses to plan the adapter's forward pass: a
            preset name (``"auto"``, default; ``"greedy"``, ``"optimal"``, ``"auto-hq"``, …). It is
            saved with the adapter; plans are cached per optimizer.
        **hparams: the builder's hyper-parameters (checked against its signature now, so a typo
            fails here rather than deep inside injection).
    """

    def __init__(self, method: str | Callable[..., Any], target_modules: str | list[str] | tuple[str, ...],
                 *, exclude_modules: str | list[str] | None = None, modules_to_save: Sequence[str] | None = None,
                 optimize: str = "auto", **hparams: Any):
        builder = get_builder(method)
        self.builder = builder
        #: the registered method name, or ``"custom:<function name>"`` for a builder function
        self.method: str = method if isinstance(method, str) else (
            getattr(builder, "method", None) or f"custom:{getattr(builder, '__name__', 'builder')}")
        if not isinstance(optimize, str) or not optimize:
            raise ConfigError(f"optimize must be the name of a cotengra preset (e.g. 'auto', 'greedy'), got "
                              f"{optimize!r}", field="optimize")
        check_optimizer(optimize)
        self.optimize = optimize
        self.target_modules = _check_targets(target_modules, "target_modules")
        self.exclude_modules = _check_targets(exclude_modules, "exclude_modules") if exclude_modules else None
        if modules_to_save is not None and (isinstance(modules_to_save, str) or not all(
                isinstance(m, str) and m for m in modules_to_save)):
            raise ConfigError(f"modules_to_save must be a list of module names, got {modules_to_save!r}",
                              field="modules_to_save")
        self.modules_to_save = tuple(modules_to_save or ())
        check_hparams(method, hparams)
        try:
            json.dumps(hparams)
        except TypeError as e:
            raise ConfigError(f"hyper-parameters must be JSON values (numbers, strings, lists): {e}") from None
        self.hparams = dict(hparams)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record saved with the adapter."""
        t = self.target_modules
        e = self.exclude_modules
        return {"method": self.method, "target_modules": t if isinstance(t, str) else list(t),
                "exclude_modules": e if e is None or isinstance(e, str) else list(e),
                "modules_to_save": list(self.modules_to_save), "optimize": self.optimize, "hparams": self.hparams}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"AdapterConfig({self.method!r}, target_modules={self.target_modules!r}{', ' + hp if hp else ''})"


def _check_targets(value: Any, field: str) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{field} is an empty string; expected a regular expression, a list of names "
                              "or 'all-linear'", field=field)
        if value.lower() != "all-linear":
            import re

            try:
                re.compile(value)
            except re.error as e:
                raise ConfigError(f"{field} {value!r} is not a valid regular expression: {e}", field=field) from None
        return value
    if isinstance(value, (list, tuple, set)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(f"{field} must be a regular expression string, 'all-linear', or a non-empty list of module "
                      f"names; got {value!r}", field=field)
