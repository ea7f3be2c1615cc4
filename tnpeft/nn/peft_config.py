"""``TNPeftConfig``: a tnpeft adapter as a peft config (``peft_type="TNPEFT"``).

``peft.get_peft_model(model, TNPeftConfig(method="quantum_peft", target_modules=[...], rank=8))``
injects the graph the method builds for each target layer; ``PeftModel.from_pretrained`` reads the
config back from ``adapter_config.json`` (after ``import tnpeft``, which registers the method).
The config is plain JSON: a registered method's name and hyper-parameters, or graph structures
(``graph``: one graph for every target; ``module_graphs``: one per module path, what
``add_weighted_adapter`` writes) — never code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Union

import peft
from peft.config import PeftConfig
from peft.utils import PeftType

from tnpeft.adapters import METHODS, check_hparams
from tnpeft.contract import check_optimizer
from tnpeft.errors import ConfigError, TNPeftError
from tnpeft.graph import Graph
from tnpeft.nn.config import AdapterConfig
from tnpeft.nn.peft_format import FORMAT_VERSION, PEFT_TYPE

#: the oldest peft whose tuner interface tnpeft's method uses (state-dict key hooks of 0.21)
MIN_PEFT = (0, 21)


def peft_version() -> tuple[int, ...]:
    """The installed peft's ``(major, minor)``."""
    parts = []
    for p in peft.__version__.split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def extend_str_enum(cls: Any, name: str) -> Any:
    """Add member ``name`` (value ``name``) to the ``str`` enum ``cls`` — peft's ``PeftType`` has no
    hook for methods of other packages; idempotent (returns the member)."""
    if name in cls.__members__:
        return cls.__members__[name]
    if name in cls._value2member_map_:
        raise ConfigError(f"{cls.__name__} already has a member with value {name!r}", field="peft_type")
    member: Any = str.__new__(cls, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = cls
    member.__init__(name)
    cls._member_map_[name] = member
    cls._value2member_map_[name] = member
    cls._member_names_.append(name)
    type.__setattr__(cls, name, member)   # the enum's own __setattr__ refuses member names
    return member


extend_str_enum(PeftType, PEFT_TYPE)


def _graph_dict(value: Any, where: str) -> dict[str, Any]:
    """A graph given as a :class:`Graph`, a dict, JSON text or the path of a ``.json`` file, as the
    checked JSON dict of its structure."""
    try:
        if isinstance(value, Graph):
            return value.to_dict()
        if isinstance(value, dict):
            return Graph.from_dict(value).to_dict()
        if isinstance(value, (str, os.PathLike)):
            text = str(value)
            if not text.lstrip().startswith("{"):
                path = Path(text)
                if not path.is_file():
                    raise ConfigError(f"{where}: {text!r} is neither a graph .json file nor JSON text", field="graph")
                text = path.read_text()
            return Graph.from_json(text).to_dict()
    except ConfigError:
        raise
    except (TNPeftError, OSError, ValueError) as e:
        raise ConfigError(f"{where}: not a tnpeft graph: {e}", field="graph") from None
    raise ConfigError(f"{where} must be a tnpeft Graph, its JSON (text or dict) or a .json file, got "
                      f"{type(value).__name__}", field="graph")


@dataclass
class _TNPeftFields(PeftConfig):
    method: str | None = field(default=None, metadata={"help": "a registered tnpeft method (default 'lora')"})
    hparams: dict[str, Any] = field(default_factory=dict, metadata={"help": "the method's hyper-parameters"})
    graph: dict[str, Any] | None = field(default=None, metadata={"help": "one graph (JSON) for every target"})
    module_graphs: dict[str, dict[str, Any]] | None = field(
        default=None, metadata={"help": "a graph (JSON) per module path"})
    optimize: str = field(default="auto", metadata={"help": "cotengra's contraction optimizer preset"})
    format_version: int = field(default=FORMAT_VERSION, metadata={"help": "tnpeft's config format version"})
    # fields peft's generic code reads (and TRL writes)
    target_modules: Union[list[str], set[str], str] | None = field(default=None)
    exclude_modules: Union[list[str], set[str], str] | None = field(default=None)
    layers_to_transform: Union[list[int], int] | None = field(default=None)
    layers_pattern: Union[list[str], str] | None = field(default=None)
    modules_to_save: list[str] | None = field(default=None)
    trainable_token_indices: Union[list[int], dict[str, list[int]]] | None = field(default=None)
    target_parameters: list[str] | None = field(default=None)
    bias: str = field(default="none")

    def __post_init__(self) -> None:
        if peft_version() < MIN_PEFT:
            raise ConfigError(f"tnpeft's peft method needs peft >= {'.'.join(map(str, MIN_PEFT))}; peft "
                              f"{peft.__version__} is installed", field="peft")
        super().__post_init__()  # type: ignore[no-untyped-call]  # peft leaves it unannotated
        self.peft_type = getattr(PeftType, PEFT_TYPE)         # the member added above
        for name in ("target_modules", "exclude_modules"):
            if isinstance(getattr(self, name), (list, tuple)):
                setattr(self, name, set(getattr(self, name)))
        if self.bias != "none":
            raise ConfigError(f"bias is {self.bias!r}; tnpeft adapters train no biases (bias='none')", field="bias")
        if self.target_parameters:
            raise ConfigError("target_parameters is not supported: tnpeft adapts modules (target_modules)",
                              field="target_parameters")
        v = self.format_version
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= FORMAT_VERSION:
            raise ConfigError(f"format_version is {v!r}; this tnpeft reads versions 1 to {FORMAT_VERSION} (a newer "
                              "tnpeft wrote it: upgrade tnpeft)", field="format_version")
        if not isinstance(self.optimize, str) or not self.optimize:
            raise ConfigError(f"optimize must name a cotengra preset, got {self.optimize!r}", field="optimize")
        check_optimizer(self.optimize)
        if not isinstance(self.hparams, dict):
            raise ConfigError(f"hparams must be a JSON object, got {self.hparams!r}", field="hparams")
        self._check_adapter()

    def _check_adapter(self) -> None:
        given = [k for k in ("graph", "module_graphs") if getattr(self, k) is not None]
        if self.method is not None and given:
            raise ConfigError(f"give a method or {given[0]}, not both", field=given[0])
        if len(given) > 1:
            raise ConfigError("give graph or module_graphs, not both", field="module_graphs")
        if given and self.hparams:
            raise ConfigError(f"{given[0]} holds its hyper-parameters; drop {sorted(self.hparams)}",
                              field=next(iter(self.hparams)))
        if self.graph is not None:
            self.graph = _graph_dict(self.graph, "graph")
            return
        if self.module_graphs is not None:
            if not isinstance(self.module_graphs, dict) or not self.module_graphs:
                raise ConfigError("module_graphs must map module paths to graphs", field="module_graphs")
            self.module_graphs = {str(p): _graph_dict(g, f"module_graphs[{p!r}]") for p, g in self.module_graphs.items()}
            return
        if self.method is None:
            self.method = "lora"
        if not isinstance(self.method, str):
            raise ConfigError(f"method must be the name of a registered method (tnpeft.adapters.register), got "
                              f"{self.method!r}: a peft config is stored as JSON", field="method")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; registered: {sorted(METHODS)} (a method of your own "
                              "must be registered, i.e. its module imported, before the config is built or loaded)",
                              field="method")
        check_hparams(self.method, self.hparams)
        for k, v in self.hparams.items():
            try:
                json.dumps(v)
            except (TypeError, ValueError):
                raise ConfigError(f"hyper-parameter {k!r} is {v!r}; a peft config holds JSON values", field=k) from None


class TNPeftConfig(_TNPeftFields):
    """A tnpeft adapter as a peft config: ``TNPeftConfig(method="lora", target_modules=["q_proj",
    "v_proj"], r=8, alpha=16)``.

    Args:
        method: a registered method (``"lora"`` by default, ``"quantum_peft"``, ``"qpa"``, …, or one
            registered with :func:`tnpeft.adapters.register` — whose module must be imported before
            a saved adapter of it loads).
        target_modules, exclude_modules, layers_to_transform, layers_pattern: peft's matching rules
            (``"all-linear"`` included; ``None`` takes peft's LoRA defaults for known architectures).
        modules_to_save, trainable_token_indices: whole modules / embedding rows trained and saved
            with the adapter (peft's).
        graph: instead of a method, one graph for every target (a :class:`~tnpeft.Graph`, its JSON,
            or a ``.json`` file; each target must have its sizes).
        module_graphs: a graph per module path (written by ``add_weighted_adapter``).
        optimize: cotengra's contraction optimizer preset.
        **hyper-parameters: the method's (checked against its signature: a typo fails here).

    The fields of ``peft.PeftConfig`` (``task_type``, ``inference_mode``, ``base_model_name_or_path``,
    …) apply as usual. ``adapter_config.json`` holds the method, its hyper-parameters and
    ``format_version``.
    """

    def __init__(self, method: str | None = None, **kwargs: Any) -> None:
        names = {f.name for f in fields(_TNPeftFields) if f.init}
        known = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        hparams = dict(known.pop("hparams", None) or {})
        for k in kwargs:
            if k in hparams:
                raise ConfigError(f"hyper-parameter {k!r} is given twice (as {k}= and in hparams)", field=k)
        hparams.update(kwargs)
        super().__init__(method=method, hparams=hparams, **known)

    @classmethod
    def check_kwargs(cls, **kwargs: Any) -> dict[str, Any]:
        """Refuse a config written by a newer tnpeft before peft builds it (peft would drop fields
        it does not know with a warning)."""
        v = kwargs.get("format_version", 1)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= FORMAT_VERSION:
            raise ConfigError(f"adapter_config.json has format_version {v!r}; this tnpeft reads versions 1 to "
                              f"{FORMAT_VERSION} (upgrade tnpeft)", field="format_version")
        checked: dict[str, Any] = super().check_kwargs(**kwargs)  # type: ignore[no-untyped-call]  # peft's, unannotated
        return checked

    def builder(self) -> str | Callable[..., Graph]:
        """The method name, or for ``graph`` a builder that returns the graph for layers of its sizes."""
        if self.graph is None:
            return self.method or "lora"
        g = Graph.from_dict(self.graph)

        def from_graph(in_features: int, out_features: int) -> Graph:
            return g

        from_graph.__name__ = g.name or "graph"
        return from_graph

    def adapter_config(self, targets: list[str]) -> AdapterConfig:
        """The :class:`~tnpeft.AdapterConfig` of a method or ``graph`` config for the given module paths."""
        return AdapterConfig(self.builder(), list(targets), optimize=self.optimize, **self.hparams)

    def module_graph(self, path: str) -> Graph:
        """The graph ``module_graphs`` holds for ``path``."""
        if not self.module_graphs or path not in self.module_graphs:
            raise ConfigError(f"module_graphs holds no graph for module {path!r}", field="module_graphs")
        return Graph.from_dict(self.module_graphs[path])

    def record(self) -> dict[str, Any]:
        """The adapter's JSON record as tnpeft keeps it on the model."""
        return {"method": self.method if self.graph is None and self.module_graphs is None else None,
                "hparams": dict(self.hparams), "optimize": self.optimize, "modules_to_save": []}
