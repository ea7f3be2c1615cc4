"""The ``tnpeft`` command's arguments: one sub-parser per verb."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tnpeft.cli.commands import (
    cmd_adapters,
    cmd_circuits,
    cmd_compare,
    cmd_convert,
    cmd_count,
    cmd_demo,
    cmd_devices,
    cmd_draw,
    cmd_export_circuits,
    cmd_hardware_eval,
    cmd_train,
    cmd_verify,
)


def _adapter_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments that name an adapter: see tnpeft.adapters.specs."""
    p.add_argument("adapter", nargs="?", help="a method name (lora, quantum_peft, …), a builder of your own as "
                                              "module.path:function, or a graph .json file (or use --adapter-dir)")
    p.add_argument("--in-features", type=int, help="the layer's input size (for a method or builder)")
    p.add_argument("--out-features", type=int, help="the layer's output size (for a method or builder)")
    p.add_argument("hparams", nargs="*", help="hyper-parameters as name=value (values parsed as JSON)")
    p.add_argument("--adapter-dir", metavar="DIR", help="a folder written by tnpeft.save_adapter (instead of ADAPTER)")
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE first (e.g. one registering a unitary parametrization); repeatable")


def _add_adapters(sub: Any) -> None:
    a = sub.add_parser("adapters", help="list every registered adapter with its hyper-parameters and defaults")
    a.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE first (one that registers methods of its own); repeatable")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=cmd_adapters)


def _add_convert(sub: Any) -> None:
    cv = sub.add_parser("convert", help="convert a saved adapter into a peft LoRA checkpoint (any linear adapter)")
    cv.add_argument("--adapter-dir", metavar="DIR", required=True, help="a folder written by tnpeft.save_adapter")
    cv.add_argument("--model", default="minilm", help="the model it was trained on: minilm, smollm2 or a folder")
    cv.add_argument("--task", choices=["classification", "causal_lm"],
                    help="default: classification if the adapter saved a head, else causal_lm")
    cv.add_argument("--to", choices=["peft-lora"], default="peft-lora", help="the format (peft-lora)")
    cv.add_argument("--max-rank", type=int, help="compress updates of a larger rank by a truncated SVD (the error is "
                                                  "reported)")
    cv.add_argument("-o", "--output", required=True, help="folder to write adapter_config.json and "
                                                          "adapter_model.safetensors to")
    cv.add_argument("--overwrite", action="store_true", help="replace a checkpoint of another kind in OUT (a tnpeft "
                                                            "adapter, a model); never the adapter folder itself")
    cv.add_argument("--import", dest="imports", action="append", metavar="MODULE", help="import MODULE first")
    cv.add_argument("--json", action="store_true", help="print the export report as JSON")
    cv.set_defaults(func=cmd_convert)


def _add_count(sub: Any) -> None:
    c = sub.add_parser("count", help="count an adapter's trainable parameters for one layer (or a saved adapter's)")
    _adapter_arguments(c)
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_count)


def _add_draw_and_verify(sub: Any) -> None:
    for verb, helptext in (("draw", "draw an adapter's tensor diagram (SVG, PNG or PDF)"),
                           ("verify", "check an adapter: its values (finite, orthogonal, counts, forward, merge) and "
                                      "its topology (random values, gradients)")):
        v = sub.add_parser(verb, help=helptext)
        _adapter_arguments(v)
        if verb == "draw":
            v.add_argument("-o", "--output", required=True, help="file to write: .svg, .png or .pdf")
            v.add_argument("--circuit", metavar="NODE", help="draw this node as its circuit (a pauli or givens unitary node, a QNN node or a hyper-network)")
            v.add_argument("--module", metavar="PATH", help="the adapted module of a saved adapter to draw "
                                                            "(default: the first)")
            v.set_defaults(func=cmd_draw)
        else:
            v.add_argument("--tol", type=float, default=1e-5, help="tolerance of orthogonality, forward and merge "
                                                                    "(relative errors; default 1e-5)")
            v.add_argument("--json", action="store_true", help="print JSON")
            v.set_defaults(func=cmd_verify)


def _add_demo(sub: Any) -> None:
    d = sub.add_parser("demo", help="fine-tune MiniLM on tweet sentiment with LoRA, AdaLoRA, Quantum-PEFT, QWTHN "
                                    "and QPA (offline) and compare them")
    d.add_argument("--out", default="runs/demo", help="where adapters, curves, diagrams and metrics are written")
    d.add_argument("--train-size", type=int, default=2000)
    d.add_argument("--test-size", type=int, default=1000)
    d.add_argument("--full", action="store_true", help="the full set: all 36,158 training tweets, 2,000 held out")
    d.add_argument("--adapters", help="comma-separated subset, e.g. lora,qpa (default: all five)")
    d.add_argument("--epochs", type=int, default=1)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    d.set_defaults(func=cmd_demo)


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="fine-tune a model on a dataset with any adapter (resumable)")
    t.add_argument("--model", default="minilm", help="minilm, smollm2, or a local model folder (default minilm)")
    t.add_argument("--data", default="tweets", help="tweets, hamlet, or a .csv / .jsonl / .txt file (default tweets)")
    t.add_argument("--adapter", help="a method name, a builder of your own as module.path:function, or a graph .json "
                                     "file (default lora)")
    t.add_argument("--adapter-dir", metavar="DIR", help="train on from a saved adapter (its graphs and values)")
    t.add_argument("--import", dest="imports", action="append", metavar="MODULE", help="import MODULE first")
    t.add_argument("hparams", nargs="*", help="adapter hyper-parameters as name=value, e.g. r=8")
    t.add_argument("--out", default="runs/train", help="output folder: checkpoint/, adapter/, metrics.json, curves.png")
    t.add_argument("--task", choices=["classification", "causal_lm"], help="default: inferred from --data")
    t.add_argument("--target-modules", help="comma-separated names or a regex (default all-linear)")
    t.add_argument("--exclude-modules", help="comma-separated names to leave alone")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--warmup-steps", type=int, default=20, help="linear warm-up steps (at most --warmup-fraction "
                                                                "of the run)")
    t.add_argument("--warmup-fraction", type=float, default=0.1, help="the largest part of the run the warm-up may "
                                                                      "take (default 0.1)")
    t.add_argument("--max-length", type=int, default=48, help="tokens per text (classification) or block (LM)")
    t.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (CUDA when present)")
    t.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: at the end)")
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--train-size", type=int, help="use only the first N training examples / blocks")
    t.add_argument("--test-size", help="held-out rows (an integer) or fraction (below 1); default 2,000 tweets, or "
                                       "0.2 of a data file's rows (at most 2,000)")
    t.add_argument("--text-column", default="text")
    t.add_argument("--label-column", default="label")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT holds a checkpoint")
    t.add_argument("--quantum-backend", metavar="DEVICE", help="run the adapter's quantum nodes on DEVICE during "
                   "training (ideal, generic, fake_torino, …; see tnpeft devices): forward from shots, backward by the "
                   "parameter-shift rule. Default: the exact simulator")
    t.add_argument("--shots", type=int, default=1024, help="shots per circuit with --quantum-backend (0: exact "
                                                           "distributions; default 1024)")
    t.add_argument("--mitigation", help="with --quantum-backend: readout, zne, readout+zne, mthree, … (default none)")
    t.add_argument("--dry-run", action="store_true", help="print the device budget per step (circuits, shots, "
                                                          "estimated QPU seconds) and stop")
    t.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    t.add_argument("--json", action="store_true", help="print the metrics as JSON (no progress bars)")
    t.set_defaults(func=cmd_train)


def _add_compare(sub: Any) -> None:
    k = sub.add_parser("compare", help="compare adapters fairly: a learning-rate grid × seeds under one budget, the "
                                       "rate chosen on validation, figures on a separate test split (resumable)")
    k.add_argument("--adapters", nargs="+", required=True, metavar="SPEC",
                   help="NAME[:key=value,...]: a method (lora:r=8), module.path:function[:...], a graph .json, or "
                        "peft's own tuner as a reference row: peft_lora[:r=8,alpha=16], peft_loha, peft_lokr, "
                        "peft_vera; the spec text labels the row")
    k.add_argument("--lrs", nargs="+", type=float, metavar="LR", help="one learning-rate grid for every adapter "
                   "(default: per method, its demo rate ÷3, ×1, ×3)")
    k.add_argument("--lr-grid", nargs="+", metavar="ADAPTER=LR,LR", help="a grid for one adapter (its spec text "
                   "or method name), e.g. quantum_peft=1e-2,2e-2,6e-2")
    k.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    k.add_argument("--steps", type=int, help="training steps of every cell (or --epochs)")
    k.add_argument("--epochs", type=int, help="epochs of every cell (or --steps)")
    k.add_argument("--protocol", default="grid", help="grid (every rate × every seed) or tune-then-seeds (the "
                   "grid on the first seed, the other seeds at the selected rate)")
    k.add_argument("--model", default="minilm", help="minilm, smollm2, or a local model folder")
    k.add_argument("--data", default="tweets", help="tweets, hamlet, or a .csv / .jsonl / .txt file")
    k.add_argument("--task", choices=["classification", "causal_lm"], help="default: inferred from --data")
    k.add_argument("--train-size", type=int, help="training examples / blocks (default: all the rest)")
    k.add_argument("--val-size", type=int, default=2000, help="validation examples / blocks (selects the rate)")
    k.add_argument("--test-size", type=int, default=2000, help="test examples / blocks (reported, never selected on)")
    k.add_argument("--batch-size", type=int, default=32)
    k.add_argument("--max-length", type=int, default=48, help="tokens per text (classification) or block (LM)")
    k.add_argument("--warmup-steps", type=int, default=20, help="linear warm-up steps of every cell (at most "
                                                                "--warmup-fraction of the cell's run)")
    k.add_argument("--warmup-fraction", type=float, default=0.1, help="the largest part of a run the warm-up may "
                                                                      "take (default 0.1)")
    k.add_argument("--eval-every", type=int, default=0, help="validate every N steps: a validation curve per cell "
                                                             "(default: only at the end)")
    k.add_argument("--patience", type=int, default=0, help="with --eval-every: stop a cell after N evaluations "
                                                           "without improvement and keep its best values")
    k.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (CUDA when present)")
    k.add_argument("--target-modules", help="comma-separated names or a regex (default all-linear)")
    k.add_argument("--exclude-modules", help="comma-separated names to leave alone")
    k.add_argument("--text-column", default="text")
    k.add_argument("--label-column", default="label")
    k.add_argument("--import", dest="imports", action="append", metavar="MODULE", help="import MODULE first")
    k.add_argument("--out", default="runs/compare", help="output folder: results.json, pareto.png, curves.png, cells/")
    k.add_argument("--json", action="store_true", help="print the results as JSON (no progress bars)")
    k.set_defaults(func=cmd_compare)


def _add_circuit_verbs(sub: Any) -> None:
    for verb, helptext in (("export-circuits", "write an adapter's circuits as OpenQASM 3 files with an index.json"),
                           ("circuits", "report an adapter's circuit resources: qubits, gates, depth, raw, decomposed "
                                        "and on a backend")):
        x = sub.add_parser(verb, help=helptext)
        _adapter_arguments(x)
        x.add_argument("--max-synthesis-qubits", type=int, default=8,
                       help="largest register a frame without a circuit of its own (cayley, exp, taylor, "
                            "householder) is synthesized on (default 8)")
        x.add_argument("--json", action="store_true", help="print JSON")
        if verb == "export-circuits":
            x.add_argument("-o", "--output", required=True, help="folder to write the .qasm files and index.json to")
            x.set_defaults(func=cmd_export_circuits)
        else:
            x.add_argument("--backend", default="generic", metavar="DEVICE",
                           help="transpile to this device: generic (heavy-hex, default), a fake IBM device such as "
                                "fake_torino or fake_sherbrooke (tnpeft devices lists them), or none")
            x.add_argument("--optimization-level", type=int, choices=[0, 1, 2, 3], default=1)
            x.set_defaults(func=cmd_circuits)


def _add_devices(sub: Any) -> None:
    dv = sub.add_parser("devices", help="list the quantum devices circuits can run on (ideal, generic, calibrated fake "
                                        "IBM devices) with qubits, basis gates and median errors")
    dv.add_argument("--all", action="store_true", help="also list unusable devices (e.g. all couplers at error 1)")
    dv.add_argument("--json", action="store_true", help="print JSON")
    dv.set_defaults(func=cmd_devices)


def _add_hardware_eval(sub: Any) -> None:
    h = sub.add_parser("hardware-eval", help="the task metric of a saved adapter with its quantum parts run on a "
                                             "device (shots, noise, mitigation), beside the exact one, with the cost")
    h.add_argument("--adapter-dir", metavar="DIR", required=True, help="a folder written by tnpeft train / save_adapter")
    h.add_argument("--model", default="minilm", help="the model it was trained on: minilm, smollm2 or a folder")
    h.add_argument("--data", default="tweets", help="tweets, hamlet, or a .csv / .jsonl / .txt file")
    h.add_argument("--task", choices=["classification", "causal_lm"], help="default: classification if the adapter "
                                                                         "saved a head, else inferred from --data")
    h.add_argument("--test-size", type=int, default=500, help="held-out examples (the first N of tnpeft train's "
                                                               "held-out split; default 500)")
    h.add_argument("--backend", default="fake_torino", metavar="DEVICE", help="ideal, generic, fake_torino (default), …")
    h.add_argument("--shots", type=int, default=4096, help="shots per circuit (0: exact distributions)")
    h.add_argument("--mitigation", help="readout, zne, readout+zne, mthree, readout-reported, zne-richardson "
                                        "(default none)")
    h.add_argument("--frames", choices=["hadamard", "interference"], default="hadamard",
                   help="how frames get their signs: shallow circuits with relative phases (default) or "
                        "interference circuits with a controlled U")
    h.add_argument("--sweep", metavar="S,S,…", help="also the metric against these shot counts (and exact "
                                                    "distributions) for the ideal device, the device, and the device "
                                                    "with --sweep-mitigation")
    h.add_argument("--sweep-mitigation", default="readout", help="the mitigated curve of --sweep (default readout)")
    h.add_argument("--plot", metavar="FILE.png", help="draw the sweep")
    h.add_argument("-o", "--output", metavar="FILE.json", help="write the report as JSON")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--batch-size", type=int, default=128)
    h.add_argument("--max-length", type=int, default=48)
    h.add_argument("--text-column", default="text")
    h.add_argument("--label-column", default="label")
    h.add_argument("--import", dest="imports", action="append", metavar="MODULE", help="import MODULE first")
    h.add_argument("--json", action="store_true", help="print JSON")
    h.set_defaults(func=cmd_hardware_eval)


def build_parser() -> argparse.ArgumentParser:
    __version__ = sys.modules["tnpeft"].__version__     # the package is imported before any of its modules
    p = argparse.ArgumentParser(prog="tnpeft", description="Tensor-network parameter-efficient fine-tuning.")
    p.add_argument("--version", action="version", version=f"tnpeft {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_adapters, _add_convert, _add_count, _add_draw_and_verify, _add_demo, _add_train, _add_compare,
                _add_circuit_verbs, _add_devices, _add_hardware_eval):
        add(sub)
    return p
