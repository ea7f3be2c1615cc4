"""Cross-layer batching: members of equal shape in one scope are computed in one pass.

A member (a frame, a hyper-network) provides ``batch_key()`` (what must match to batch),
``scope_device()`` (its dtype and device), ``scope_version()`` (changes when its parameters do),
``compute_alone()`` and ``compute_group(members)`` (a list of results, one per member)."""

from __future__ import annotations

import weakref
from typing import Any, Protocol

import torch


class ScopeMember(Protocol):
    """What a scope computes together: a frame (:class:`~tnpeft.params.unitary.FrameModule`) or a
    hyper-network."""

    def batch_key(self) -> tuple[object, ...]: ...

    def scope_device(self) -> tuple[torch.dtype, torch.device]: ...

    def scope_version(self) -> object: ...

    def compute_alone(self) -> torch.Tensor: ...

    @staticmethod
    def compute_group(members: list[Any]) -> list[torch.Tensor]: ...


class FrameScope:
    """Frames of equal shape and options inside one scope are computed in one batched pass.

    ``inject`` gives every adapted model one scope, so the ``U`` frames of all layers of a width,
    say, are materialized together: one set of state-sized operations per distinct shape and step,
    instead of one per layer. A frame's result is reused by the other members of its group until
    the member that asks for it has already had it (a new forward pass), a parameter changed, or
    the grad mode changed; then the whole group is recomputed. Copies of a model get a fresh scope.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[object, ...], _FrameGroup] = {}
        self._members: weakref.WeakSet[ScopeMember] = weakref.WeakSet()

    def __deepcopy__(self, memo: dict[int, Any]) -> FrameScope:
        return FrameScope()  # members of a copy register again on their first forward

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        FrameScope.__init__(self)

    def register(self, member: ScopeMember) -> None:
        """Make ``member`` part of this scope (done when the module is built)."""
        self._members.add(member)

    def unregister(self, member: ScopeMember) -> None:
        """Take ``member`` out of this scope and of any group it was batched with."""
        self._members.discard(member)
        self._groups.clear()

    def frame(self, member: ScopeMember) -> torch.Tensor:
        """``member``'s result (a frame's ``(*batch, N, K)``), computed with its group if needed."""
        if member not in self._members:
            # a module this scope has not seen (e.g. in a deep copy, whose scope starts empty): compute
            # it alone this time and batch it with its peers from the next forward on, instead of
            # recomputing a growing group once per newcomer
            self._members.add(member)
            self._groups.clear()
            return member.compute_alone()
        key = (member.batch_key(), *member.scope_device())
        group = self._groups.get(key)
        if group is None:
            # every registered module of the same shape, options, dtype and device joins at once
            group = self._groups[key] = _FrameGroup()
            for m in self._members:
                if (m.batch_key(), *m.scope_device()) == key:
                    group.members.add(m)
        return group.get(member)


class _FrameGroup:
    def __init__(self) -> None:
        self.members: weakref.WeakSet[ScopeMember] = weakref.WeakSet()
        self.cache: weakref.WeakKeyDictionary[ScopeMember, tuple[torch.Tensor, object]] = weakref.WeakKeyDictionary()
        self.consumed: weakref.WeakSet[ScopeMember] = weakref.WeakSet()
        self.grad = False

    def get(self, m: ScopeMember) -> torch.Tensor:
        if m not in self.members:
            self.members.add(m)
            self.cache = weakref.WeakKeyDictionary()
        entry = self.cache.get(m)
        if (entry is None or m in self.consumed or entry[1] != m.scope_version()
                or self.grad != torch.is_grad_enabled()):
            self._recompute()
            entry = self.cache[m]
        self.consumed.add(m)
        return entry[0]

    def _recompute(self) -> None:
        members = list(self.members)
        results = type(members[0]).compute_group(members)
        self.cache = weakref.WeakKeyDictionary()
        for m, r in zip(members, results):
            self.cache[m] = (r, m.scope_version())
        self.consumed = weakref.WeakSet()
        self.grad = torch.is_grad_enabled()
