"""The figures of docs/qpu.md: quantum parts on a calibrated fake device, raw and mitigated, and the
accuracy a fine-tuned MiniLM keeps (collected from `tnpeft hardware-eval` reports).

    .venv/bin/python benchmarks/bench_qpu.py parts                 # frames and QPA's circuit on fake_torino
    .venv/bin/python benchmarks/bench_qpu.py collect R1.json R2.json …   # hardware-eval reports → docs/qpu_results.json
    .venv/bin/python benchmarks/bench_qpu.py adapter-off DIR1 DIR2 …       # the same models with the adapter off

`parts` estimates one 384×8 Quantum-PEFT frame (`pow2`: its 512-row circuit) and one QPA generator
(7 qubits, 8 blocks) of MiniLM's shapes, with seeded random parameters, on `fake_torino`: the
relative error of the frame / of the generated weights with exact distributions and with 4,096
shots, for no mitigation, read-out, read-out + ZNE, against the ideal device; and the cost.

`adapter-off` evaluates each trained MiniLM + tweets adapter folder on the 500 held-out tweets
`hardware-eval --test-size 500` uses, with the adapter and with it switched off (the trained head
alone): how much of the accuracy the adapter — the part a device changes — carries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

import tnpeft
from tnpeft.adapters import qpa, quantum_peft
from tnpeft.quantum import Device
from tnpeft.quantum.hardware import estimate_quantum_parts

OUT = Path(__file__).resolve().parents[1] / "docs" / "qpu_results.json"


def parts(shots: int = 4096, seed: int = 0) -> dict:
    modules = {
        "quantum_peft pow2 384x384 rank 8 (frames U, V: 512-row circuits)":
            tnpeft.GraphModule(quantum_peft(384, 384, rank=8, pow2=True), rng=torch.Generator().manual_seed(seed)),
        "qpa 384x384 r 4 (generator: 7 qubits, 8 blocks)":
            tnpeft.GraphModule(qpa(384, 384, r=4), rng=torch.Generator().manual_seed(seed)),
    }
    for gm in modules.values():
        with torch.no_grad():
            for name, p in gm.named_parameters():
                if name.startswith("L."):
                    p.normal_(generator=torch.Generator().manual_seed(seed + 1))
    rows = []
    for label, gm in modules.items():
        for backend, mitigation in (("ideal", None), ("fake_torino", None), ("fake_torino", "readout"),
                                    ("fake_torino", "readout+zne")):
            dev = Device(backend, shots=None, mitigation=mitigation, seed=seed, remember=True)
            for s in (None, shots):
                dev.configure(shots=s)
                t0 = time.perf_counter()
                before = dev.stats.to_dict()
                est = estimate_quantum_parts(gm, dev)
                rep = est.report()[0]
                after = dev.stats.to_dict()
                rows.append({"module": label, "device": backend, "mitigation": dev.mitigation.label, "shots": s,
                             "part_errors": rep["parts"], "delta_error": rep["delta_error"],
                             "circuits": after["circuits"] - before["circuits"],
                             "qpu_seconds": round(after["qpu_seconds"] - before["qpu_seconds"], 2),
                             "wall_seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(rows[-1]), flush=True)
    return {"parts": rows}


def adapter_off(dirs: list[str], test_size: int = 500, seed: int = 0) -> dict:
    from tnpeft.nn import disable_adapters, load_adapter
    from tnpeft.train.datasets import load_classification, load_model
    from tnpeft.train.evaluation import evaluate

    rows = []
    for d in dirs:
        loaded = load_model("minilm", "classification", num_labels=3, seed=seed)
        _, test = load_classification("tweets", test_size=test_size, seed=seed)
        model = load_adapter(loaded.model, d)
        model.eval()
        on = evaluate(model, loaded.tokenizer, test, "classification", 128, 48, progress=False)
        with disable_adapters(model):
            off = evaluate(model, loaded.tokenizer, test, "classification", 128, 48, progress=False)
        rows.append({"adapter_dir": d, "test_size": len(test), "with_adapter": on, "adapter_off": off})
        print(json.dumps(rows[-1]), flush=True)
    return {"adapter_off": rows}


def collect(paths: list[str]) -> dict:
    runs = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        keep = {k: r[k] for k in ("adapter_dir", "model", "data", "test_size", "metric", "frames", "exact", "device",
                                  "sweep", "wall_seconds") if k in r}
        keep["device"] = {k: v for k, v in r["device"].items() if k != "modules"}
        runs.append(keep)
    return {"hardware_eval": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("parts")
    p.add_argument("--shots", type=int, default=4096)
    c = sub.add_parser("collect")
    c.add_argument("reports", nargs="+")
    o = sub.add_parser("adapter-off")
    o.add_argument("dirs", nargs="+")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.what == "parts":
        result = parts(args.shots)
    elif args.what == "collect":
        result = collect(args.reports)
    else:
        result = adapter_off(args.dirs)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.update(result)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
