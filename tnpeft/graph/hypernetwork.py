"""Hyper-networks in the graph IR: trainable networks that fill dense nodes with generated values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tnpeft.errors import ConfigError, GraphError, NodeKindError
from tnpeft.graph.names import check_name
from tnpeft.params import HYPERNETWORKS
from tnpeft.params.hypernetworks import HyperNetworkShape


@dataclass(frozen=True)
class HyperNetwork:
    """A trainable hyper-network that fills the dense nodes ``outputs`` with generated values
    (in order, each row-major), so that only the hyper-network is trained — QPA's construction.

    ``kind`` names a registered kind (:data:`tnpeft.params.HYPERNETWORKS`: ``"qpa"``);
    ``options`` configure it (QPA: ``chunk_size``, ``layers``, ``hidden``, ``preset``).
    Generated nodes own no parameters; the graph counts the hyper-network's instead.
    """

    name: str
    outputs: tuple[str, ...]
    kind: str = "qpa"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("hyper-network", self.name)
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            raise GraphError(f"hyper-network {self.name!r}: outputs must be a non-empty list of node names",
                             node=self.name)
        if not isinstance(self.kind, str) or self.kind not in HYPERNETWORKS:
            raise NodeKindError(f"hyper-network {self.name!r}: unknown kind {self.kind!r}; expected one of "
                                f"{sorted(HYPERNETWORKS)}", node=self.name)
        if not isinstance(self.options, dict):
            raise GraphError(f"hyper-network {self.name!r}: options must be an object", node=self.name)

    def __hash__(self) -> int:
        return hash((self.name, self.outputs, self.kind, json.dumps(self.options, sort_keys=True)))

    def shape(self, m: int) -> HyperNetworkShape:
        """The hyper-network's derived sizes for ``m`` generated values (raises on bad options)."""
        try:
            return HYPERNETWORKS[self.kind].shape(m, where=f"hyper-network {self.name!r}: ", **self.options)
        except TypeError as e:
            raise GraphError(f"hyper-network {self.name!r}: {e}", node=self.name) from None
        except ConfigError as e:
            raise GraphError(str(e), node=self.name) from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "outputs": list(self.outputs)}
        if self.options:
            d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> HyperNetwork:
        if not isinstance(d, dict):
            raise GraphError(f"a hyper-network must be a JSON object, got {type(d).__name__}")
        extra = set(d) - {"name", "kind", "outputs", "options"}
        if extra or "name" not in d or not isinstance(d.get("outputs"), list):
            raise GraphError(f"hyper-network {d.get('name')!r}: expected fields name, kind, outputs (a list), "
                             f"options; got {sorted(d)}")
        return cls(d["name"], tuple(d["outputs"]), d.get("kind", "qpa"), d.get("options", {}))
