"""``tnpeft train``: one call from a model and a dataset to a trained, saved adapter, with its
diagram and circuits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from tnpeft.adapters import check_hparams
from tnpeft.draw import draw_graph
from tnpeft.errors import ConfigError, TNPeftError
from tnpeft.fileio import atomic_write_json
from tnpeft.nn import AdapterConfig, inject, load_adapter, tn_layers, trainable_parameters
from tnpeft.nn.model import saved_modules, trainable_parameters_line
from tnpeft.quantum import circuit_names, export_circuits
from tnpeft.quantum.resources import resource_report
from tnpeft.train.datasets import ClassificationData, LMData, infer_task, load_classification, load_lm, load_model
from tnpeft.train.evaluation import resolve_device
from tnpeft.train.loop import TrainConfig, fit


def write_artifacts(model: nn.Module, out: Path, adapter_name: str = "default") -> dict[str, Any]:
    """The tensor diagram of the first adapted layer (``diagram.svg``) and, for adapters with
    circuits, the OpenQASM 3 files of every adapted module's circuits (``circuits/``, with
    ``index.json``) and their resources (``circuits/resources.json``: qubits, gates, depth, raw,
    decomposed into CX and on a generic heavy-hex backend). Returns what was written."""
    layers = [(p, lay) for p, lay in tn_layers(model) if adapter_name in lay.tn_adapters]
    if not layers:
        return {}
    path, layer = layers[0]
    graph = layer.tn_adapters[adapter_name].graph
    arts: dict[str, Any] = {}
    draw_graph(graph, out / "diagram.svg", title=f"{graph.name} on {path}")
    arts["diagram"] = str(out / "diagram.svg")
    if not any(circuit_names(lay.tn_adapters[adapter_name]) for _, lay in layers):
        return arts
    try:  # a node that cannot be compiled is listed in the index; the others are written
        index = export_circuits(model, out / "circuits", adapter_name=adapter_name)
        report = resource_report(model, "generic", adapter_name=adapter_name)
    except TNPeftError as e:
        arts["circuits"] = f"not exported: {e}"
        return arts
    atomic_write_json(out / "circuits" / "resources.json", report.to_dict())
    arts["circuits"] = str(out / "circuits")
    arts["circuit_resources"] = {**report.totals(), "summary": report.summary(), "skipped": index["skipped"]}
    return arts


def run_training(model: str, data: str, method: str | Callable[..., Any], hparams: dict[str, Any], out: str | Path, *,
                 task: str | None = None, target_modules: Any = None, exclude_modules: list[str] | None = None,
                 train_size: int | None = None, test_size: int | float | None = None, text_column: str = "text",
                 label_column: str = "label", config: TrainConfig | None = None, resume: bool = True,
                 progress: bool = True, stop_after: int | None = None,
                 report: Callable[[str], None] | None = None,
                 return_model: bool = False, adapter_dir: str | Path | None = None,
                 device: str | None = None) -> Any:
    """Load ``model`` and ``data``, inject adapter method ``method`` (a registered name or a builder
    function) with ``hparams`` — or, with ``adapter_dir``, load that saved adapter to train on — train
    with :func:`fit` on ``device`` (``cpu`` by default; ``cuda``, ``cuda:N`` or ``auto``) and write the
    outputs into ``out``. ``report`` receives what a person watching would want to read (the run
    before it starts, the result at the end; the command line passes ``print``). Returns the metrics
    (also in ``out/metrics.json``), or ``(metrics, model, tokenizer, test split)`` with
    ``return_model``."""
    task = task or infer_task(data)
    config = config or TrainConfig()
    config.task = task
    config.check()
    if adapter_dir is None:
        check_hparams(method, hparams)
    out = Path(out)
    dev = resolve_device(device)
    check_run_arguments(out, train_size, test_size)
    train: ClassificationData | LMData
    test: ClassificationData | LMData
    if task == "classification":
        train, test = load_classification(data, text_column=text_column, label_column=label_column,
                                          train_size=train_size, test_size=test_size,
                                          seed=config.seed)
        loaded = load_model(model, task, num_labels=len(train.label_names), seed=config.seed)
    else:
        loaded = load_model(model, task, seed=config.seed)
        train, test = load_lm(data, loaded.tokenizer, block=config.max_length, text_column=text_column,
                              train_size=train_size, test_size=0.1 if test_size is None else test_size)
    targets: str | Sequence[str]
    if adapter_dir is not None:   # train on from a saved adapter: its graphs, values and saved modules
        loaded.model.requires_grad_(False)
        m = load_adapter(loaded.model, adapter_dir, is_trainable=True)
        for name in saved_modules(m, "default"):
            m.get_submodule(name).requires_grad_(True)
        method, targets = f"adapter {str(adapter_dir)!r}", [p for p, _ in tn_layers(m)]
    else:
        cfg = AdapterConfig(method, target_modules or loaded.target_modules,
                            exclude_modules=exclude_modules if exclude_modules is not None else loaded.exclude_modules,
                            modules_to_save=loaded.modules_to_save, **hparams)
        m = inject(loaded.model, cfg)
        method, targets = cfg.method if not isinstance(method, str) else method, cfg.target_modules
    m.to(dev)
    counts = trainable_parameters(m)
    notes = [] if train_size is None or len(train) >= train_size else [
        f"--train-size {train_size:,}: the data holds {len(train):,} training rows after the held-out split (rows with "
        "an empty text or label are skipped); training on those"]
    if report is not None:
        report(f"{loaded.name}: {method} ({', '.join(f'{k}={v}' for k, v in hparams.items()) or 'defaults'}) on "
               f"{len(list(tn_layers(m)))} layers; data {data}: {len(train):,} train / {len(test):,} "
               f"held out ({task})")
        report(trainable_parameters_line(m))
        for n in notes:
            report(f"note: {n}")
    info = {"model": loaded.name, "data": str(data), "method": method, "hparams": hparams,
            "target_modules": targets if isinstance(targets, str) else list(targets),
            "label_names": getattr(train, "label_names", None)}
    metrics = fit(m, loaded.tokenizer, train, test, config, out, resume=resume, progress=progress,
                  stop_after=stop_after, desc=f"{method} on {loaded.name}", run_info=info)
    metrics["adapter_parameters"] = counts.trainable - sum(
        p.numel() for n, p in m.named_parameters() if p.requires_grad and any(n.startswith(s + ".") or f".{s}." in n
                                                                              for s in loaded.modules_to_save))
    metrics.update(write_artifacts(m, out))
    metrics["notes"] = notes
    atomic_write_json(out / "metrics.json", metrics)
    if report is not None:
        fin = metrics["final"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in fin.items() if k != "step")
        report(f"done: {metrics['steps']} steps in {metrics['train_seconds']:.0f} s; held-out {shown}")
        report(f"adapter: {out / 'adapter'}   metrics: {out / 'metrics.json'}   curves: {out / 'curves.png'}")
    return (metrics, m, loaded.tokenizer, test) if return_model else metrics


def parse_test_size(v: str | None) -> int | float | None:
    """``--test-size``: a number of held-out rows (an integer ≥ 1) or a fraction in (0, 1)."""
    if v is None:
        return None
    try:
        x = float(v)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or x <= 0 or (x >= 1 and x != int(x)):
        raise ConfigError(f"--test-size must be a number of rows (an integer ≥ 1) or a fraction in (0, 1), got {v!r}",
                          field="test_size")
    return x if x < 1 else int(x)


def check_run_arguments(out: Path, train_size: Any, test_size: Any) -> None:
    """The checks of :func:`run_training`'s own arguments, before a model or data set is loaded."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; the output must be a folder (it is created if needed)",
                          field="out")
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1):
        raise ConfigError(f"--train-size must be a positive integer, got {train_size!r}", field="train_size")
    if test_size is not None and (isinstance(test_size, bool) or not isinstance(test_size, (int, float))
                                  or not math.isfinite(test_size) or test_size <= 0
                                  or (test_size >= 1 and test_size != int(test_size))):
        raise ConfigError(f"--test-size must be a number of rows (an integer ≥ 1) or a fraction in (0, 1), got "
                          f"{test_size!r}", field="test_size")
