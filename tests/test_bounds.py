"""No input under 10 MB makes a load use more than 1 GB or 10 s.

Hostile inputs — links to ``/dev/zero`` and ``/dev/urandom``, FIFOs, JSON nested 10⁵ deep, a QPA
hyper-network with hidden widths [16384, 16384], a QNN on an index of size 3·10⁷, a 10⁵-node graph,
sizes up to 2⁴¹, a safetensors header that claims more than the file holds — are loaded in a child
process whose address space is capped at 1 GiB above what it uses after start-up
(``resource.setrlimit(RLIMIT_AS)``): each must end in a tnpeft error within 10 s, never in a
``MemoryError``, a hang or a raw traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import save

import tnpeft
from tnpeft.fileio import sha256

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /dev/zero are Linux's")

CHILD = textwrap.dedent(r"""
    import json, os, resource, sys, time
    sys.path.insert(0, sys.argv[2])
    import torch
    torch.set_num_threads(1)
    from conftest import tiny_gpt2
    import tnpeft
    from tnpeft.graph import Graph
    from tnpeft.train.checkpoint import Checkpoint
    from tnpeft.train.datasets import read_data_text
    from pathlib import Path

    cases = json.loads(open(sys.argv[1]).read())
    model = tiny_gpt2()
    tnpeft.Graph.from_json(tnpeft.adapters.lora(4, 4, r=1).to_json())      # warm the imports up
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = vm + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def run(kind, path):
        if kind == "adapter":
            tnpeft.load_adapter(model, path)
        elif kind == "graph":
            tnpeft.load_graph(path)
        elif kind == "graph_json":
            Graph.from_json(open(path).read())
        elif kind == "peft":
            tnpeft.import_peft(model, path)
        elif kind == "data":
            read_data_text(Path(path))
        elif kind == "checkpoint":
            Checkpoint(Path(path)).read_state(Path(path) / "checkpoint", 10)
        elif kind == "source":
            tnpeft.graph_modules(path)

    for name, kind, path in cases:
        t0 = time.perf_counter()
        try:
            run(kind, path)
            outcome = "loaded"
        except tnpeft.TNPeftError as e:
            outcome = type(e).__name__ + ": " + str(e)[:160]
        except BaseException as e:   # MemoryError, RecursionError, ...: a failure of the bound
            outcome = "RAW " + type(e).__name__ + ": " + str(e)[:160]
        print(json.dumps({"case": name, "seconds": time.perf_counter() - t0, "outcome": outcome}), flush=True)
""")


def _adapter(tmp: Path, name: str, cfg: dict | None = None, tensors: dict | None = None) -> Path:
    d = tmp / name
    model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"], r=2))
    tnpeft.save_adapter(model, d)
    base = json.loads((d / "adapter_config.json").read_text())
    if cfg is not None or tensors is not None:
        blob = save(tensors) if tensors is not None else (d / "adapter_model.safetensors").read_bytes()
        base = {**base, **(cfg or {}), "weights_sha256": sha256(blob)}
        (d / "adapter_config.json").write_text(json.dumps(base))
        (d / "adapter_model.safetensors").write_bytes(blob)
    return d


def _module(graph: dict) -> dict:
    return {"modules": {"transformer.h.0.attn.c_attn": graph}}


def _graph(nodes: list, **extra) -> dict:
    return {"format": "tnpeft.graph", "version": 1, "nodes": nodes, **extra}


def _hostile_inputs(tmp: Path) -> list[tuple[str, str, str]]:
    cases: list[tuple[str, str, str]] = []
    # links to devices, FIFOs
    for dev in ("/dev/zero", "/dev/urandom"):
        for which in ("adapter_model.safetensors", "adapter_config.json"):
            d = _adapter(tmp, f"link-{Path(dev).name}-{which.split('.')[0]}")
            (d / which).unlink()
            os.symlink(dev, d / which)
            cases.append((f"{which} -> {dev}", "adapter", str(d)))
    for which in ("adapter_model.safetensors", "adapter_config.json"):
        d = _adapter(tmp, f"fifo-{which.split('.')[0]}")
        (d / which).unlink()
        os.mkfifo(d / which)
        cases.append((f"{which} is a FIFO", "adapter", str(d)))
    g = tmp / "graph-zero"
    tnpeft.save_graph(tnpeft.GraphModule(tnpeft.adapters.lora(4, 4, r=1)), g)
    (g / "graph.safetensors").unlink()
    os.symlink("/dev/zero", g / "graph.safetensors")
    cases.append(("graph.safetensors -> /dev/zero", "graph", str(g)))
    peft = tmp / "peft-zero"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    os.symlink("/dev/zero", peft / "adapter_model.safetensors")
    cases.append(("peft weights -> /dev/zero", "peft", str(peft)))
    data = tmp / "zero.txt"
    os.symlink("/dev/zero", data)
    cases.append(("data file -> /dev/zero", "data", str(data)))
    ck = tmp / "ck" / "checkpoint"
    ck.mkdir(parents=True)
    os.symlink("/dev/urandom", ck / "trainer_state.json")
    cases.append(("trainer_state.json -> /dev/urandom", "checkpoint", str(tmp / "ck")))
    # deep JSON
    deep = "[" * 100_000 + "]" * 100_000
    d = _adapter(tmp, "deep")
    (d / "adapter_config.json").write_text(deep)
    cases.append(("config nested 1e5 deep", "adapter", str(d)))
    (tmp / "deep.json").write_text('{"format": "tnpeft.graph", "version": 1, "meta": ' + deep + ', "nodes": []}')
    cases.append(("graph JSON nested 1e5 deep", "graph_json", str(tmp / "deep.json")))
    cases.append(("graph file nested 1e5 deep", "source", str(tmp / "deep.json")))
    peft_deep = tmp / "peft-deep"
    peft_deep.mkdir()
    (peft_deep / "adapter_config.json").write_text(deep)
    (peft_deep / "adapter_model.safetensors").write_bytes(save({"x": torch.zeros(1)}))
    cases.append(("peft config nested 1e5 deep", "peft", str(peft_deep)))
    # a QPA hyper-network with huge hidden layers, a QNN on a huge index
    qpa = tnpeft.adapters.qpa(32, 96, r=2, hidden=[8]).to_dict()
    qpa["hypernetworks"][0]["options"]["hidden"] = [16384, 16384]
    cases.append(("QPA hidden [16384, 16384]", "adapter", str(_adapter(tmp, "qpa", _module(qpa)))))
    n = 30_000_000
    qnn = _graph([{"kind": "dense", "name": "A", "inds": ["h", "in"], "sizes": [n, 32]},
                  {"kind": "nonlinear", "name": "Q", "inds": ["h", "g"], "sizes": [n, n], "fn": "qnn", "n_inputs": 1,
                   "options": {"qubits": 20}},
                  {"kind": "dense", "name": "B", "inds": ["out", "g"], "sizes": [96, n]}])
    cases.append(("QNN on an index of size 3e7", "adapter", str(_adapter(tmp, "qnn", _module(qnn)))))
    # a 1e5-node graph
    nodes = [{"kind": "dense", "name": "A", "inds": ["r", "in"], "sizes": [1, 32]}]
    nodes += [{"kind": "diagonal", "name": f"D{i}", "inds": ["r"], "sizes": [1]} for i in range(100_000 - 2)]
    nodes += [{"kind": "dense", "name": "B", "inds": ["out", "r"], "sizes": [96, 1]}]
    cases.append(("a 1e5-node graph", "adapter", str(_adapter(tmp, "many", _module(_graph(nodes))))))
    (tmp / "many.json").write_text(json.dumps(_graph(nodes)))
    cases.append(("a 1e5-node graph file", "graph_json", str(tmp / "many.json")))
    # huge sizes
    for exp in (31, 34, 40, 41):
        big = _graph([{"kind": "dense", "name": "A", "inds": ["r", "in"], "sizes": [2 ** exp, 32]},
                      {"kind": "dense", "name": "B", "inds": ["out", "r"], "sizes": [96, 2 ** exp]}])
        cases.append((f"rank 2^{exp}", "adapter", str(_adapter(tmp, f"big{exp}", _module(big)))))
    frame = _graph([{"kind": "unitary", "name": "U", "inds": ["n", "k"], "sizes": [2 ** 40, 1], "param": "pauli"},
                    {"kind": "dense", "name": "A", "inds": ["k", "in"], "sizes": [1, 32]},
                    {"kind": "dense", "name": "B", "inds": ["out", "n"], "sizes": [96, 2 ** 40]}])
    cases.append(("a 2^40 x 1 frame", "adapter", str(_adapter(tmp, "frame", _module(frame)))))
    # a safetensors header that claims far more than the file holds
    d = _adapter(tmp, "header")
    header = json.dumps({"transformer.h.0.attn.c_attn.A.weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20],
                                                                  "data_offsets": [0, 1 << 42]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + b"\0" * 64
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["weights_sha256"] = sha256(blob)
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    (d / "adapter_model.safetensors").write_bytes(blob)
    cases.append(("a header claiming 2^42 bytes", "adapter", str(d)))
    return cases


def _size(path: str) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(_size(str(q)) for q in p.iterdir())
    return p.stat().st_size if p.is_file() and not p.is_symlink() else 0


def test_hostile_inputs_load_in_bounded_memory_and_time(tmp_path):
    cases = _hostile_inputs(tmp_path)
    for name, _, path in cases:
        assert _size(path) < 10 << 20, name
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    tests = str(Path(__file__).parent)
    p = subprocess.run([sys.executable, str(child), str(spec), tests], capture_output=True, text=True,
                       env=env, timeout=60 + 12 * len(cases))
    assert p.returncode == 0, p.stderr[-3000:]
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert [r["case"] for r in results] == [c[0] for c in cases], p.stderr[-3000:]
    report = "\n".join(f"{r['seconds']:6.2f} s  {r['case']}: {r['outcome']}" for r in results)
    print(report)
    for r in results:
        assert not r["outcome"].startswith("RAW"), report
        assert r["outcome"] != "loaded", report               # every one of them is refused
        assert r["seconds"] < 10, report


def test_the_memory_cap_of_the_child_really_bites(tmp_path):
    # the same harness refuses an allocation of 2 GiB: the cap is real
    code = textwrap.dedent("""
        import resource, torch
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        cap = vm + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            torch.ones(1 << 29)        # 2 GiB of float32
        except RuntimeError:
            print("refused")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "refused" in p.stdout, p.stderr[-2000:]
