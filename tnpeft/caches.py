"""Process-wide caches, each bounded, registered by name, and cleared together.

tnpeft keeps what is expensive to derive and cheap to keep: contraction plans, compiled circuits,
frame programs and the small index tables their kernels read. A long-lived process that builds
many shapes (a sweep, a server) must not grow without bound, so every such cache here is a
least-recently-used table with a documented size (:data:`SIZES`; :func:`set_cache_size` changes
it). :func:`clear_caches` empties all of them (``tnpeft.clear_caches()``);
:func:`cache_info` reports their sizes. Per-object caches (a module's kept plans, a frame
scope's values) live and die with their objects and are not listed here.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, overload

from tnpeft.errors import ConfigError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")
F = TypeVar("F", bound=Callable[..., Any])

#: the bound of each named cache (entries); read when the cache is created
SIZES: dict[str, int] = {
    "plans": 1024,             # contraction plans, by canonical network structure
    "circuits": 512,           # circuit descriptions (Pauli, QNN, QPA, frames of a width)
    "frame_programs": 512,     # frame circuits compiled to factors and flat programs
    "token_programs": 256,     # QNN circuits compiled to per-token runs
    "tables": 256,             # small index and sign tables (CZ signs, CX permutations, butterfly pairs)
}

_REGISTRY: dict[str, LRUCache[Any, Any]] = {}

_MISSING = object()


class LRUCache(Generic[K, V]):
    """A mapping that keeps at most ``maxsize`` entries, dropping the least recently used."""

    def __init__(self, name: str, maxsize: int):
        self.name = name
        self.maxsize = _check_size(name, maxsize)
        self._data: OrderedDict[K, V] = OrderedDict()

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """The value of ``key`` (now the most recently used), or ``default``."""
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key``, evicting the least recently used entries past the bound."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def _check_size(name: str, maxsize: object) -> int:
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
        raise ConfigError(f"cache {name!r}: size must be a positive integer, got {maxsize!r}", field=name)
    return maxsize


def _group(name: str) -> str:
    group = name.split(":")[0]
    if group not in SIZES:
        raise ConfigError(f"unknown cache group {group!r}; known: {sorted(SIZES)}", field="group")
    return group


def lru_table(name: str) -> LRUCache[Any, Any]:
    """A new bounded table registered under ``name`` (``"group:what"``; the bound is the group's in
    :data:`SIZES`)."""
    if name in _REGISTRY:
        raise ConfigError(f"cache {name!r} is registered twice", field="name")
    cache: LRUCache[Any, Any] = LRUCache(name, SIZES[_group(name)])
    _REGISTRY[name] = cache
    return cache


def memoized(name: str) -> Callable[[F], F]:
    """Memoize a function of hashable arguments in a bounded table registered as ``name``, so
    that :func:`clear_caches` empties it and :func:`cache_info` reports it."""

    def deco(fn: F) -> F:
        table = lru_table(name)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = (args, tuple(sorted(kwargs.items()))) if kwargs else args
            value = table.get(key, _MISSING)
            if value is _MISSING:
                value = table.put(key, fn(*args, **kwargs))
            return value

        wrapper.cache = table  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def clear_caches() -> None:
    """Empty every process-wide cache of tnpeft (plans, compiled circuits, frame programs, tables).
    Modules built before keep working: they rebuild what they need on their next use."""
    for cache in _REGISTRY.values():
        cache.clear()


def cache_info() -> dict[str, dict[str, int]]:
    """``{cache name: {"size": entries now, "maxsize": bound}}`` for every registered cache."""
    return {name: {"size": len(c), "maxsize": c.maxsize} for name, c in sorted(_REGISTRY.items())}


def set_cache_size(group: str, maxsize: int) -> None:
    """Change the bound of cache group ``group`` (``"plans"``, ``"circuits"``, …) for every cache of
    that group; entries past the new bound are dropped, least recently used first."""
    if group not in SIZES:
        raise ConfigError(f"unknown cache group {group!r}; known: {sorted(SIZES)}", field="group")
    SIZES[group] = _check_size(group, maxsize)
    for name, cache in _REGISTRY.items():
        if _group(name) == group:
            cache.maxsize = maxsize
            while len(cache._data) > maxsize:
                cache._data.popitem(last=False)
