"""The verbs of the ``tnpeft`` command: one ``cmd_<verb>(args) -> exit status`` each."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any, Sequence

from tnpeft.errors import ConfigError


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
    from tnpeft.cli.tables import count_modules, count_table, lora_same_rank
    from tnpeft.storage import graph_modules
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
    print(count_table(label, g, hp))
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
        if r["advice"]:
            print(textwrap.fill(r["advice"], width=100, initial_indent="    advice: ", subsequent_indent="      "))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a saved tnpeft adapter into a peft LoRA checkpoint for the model it was trained on."""
    from tnpeft.adapters.specs import import_user_module
    from tnpeft.train.convert import convert_adapter

    for name in args.imports or ():
        import_user_module(name)
    ex = convert_adapter(args.adapter_dir, args.output, model=args.model, task=args.task, max_rank=args.max_rank,
                         overwrite=args.overwrite)
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
    from tnpeft.cli.demo import run_demo

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
    from tnpeft.train.loop import TrainConfig

    cfg = TrainConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                      warmup_fraction=args.warmup_fraction, max_length=args.max_length,
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
    if args.quantum_backend is not None or args.dry_run:
        return _train_on_device(args, method, hparams, cfg, targets, excl)
    metrics = _run_training(args, method, hparams, cfg, targets, excl)
    if metrics is None:
        return 130
    if args.json:
        print(json.dumps(metrics, indent=2))
    return 0


def _run_training(args: argparse.Namespace, method: Any, hparams: dict[str, Any], cfg: Any, targets: Any,
                  excl: Any) -> dict[str, Any] | None:
    """``run_training`` with ``tnpeft train``'s arguments; ``None`` (said on stderr) when interrupted."""
    from tnpeft.train.loop import TrainingInterrupted
    from tnpeft.train.pipeline import parse_test_size, run_training

    try:
        metrics: dict[str, Any] = run_training(
            args.model, args.data, method, hparams, args.out, adapter_dir=args.adapter_dir,
            device=args.device, task=args.task, target_modules=targets, exclude_modules=excl,
            train_size=args.train_size, test_size=parse_test_size(args.test_size),
            text_column=args.text_column, label_column=args.label_column, config=cfg,
            resume=not args.no_resume, progress=not args.json, stop_after=args.stop_after,
            report=None if args.json else print)
    except TrainingInterrupted as e:
        print(f"tnpeft: {e}", file=sys.stderr)
        return None
    return metrics


def _train_on_device(args: argparse.Namespace, method: Any, hparams: dict[str, Any], cfg: Any, targets: Any,
                     excl: Any) -> int:
    """``tnpeft train --quantum-backend B``: the quantum nodes run on device B during training (forward
    measured, backward by the parameter-shift rule); ``--dry-run`` prints the budget and stops."""
    from pathlib import Path

    from tnpeft.cli.tables import budget_table
    from tnpeft.fileio import atomic_write_json
    from tnpeft.nn import AdapterConfig, inject, load_adapter
    from tnpeft.quantum import Device, device_budget, on_device
    from tnpeft.train.datasets import infer_task, load_model

    device = Device(args.quantum_backend or "ideal", shots=None if args.shots == 0 else args.shots,
                    mitigation=args.mitigation, seed=args.seed)
    task = args.task or infer_task(args.data)
    loaded = load_model(args.model, task, num_labels=3 if args.data == "tweets" else 2, seed=args.seed)
    if args.adapter_dir is not None:
        probe = load_adapter(loaded.model, args.adapter_dir)
    else:
        probe = inject(loaded.model, AdapterConfig(method, targets or loaded.target_modules,
                                                   exclude_modules=excl if excl is not None else loaded.exclude_modules,
                                                   **hparams))
    tokens = args.batch_size * args.max_length
    budget = device_budget(probe, device, tokens=tokens)
    del probe, loaded
    if args.dry_run:
        print(json.dumps(budget.to_dict(), indent=2) if args.json else budget_table(budget))
        return 0
    if not args.json:
        print(budget_table(budget))
    with on_device(None, device=device):
        metrics = _run_training(args, method, hparams, cfg, targets, excl)
    if metrics is None:
        return 130
    metrics["quantum_device"] = {"budget_per_step": budget.to_dict(), "ran": device.stats.to_dict()}
    atomic_write_json(Path(args.out) / "metrics.json", metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        st = device.stats
        print(f"on {device.name}: {st.circuits:,} circuits, {st.shots:,} shots, {st.pubs:,} PUBs, ≈ {st.qpu_seconds:,.1f} s "
              f"of QPU time; {st.wall_seconds:,.0f} s simulating")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tnpeft.adapters.specs import import_user_module
    from tnpeft.cli.tables import compare_table
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
                         lr_grid=parse_lr_grid(args.lr_grid or []), seeds=args.seeds,
                         steps=args.steps,
                         epochs=args.epochs, train_size=args.train_size, val_size=args.val_size,
                         test_size=args.test_size, batch_size=args.batch_size, max_length=args.max_length,
                         warmup_steps=args.warmup_steps, warmup_fraction=args.warmup_fraction,
                         eval_every=args.eval_every, patience=args.patience,
                         protocol=args.protocol, out=args.out, task=args.task, target_modules=targets,
                         exclude_modules=excl, text_column=args.text_column, label_column=args.label_column,
                         progress=not args.json, device=args.device)
    except TrainingInterrupted as e:
        print(f"tnpeft: {e}", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2) if args.json else compare_table(result))
    return 0


def cmd_export_circuits(args: argparse.Namespace) -> int:
    """Write an adapter's circuits as OpenQASM 3 files with an index (see tnpeft.quantum.export)."""
    from tnpeft.cli.tables import columns
    from tnpeft.quantum import export_circuits

    _, source = _source(args)
    index = export_circuits(source, args.output, max_synthesis_qubits=args.max_synthesis_qubits)
    if args.json:
        print(json.dumps(index, indent=2))
        return 0
    rows = [(e["name"], e["kind"], e["method"], str(e["qubits"]), str(sum(e["gates"].values())), str(e["depth"]),
             e["file"]) for e in index["circuits"]]
    head = ("circuit", "kind", "method", "qubits", "gates", "depth", "file")
    print("\n".join(columns([head, *rows], right={3, 4, 5})))
    for e in index.get("skipped", []):
        print(f"not exported: {e['name']}: {e['reason']}")
    print(f"wrote {len(rows)} OpenQASM 3 circuits and index.json to {args.output}"
          + (f"; {len(index['skipped'])} node(s) could not be compiled (listed above)" if index.get("skipped") else ""))
    return 0


def cmd_circuits(args: argparse.Namespace) -> int:
    """Print the resources of an adapter's circuits (see tnpeft.quantum.resources)."""
    from tnpeft.cli.tables import resources_table
    from tnpeft.quantum.devices import resolve_backend
    from tnpeft.quantum.resources import resource_report

    backend: Any = None if args.backend == "none" else "generic" if args.backend == "generic" else \
        resolve_backend(args.backend)
    _, source = _source(args)
    report = resource_report(source, backend, max_synthesis_qubits=args.max_synthesis_qubits,
                             optimization_level=args.optimization_level)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(resources_table(report))
        if backend == "generic":
            print(f"backend: {report.backend} (heavy-hex coupling map; CX, RZ, SX, X); "
                  "CX = after decomposing into CX and one-qubit gates, before routing")
        elif backend is not None:
            print(f"backend: {report.backend}; CX = after decomposing into CX and one-qubit gates, before routing")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    """List the devices circuits can run on: ideal, generic and the calibrated fake IBM devices."""
    from tnpeft.cli.tables import devices_table
    from tnpeft.quantum.devices import list_devices

    infos, note = list_devices()
    if args.json:
        print(json.dumps({"devices": [i.to_dict() for i in infos], "note": note}, indent=2))
        return 0
    print(devices_table(infos, note, show_all=args.all))
    print("use a name with --backend (tnpeft circuits, train --quantum-backend, hardware-eval); noise is simulated "
          "by qiskit-aer from each device's calibration snapshot")
    return 0


def cmd_hardware_eval(args: argparse.Namespace) -> int:
    """The task metric of a saved adapter with its quantum parts run on a device, beside the exact one."""
    from tnpeft.adapters.specs import import_user_module
    from tnpeft.cli.hardware_eval import format_report, hardware_eval, write_report

    for name in args.imports or ():
        import_user_module(name)
    sweep = [int(x) for x in args.sweep.split(",") if x] if args.sweep else None
    result = hardware_eval(args.adapter_dir, model=args.model, data=args.data, task=args.task, test_size=args.test_size,
                           backend=args.backend, shots=None if args.shots == 0 else args.shots,
                           mitigation=args.mitigation, frames=args.frames, seed=args.seed, sweep=sweep,
                           sweep_mitigation=args.sweep_mitigation, plot=args.plot, batch_size=args.batch_size,
                           max_length=args.max_length, text_column=args.text_column, label_column=args.label_column)
    if args.output:
        write_report(result, args.output)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
