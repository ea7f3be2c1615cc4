"""``AdapterConfig``: which adapter, with which hyper-parameters, on which modules."""

from __future__ import annotations

import json
from typing import Any, Callable

from tnpeft.adapters import check_hparams, get_builder
from tnpeft.errors import ConfigError


class AdapterConfig:
    """What to inject: ``AdapterConfig("lora", target_modules=["c_attn", "c_fc"], r=8, alpha=16)``.

    Args:
        adapter: a built-in adapter name (``"lora"``, …) or a builder function
            ``(in_features, out_features, **hparams) -> Graph`` for a topology of your own.
        target_modules: peft's rules: a string is a regular expression matched against the whole
            dotted module name (``re.fullmatch``), except ``"all-linear"``, which takes every
            ``nn.Linear``/``Conv1D`` but the output head; a list matches exact names or dotted
            suffixes (``"query"`` matches ``encoder.layer.0.attention.self.query``).
        exclude_modules: same rules; matching modules are never adapted.
        modules_to_save: names (exact or dotted suffix) of whole modules to train and save with the
            adapter, e.g. a new classification head ``["classifier"]``.
        **hparams: the builder's hyper-parameters (checked against its signature now, so a typo
            fails here rather than deep inside injection).
    """

    def __init__(self, adapter: str | Callable[..., Any], target_modules: str | list[str] | tuple[str, ...],
                 *, exclude_modules: str | list[str] | None = None, modules_to_save: list[str] | None = None,
                 **hparams: Any):
        builder = get_builder(adapter)
        self.adapter = adapter
        self.builder = builder
        self.target_modules = _check_targets(target_modules, "target_modules")
        self.exclude_modules = _check_targets(exclude_modules, "exclude_modules") if exclude_modules else None
        if modules_to_save is not None and (isinstance(modules_to_save, str) or not all(
                isinstance(m, str) and m for m in modules_to_save)):
            raise ConfigError(f"modules_to_save must be a list of module names, got {modules_to_save!r}",
                              field="modules_to_save")
        self.modules_to_save = tuple(modules_to_save or ())
        check_hparams(adapter, hparams)
        try:
            json.dumps(hparams)
        except TypeError as e:
            raise ConfigError(f"hyper-parameters must be JSON values (numbers, strings, lists): {e}") from None
        self.hparams = dict(hparams)

    @property
    def adapter_name(self) -> str:
        """The adapter's registered name, or ``"custom:<function name>"`` for a builder function."""
        if isinstance(self.adapter, str):
            return self.adapter
        return getattr(self.builder, "adapter_name", None) or f"custom:{getattr(self.builder, '__name__', 'builder')}"

    def to_dict(self) -> dict[str, Any]:
        t = self.target_modules
        e = self.exclude_modules
        return {"adapter": self.adapter_name, "target_modules": t if isinstance(t, str) else list(t),
                "exclude_modules": e if e is None or isinstance(e, str) else list(e),
                "modules_to_save": list(self.modules_to_save), "hparams": self.hparams}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"AdapterConfig({self.adapter_name!r}, target_modules={self.target_modules!r}{', ' + hp if hp else ''})"


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
