"""The ``tnpeft`` command.

    tnpeft --version
    tnpeft adapters [--json]
    tnpeft count ADAPTER --in-features N --out-features M [name=value ...] [--json]
    tnpeft convert --adapter-dir DIR [--model minilm|smollm2|DIR] --to peft-lora -o OUT [--max-rank R]
    tnpeft draw ADAPTER --in-features N --out-features M [name=value ...] -o FILE.svg|.png
    tnpeft verify ADAPTER --in-features N --out-features M [name=value ...] [--json]
    tnpeft export-circuits ADAPTER --in-features N --out-features M [name=value ...] -o DIR
    tnpeft train [--model minilm|smollm2|DIR] [--data tweets|hamlet|FILE] [--adapter ADAPTER] [name=value ...]
                 [--out DIR] [--epochs E] [--max-steps N] ... [--json]
    tnpeft demo [--out DIR] [--full] [--json]
    tnpeft compare --adapters SPEC ... [--lrs LR ...] [--seeds S ...] (--steps N | --epochs E) [--protocol P] ...

ADAPTER is a registered method (``lora``), a builder of your own (``mypkg.topos:ttlora``, given
the layer sizes and name=value hyper-parameters) or a graph ``.json`` file; ``--adapter-dir DIR``
(a saved adapter) takes its place in every verb (see :mod:`tnpeft.adapters.specs`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from tnpeft.errors import ConfigError, TNPeftError


def _parse_hparams(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"hyper-parameter {item!r} must be written name=value (e.g. r=8)", field=item)
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _source(args: argparse.Namespace) -> tuple[str, Any]:
    """(label, source) of the adapter a verb names: see :mod:`tnpeft.adapters.specs`."""
    from tnpeft.adapters.specs import adapter_source

    return adapter_source(args.adapter, args.adapter_dir, args.in_features, args.out_features,
                          _parse_hparams(args.hparams), args.imports)


def cmd_count(args: argparse.Namespace) -> int:
    from tnpeft.adapters.specs import count_modules, lora_same_rank, percent
    from tnpeft.graph import graph_modules

    label, source = _source(args)
    mods = graph_modules(source)
    if len(mods) > 1:
        print(count_modules(label, mods, args.json))
        return 0
    g = next(iter(mods.values())).graph
    hp = g.meta.get("hparams") or _parse_hparams(args.hparams)
    n_in, n_out = g.in_features, g.out_features
    dense = n_in * n_out
    total = g.num_parameters()
    generated = g.num_generated()
    lora_eq, lora_rank = lora_same_rank(g)
    if args.json:
        extra: dict[str, Any] = {}
        if generated:
            extra["generated_parameters"] = generated
        if lora_eq:
            extra["lora_same_rank_parameters"] = lora_eq
            extra["lora_rank"] = lora_rank
            extra["fraction_of_lora"] = total / lora_eq
        print(json.dumps({"adapter": label, "in_features": n_in, "out_features": n_out, "hparams": hp,
                          "nodes": g.parameter_table(), "parameters": total, "dense_parameters": dense,
                          "fraction_of_dense": total / dense, **extra}, indent=2))
        return 0
    hps = ", ".join(f"{k}={v}" for k, v in hp.items())
    print(f"{label}  {n_in} → {n_out}" + (f"  ({hps})" if hps else ""))
    rows = [(r["node"], r["kind"], ", ".join(f"{i}={s}" for i, s in r["inds"].items()), f"{r['parameters']:,}")
            for r in g.parameter_table()]
    w = [max(len(x[i]) for x in rows + [("node", "kind", "indices", "parameters")]) for i in range(4)]
    print(f"{'node':<{w[0]}}  {'kind':<{w[1]}}  {'indices':<{w[2]}}  {'parameters':>{w[3]}}")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}")
    print(f"{'total':<{w[0] + w[1] + w[2] + 4}}  {total:>{w[3]},}")
    print(f"a dense update of this layer has {dense:,} parameters; the adapter is {percent(total, dense)} of it")
    if generated:
        outs = ", ".join(o for k in g.hypernetworks for o in g.hypernetworks[k].outputs)
        print(f"the hyper-network produces {generated:,} values (nodes {outs}), which are not trained themselves")
    if lora_eq:
        print(f"LoRA of the same rank (r={lora_rank}) has {lora_eq:,} parameters; the adapter trains "
              f"{percent(total, lora_eq)} of that ({percent(lora_eq - total, lora_eq)} fewer)" if total <= lora_eq else
              f"LoRA of the same rank (r={lora_rank}) has {lora_eq:,} parameters; the adapter trains "
              f"{total / lora_eq:.2f}× that")
    return 0
    hps = ", ".join(f"{k}={v}" for k, v in hp.items())
    print(f"{label}  {n_in} → {n_out}" + (f"  ({hps})" if hps else ""))
    rows = [(r["node"], r["kind"], ", ".join(f"{i}={s}" for i, s in r["inds"].items()), f"{r['parameters']:,}")
            for r in g.parameter_table()]
    w = [max(len(x[i]) for x in rows + [("node", "kind", "indices", "parameters")]) for i in range(4)]
    print(f"{'node':<{w[0]}}  {'kind':<{w[1]}}  {'indices':<{w[2]}}  {'parameters':>{w[3]}}")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}")
    print(f"{'total':<{w[0] + w[1] + w[2] + 4}}  {total:>{w[3]},}")
    print(f"a dense update of this layer has {dense:,} parameters; the adapter is {100 * total / dense:.3f} % of it")
    if generated:
        outs = ", ".join(o for k in g.hypernetworks for o in g.hypernetworks[k].outputs)
        print(f"the hyper-network produces {generated:,} values (nodes {outs}), which are not trained themselves")
    if lora_eq:
        print(f"LoRA of the same rank has {lora_eq:,} parameters; the adapter trains {100 * total / lora_eq:.2f} % of "
              f"that ({100 * (1 - total / lora_eq):.1f} % fewer)" if total <= lora_eq else
              f"LoRA of the same rank has {lora_eq:,} parameters; the adapter trains {total / lora_eq:.2f}× that")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    """List every registered adapter method (built-in and registered by --import modules)."""
    from tnpeft.adapters import method_table
    from tnpeft.adapters.specs import import_user_module

    for name in args.imports or ():
        import_user_module(name)
    rows = method_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(r["name"] + (f"  ({r['paper']})" if r["paper"] else "") + ("  [training hook]" if r["training_hook"] else ""))
        print("    " + (", ".join(f"{k}={v}" for k, v in r["hparams"].items()) or "(no hyper-parameters)"))
        if r["aliases"]:
            print("    aliases: " + ", ".join(f"{a} = {t}" for a, t in r["aliases"].items()))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a saved tnpeft adapter into a peft LoRA checkpoint for the model it was trained on."""
    from tnpeft.adapters.specs import import_user_module
    from tnpeft.train.convert import convert_adapter

    for name in args.imports or ():
        import_user_module(name)
    ex = convert_adapter(args.adapter_dir, args.output, model=args.model, task=args.task, max_rank=args.max_rank)
    print(json.dumps(ex.to_dict(), indent=2) if args.json else ex.summary())
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    if not args.output.lower().endswith((".svg", ".png", ".pdf")):
        raise ConfigError(f"output {args.output!r} must end in .svg, .png or .pdf", field="output")
    from tnpeft.adapters.specs import pick_module
    from tnpeft.draw import draw_circuit, draw_graph

    label, source = _source(args)
    path, module = pick_module(source, args.module)
    if args.circuit:
        draw_circuit(module, args.circuit, args.output)
    else:
        draw_graph(module.graph, args.output, title=f"{module.graph.name or 'adapter'} on {path}" if path else None)
    print(f"wrote {args.output}" + (f" (module {path} of {label})" if path else ""))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from tnpeft.verification import verify

    _, source = _source(args)
    report = verify(source, tol=args.tol)
    print(report.to_json() if args.json else report)
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from tnpeft.demo import run_demo

    if args.full:
        args.train_size, args.test_size, args.epochs = None, 2000, max(args.epochs, 1)
    adapters = [a for a in args.adapters.split(",") if a] if args.adapters else None
    result = run_demo(out_dir=args.out, train_size=args.train_size, test_size=args.test_size, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, adapters=adapters, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tnpeft.adapters.specs import import_user_module, train_method
    from tnpeft.train.loop import TrainConfig, TrainingInterrupted
    from tnpeft.train.pipeline import parse_test_size, run_training

    cfg = TrainConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_length=args.max_length,
                      eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed)
    targets: Any = args.target_modules
    if targets and "," in targets:
        targets = [t for t in targets.split(",") if t]
    excl = [t for t in args.exclude_modules.split(",") if t] if args.exclude_modules is not None else None
    for name in args.imports or ():
        import_user_module(name)
    hparams = _parse_hparams(args.hparams)
    if args.adapter_dir is not None:
        if args.adapter is not None or hparams:
            raise ConfigError("--adapter-dir trains on from a saved adapter (its topology and values); drop --adapter "
                              "and name=value", field="adapter_dir")
        method: Any = None
    else:
        method = train_method(args.adapter or "lora", hparams)
    try:
        metrics = run_training(args.model, args.data, method, hparams, args.out, adapter_dir=args.adapter_dir,
                               task=args.task, target_modules=targets, exclude_modules=excl,
                               train_size=args.train_size, test_size=parse_test_size(args.test_size),
                               text_column=args.text_column, label_column=args.label_column, config=cfg,
                               resume=not args.no_resume, progress=not args.json, stop_after=args.stop_after,
                               quiet=args.json)
    except TrainingInterrupted as e:
        print(f"tnpeft: {e}", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(metrics, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tnpeft.adapters.specs import import_user_module
    from tnpeft.demo import DEMO_LR_CENTRES
    from tnpeft.train.comparison import compare, parse_lr_grid
    from tnpeft.train.loop import TrainingInterrupted

    for name in args.imports or ():
        import_user_module(name)
    targets: Any = args.target_modules
    if targets and "," in targets:
        targets = [t for t in targets.split(",") if t]
    excl = [t for t in args.exclude_modules.split(",") if t] if args.exclude_modules is not None else None
    try:
        result = compare(args.adapters, model=args.model, data=args.data, lrs=args.lrs,
                         lr_grid=parse_lr_grid(args.lr_grid or []), lr_centres=DEMO_LR_CENTRES, seeds=args.seeds,
                         steps=args.steps,
                         epochs=args.epochs, train_size=args.train_size, val_size=args.val_size,
                         test_size=args.test_size, batch_size=args.batch_size, max_length=args.max_length,
                         protocol=args.protocol, out=args.out, task=args.task, target_modules=targets,
                         exclude_modules=excl, text_column=args.text_column, label_column=args.label_column,
                         progress=not args.json, quiet=args.json)
    except TrainingInterrupted as e:
        print(f"tnpeft: {e}", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_export_circuits(args: argparse.Namespace) -> int:
    """Write an adapter's circuits as OpenQASM 3 files with an index (see tnpeft.quantum.export)."""
    from tnpeft.quantum import export_circuits

    _, source = _source(args)
    index = export_circuits(source, args.output, max_synthesis_qubits=args.max_synthesis_qubits)
    if args.json:
        print(json.dumps(index, indent=2))
        return 0
    rows = [(e["name"], e["kind"], e["method"], str(e["qubits"]), str(sum(e["gates"].values())), str(e["depth"]),
             e["file"]) for e in index["circuits"]]
    head = ("circuit", "kind", "method", "qubits", "gates", "depth", "file")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(x.ljust(w[i]) if i in (0, 1, 2, 6) else x.rjust(w[i]) for i, x in enumerate(r)).rstrip())
    for e in index.get("skipped", []):
        print(f"not exported: {e['name']}: {e['reason']}")
    print(f"wrote {len(rows)} OpenQASM 3 circuits and index.json to {args.output}"
          + (f"; {len(index['skipped'])} node(s) could not be compiled (listed above)" if index.get("skipped") else ""))
    return 0


def cmd_circuits(args: argparse.Namespace) -> int:
    """Print the resources of an adapter's circuits (see tnpeft.quantum.resources)."""
    from tnpeft.quantum.resources import resource_report

    backend = None if args.backend == "none" else "generic"
    _, source = _source(args)
    report = resource_report(source, backend, max_synthesis_qubits=args.max_synthesis_qubits,
                             optimization_level=args.optimization_level)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
        if backend:
            print(f"backend: {report.backend} (heavy-hex coupling map; CX, RZ, SX, X); "
                  "CX = after decomposing into CX and one-qubit gates, before routing")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    __version__ = sys.modules["tnpeft"].__version__     # the package is imported before any of its modules
    p = argparse.ArgumentParser(prog="tnpeft", description="Tensor-network parameter-efficient fine-tuning.")
    p.add_argument("--version", action="version", version=f"tnpeft {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("adapters", help="list every registered adapter with its hyper-parameters and defaults")
    a.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE first (one that registers methods of its own); repeatable")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=cmd_adapters)

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
    cv.add_argument("--import", dest="imports", action="append", metavar="MODULE", help="import MODULE first")
    cv.add_argument("--json", action="store_true", help="print the export report as JSON")
    cv.set_defaults(func=cmd_convert)

    c = sub.add_parser("count", help="count an adapter's trainable parameters for one layer (or a saved adapter's)")
    _adapter_arguments(c)
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_count)

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
    t.add_argument("--warmup-steps", type=int, default=20, help="linear warmup (clipped to the run's length)")
    t.add_argument("--max-length", type=int, default=48, help="tokens per text (classification) or block (LM)")
    t.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: at the end)")
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--train-size", type=int, help="use only the first N training examples / blocks")
    t.add_argument("--test-size", help="held-out rows (an integer) or fraction (below 1); default 2,000 tweets, or "
                                       "0.2 of a data file's rows (at most 2,000)")
    t.add_argument("--text-column", default="text")
    t.add_argument("--label-column", default="label")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT holds a checkpoint")
    t.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    t.add_argument("--json", action="store_true", help="print the metrics as JSON (no progress bars)")
    t.set_defaults(func=cmd_train)

    k = sub.add_parser("compare", help="compare adapters fairly: a learning-rate grid × seeds under one budget, the "
                                       "rate chosen on validation, figures on a separate test split (resumable)")
    k.add_argument("--adapters", nargs="+", required=True, metavar="SPEC",
                   help="NAME[:key=value,...]: a method (lora:r=8), module.path:function[:...], a graph .json, or "
                        "peft_lora[:r=8,alpha=16] (peft's own LoRA); the spec text labels the row")
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
    k.add_argument("--target-modules", help="comma-separated names or a regex (default all-linear)")
    k.add_argument("--exclude-modules", help="comma-separated names to leave alone")
    k.add_argument("--text-column", default="text")
    k.add_argument("--label-column", default="label")
    k.add_argument("--import", dest="imports", action="append", metavar="MODULE", help="import MODULE first")
    k.add_argument("--out", default="runs/compare", help="output folder: results.json, pareto.png, curves.png, cells/")
    k.add_argument("--json", action="store_true", help="print the results as JSON (no progress bars)")
    k.set_defaults(func=cmd_compare)

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
            x.add_argument("--backend", choices=["generic", "none"], default="generic",
                           help="transpile to a generic heavy-hex backend (default) or not at all")
            x.add_argument("--optimization-level", type=int, choices=[0, 1, 2, 3], default=1)
            x.set_defaults(func=cmd_circuits)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # name=value hyper-parameters may stand before or after the options
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "hparams") and all("=" in e and not e.startswith("-") for e in extra):
            args.hparams = list(args.hparams) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if any(isinstance(getattr(args, k, None), int) and getattr(args, k) <= 0 for k in ("in_features", "out_features")):
        print("tnpeft: error: --in-features and --out-features must be positive", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except TNPeftError as e:
        print(f"tnpeft: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tnpeft: interrupted", file=sys.stderr)
        return 130
    except OSError as e:   # the system refused a read or write tnpeft did not foresee (a full disk, ...)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"tnpeft: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
