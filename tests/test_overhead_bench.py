"""benchmarks/overhead.py, the suite benchmarks/gpu.sh runs on a GPU: its pieces run and measure
what they say (a CPU run at toy sizes; the figures themselves are the benchmark's business)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def overhead():
    sys.path.insert(0, str(ROOT / "benchmarks"))          # overhead.py imports bench_lora beside it
    try:
        spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.parametrize("n", [16, 24, 64])
def test_square_frames_times_the_same_rotation_both_ways(overhead, n):
    """The layer-by-layer reference and tnpeft's frame are one matrix, and the frame applied to the
    activations without its matrix is ``x Uᵀ``: the two timed computations agree."""
    out = overhead.square_frames(n, tokens=5, repeats=1)
    assert out["max_abs_difference"] < 1e-5
    assert out["apply_max_abs_difference"] < 1e-5
    for name in ("matrix", "apply"):
        assert out[name]["reference_ms"] > 0 and out[name]["tnpeft_ms"] > 0


def test_the_suite_runs_every_adapter_and_counts_its_parameters(overhead, tmp_path, capsys):
    out = tmp_path / "o.json"
    assert overhead.main(["--models", "gpt2", "--layers", "1", "--width", "96", "--steps", "2", "--warmup", "1",
                          "--seq", "16", "--batch", "2", "--no-memory", "--no-frames", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["gpt2"]
    printed = capsys.readouterr().out
    names = [n for n in overhead.adapter_names("gpt2") if n != "base"]
    assert set(res["overhead_ms"]) == set(names)
    for n in names:
        assert math.isfinite(res["step_ms"][n]) and res["step_ms"][n] > 0
        assert f"\n    {n} " in printed                    # a row of the printed table
    assert res["ratio"]["peft_lora"] == 1.0
    # tnpeft's LoRA r=8 and peft's on the same layers train the same number of parameters
    # r·(in + out) on c_attn (96→288), the attention's c_proj (96→96), c_fc (96→384), the MLP's c_proj (384→96)
    assert res["trainable"]["lora"] == res["trainable"]["peft_lora"] == 8 * ((96 + 288) + (96 + 96) + (96 + 384) + (384 + 96))
