"""Process-wide caches stay bounded: 10,000 distinct contraction networks built in one process leave
the plan cache at its bound and the resident memory flat; frame programs and circuit tables evict
past their bound and keep computing the same values; ``tnpeft.clear_caches()`` empties them all."""

from __future__ import annotations

import gc

import pytest
import torch

import tnpeft
from tnpeft.caches import SIZES, LRUCache, cache_info, set_cache_size
from tnpeft.contract import plan_for
from tnpeft.errors import ConfigError
from tnpeft.params.unitary import PauliFrame


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.fixture
def restore_sizes():
    saved = dict(SIZES)
    yield
    for group, size in saved.items():
        set_cache_size(group, size)


def lora_network(n: int):
    return [("b", "i"), ("r", "i"), ("o", "r")], ("b", "o"), {"b": 8, "i": n, "r": 4, "o": n + 1}


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc to read the RSS")
def test_ten_thousand_distinct_networks_keep_the_plan_cache_and_memory_bounded():
    tnpeft.clear_caches()
    bound = SIZES["plans"]
    for n in range(1, bound + 1):                      # fill the cache to its bound first
        plan_for(*lora_network(n))
    gc.collect()
    before = rss_mb()
    for n in range(bound + 1, bound + 10_001):         # 10,000 shapes the cache has never seen
        plan_for(*lora_network(n))
        assert len(tnpeft.caches._REGISTRY["plans"]) <= bound
    gc.collect()
    grown = rss_mb() - before
    assert cache_info()["plans"] == {"size": bound, "maxsize": bound}
    # unbounded, these plans hold ~80 MB; bounded, the process stays where it was
    assert grown < 20, f"resident memory grew by {grown:.1f} MB over 10,000 new plans"


def test_evicted_frame_programs_are_rebuilt_equal(restore_sizes):
    tnpeft.clear_caches()
    for group in ("circuits", "frame_programs", "tables"):
        set_cache_size(group, 8)
    torch.manual_seed(0)
    frames = {n: PauliFrame(n, 1) for n in range(2, 40)}
    with torch.no_grad():
        first = {n: f() for n, f in frames.items()}        # every width compiled once, most evicted since
        info = cache_info()
        assert all(v["size"] <= 8 for k, v in info.items() if k.split(":")[0] in ("circuits", "frame_programs"))
        again = {n: f() for n, f in frames.items()}        # recompiled after eviction: the same frames
    for n in frames:
        torch.testing.assert_close(again[n], first[n], rtol=0, atol=0)
        torch.testing.assert_close(first[n].T @ first[n], torch.eye(first[n].shape[1]), atol=1e-5, rtol=0)


def test_clear_caches_empties_every_cache_and_modules_keep_working():
    m = tnpeft.GraphModule(tnpeft.adapters.quantum_peft(12, 10, rank=2))
    x = torch.randn(3, 12)
    with torch.no_grad():
        y = m(x)
    assert any(v["size"] for v in cache_info().values())
    tnpeft.clear_caches()
    assert all(v["size"] == 0 for v in cache_info().values())
    with torch.no_grad():
        torch.testing.assert_close(m(x), y)


def test_lru_order_and_bad_sizes():
    c: LRUCache = LRUCache("t", 2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1                 # a is now the most recent
    c.put("c", 3)                          # evicts b, the least recently used
    assert "b" not in c and c.get("a") == 1 and c.get("c") == 3 and len(c) == 2
    assert c.get("missing", "x") == "x"
    with pytest.raises(ConfigError, match="positive integer"):
        set_cache_size("plans", 0)
    with pytest.raises(ConfigError, match="unknown cache group"):
        set_cache_size("nope", 4)
