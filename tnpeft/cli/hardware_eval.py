"""``tnpeft hardware-eval``: the accuracy a fine-tuned model keeps when its quantum parts run on a device.

:func:`hardware_eval` loads a saved adapter into its model, evaluates the task metric exactly,
then with the adapter's quantum parts estimated on a device (:mod:`tnpeft.quantum.hardware`):
Quantum-PEFT's frames from shots, QPA's generated weights from measured probabilities, QWTHN's QNN
per token. It reports both metrics, the binomial error of an accuracy, the error of every module,
and the cost (circuits, shots, estimated QPU seconds, wall time). With ``sweep`` it draws the
curve of the metric against shots for the ideal device and the noisy one, mitigated and not: the
device's exact output distributions are simulated once per configuration and every shot count is
a multinomial draw from them.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from tnpeft.errors import ConfigError
from tnpeft.fileio import atomic_write_json
from tnpeft.nn import load_adapter
from tnpeft.quantum import Device, quantum_parts
from tnpeft.quantum.hardware import estimate_quantum_parts, frame_errors, summarize
from tnpeft.storage.adapter_folder import SAVED_PREFIX, read_adapter
from tnpeft.train.datasets import infer_task, load_classification, load_lm, load_model
from tnpeft.train.evaluation import evaluate
from tnpeft.train.plots import save_png


def _metric(task: str) -> str:
    return "accuracy" if task == "classification" else "perplexity"


def _evaluate(model: Any, tok: Any, test: Any, task: str, batch_size: int, max_length: int) -> dict[str, float]:
    return evaluate(model, tok, test, task, batch_size, max_length, progress=False)


def _run(model: Any, tok: Any, test: Any, task: str, device: Device, frames: str, batch_size: int,
         max_length: int, report: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    before = device.stats.to_dict()
    est = estimate_quantum_parts(model, device, frames=frames)
    rows = est.report() if report else None
    with est.apply():
        metrics = _evaluate(model, tok, test, task, batch_size, max_length)
    after = device.stats.to_dict()
    cost = {k: after[k] - before[k] for k in ("circuits", "shots", "pubs", "calls")}
    cost["qpu_seconds"] = round(after["qpu_seconds"] - before["qpu_seconds"], 3)
    out: dict[str, Any] = {"device": device.name, "shots": device.shots, "mitigation": device.mitigation.label,
                           "metrics": metrics, "cost": cost, "wall_seconds": round(time.perf_counter() - t0, 2),
                           "part_errors": frame_errors(est)}
    if rows is not None:
        out["modules"] = rows
        out["summary"] = summarize(rows)
    return out


def hardware_eval(adapter_dir: str | os.PathLike[str], *, model: str = "minilm", data: str = "tweets",
                  task: str | None = None, test_size: int = 500, backend: Any = "fake_torino",
                  shots: int | None = 4096, mitigation: Any = None, frames: str = "hadamard", seed: int = 0,
                  sweep: list[int] | None = None, sweep_mitigation: str = "readout", plot: str | None = None,
                  batch_size: int = 128, max_length: int = 48, text_column: str = "text",
                  label_column: str = "label") -> dict[str, Any]:
    """Evaluate the adapter in ``adapter_dir`` on ``model`` and ``data`` (its first ``test_size``
    held-out examples, as ``tnpeft train`` holds them out) exactly and with its quantum parts on
    ``backend`` with ``shots`` and ``mitigation``; with ``sweep`` (shot counts), the metric against
    shots for the ideal device and (unless ``backend`` is the ideal one) ``backend`` raw and with ``sweep_mitigation``, drawn to
    ``plot`` (PNG). Returns the report (``exact``, ``device``, ``sweep``, …)."""
    t_start = time.perf_counter()
    _, _, tensors = read_adapter(adapter_dir)
    head = [v for k, v in tensors.items() if k.startswith(SAVED_PREFIX + "head.") and k.endswith("weight")
            and v.ndim == 2]
    task = task or (infer_task(data) if not head else "classification")
    if isinstance(test_size, bool) or not isinstance(test_size, int) or test_size < 1:
        raise ConfigError(f"--test-size must be a positive integer, got {test_size!r}", field="test_size")
    loaded = load_model(model, task, num_labels=head[-1].shape[0] if head else 2, seed=seed)
    test: Any
    if task == "classification":
        _, test = load_classification(data, text_column=text_column, label_column=label_column, test_size=test_size,
                                      seed=seed)
    else:
        _, test = load_lm(data, loaded.tokenizer, block=max_length, text_column=text_column, test_size=test_size)
    m = load_adapter(loaded.model, adapter_dir)
    m.eval()
    metric = _metric(task)
    t0 = time.perf_counter()
    exact = _evaluate(m, loaded.tokenizer, test, task, batch_size, max_length)
    kinds = sorted({p.kind for p in quantum_parts(m)})
    result: dict[str, Any] = {"adapter_dir": str(adapter_dir), "model": loaded.name, "data": str(data), "task": task,
                              "test_size": len(test), "metric": metric, "quantum_parts": kinds,
                              "frames": frames if "frame" in kinds else None,
                              "exact": {"metrics": exact, "wall_seconds": round(time.perf_counter() - t0, 2)}}
    if task == "classification":
        a = exact["accuracy"]
        result["exact"]["binomial_std"] = math.sqrt(a * (1 - a) / len(test))
    zne = "zne" in str(mitigation or "") or "zne" in sweep_mitigation
    build = "readout+zne" if zne else mitigation
    device = Device(backend, shots=shots, mitigation=build, seed=seed, remember=True)
    device.configure(mitigation=mitigation)
    result["device"] = _run(m, loaded.tokenizer, test, task, device, frames, batch_size, max_length, report=True)
    if sweep:
        result["sweep"] = _sweep(m, loaded.tokenizer, test, task, device, backend, frames, sweep, sweep_mitigation,
                                 seed, batch_size, max_length)
        if plot:
            plot_sweep(result, Path(plot))
            result["plot"] = str(plot)
    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def _sweep(model: Any, tok: Any, test: Any, task: str, device: Device, backend: Any, frames: str, sweep: list[int],
           sweep_mitigation: str, seed: int, batch_size: int, max_length: int) -> list[dict[str, Any]]:
    counts: list[int | None] = sorted({int(s) for s in sweep}) + [None]
    ideal = Device("ideal", shots=None, seed=seed, remember=True)
    curves = []
    configs: list[tuple[str, Device, str | None]] = [("ideal", ideal, None)]
    if not device.ideal:          # on the ideal device mitigation changes nothing: one curve
        configs += [(device.name, device, None), (f"{device.name} + {sweep_mitigation}", device, sweep_mitigation)]
    for label, dev, mit in configs:
        for s in counts:
            dev.configure(shots=s, mitigation=mit)
            r = _run(model, tok, test, task, dev, frames, batch_size, max_length, report=False)
            curves.append({"curve": label, "shots": s, "metrics": r["metrics"], "cost": r["cost"],
                           "wall_seconds": r["wall_seconds"]})
    return curves


def _parts(result: dict[str, Any]) -> str:
    """What ran on the device, as the plot's title says it: frames with their estimator, QNNs, QPA's generator."""
    names = {"frame": f"frames ({result.get('frames')})", "qnn": "QNN circuits", "qpa": "QPA generator circuits"}
    kinds = result.get("quantum_parts") or []
    return ", ".join(names.get(k, k) for k in kinds) + " on the device" if kinds else "no quantum part"


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """The metric against shots per curve (exact distributions drawn at the right edge), with the
    exact model's value and, for accuracy, its binomial band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = result["sweep"]
    finite = sorted({r["shots"] for r in rows if r["shots"]})
    edge = finite[-1] * 4 if finite else 1
    for label in dict.fromkeys(r["curve"] for r in rows):
        pts = [(r["shots"] or edge, r["metrics"][metric]) for r in rows if r["curve"] == label]
        ax.plot(*zip(*pts), marker="o", label=label)
    exact = result["exact"]["metrics"][metric]
    ax.axhline(exact, color="black", lw=1, ls="--", label=f"exact ({exact:.3f})")
    if "binomial_std" in result["exact"]:
        sd = result["exact"]["binomial_std"]
        ax.axhspan(exact - 2 * sd, exact + 2 * sd, color="black", alpha=0.08, label="± 2 binomial std")
    ax.set_xscale("log", base=2)
    ax.set_xticks(finite + [edge], [f"{s:,}" for s in finite] + ["∞"])
    ax.set_xlabel("shots per circuit (∞: exact distribution)")
    ax.set_ylabel(metric)
    ax.set_title(f"{result['model']} on {result['data']} ({result['test_size']} examples), {_parts(result)}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def format_report(result: dict[str, Any]) -> str:
    """The report as text."""
    metric = result["metric"]
    ex = result["exact"]
    dev = result["device"]
    lines = [f"{result['model']} with the adapter in {result['adapter_dir']} on {result['data']} "
             f"({result['test_size']} examples, {result['task']})"]
    band = f" ± {ex['binomial_std']:.3f} (binomial std)" if "binomial_std" in ex else ""
    lines.append(f"exact:   {metric} {ex['metrics'][metric]:.4f}{band}")
    shots = "exact distributions" if dev["shots"] is None else f"{dev['shots']:,} shots"
    c = dev["cost"]
    lines.append(f"device:  {metric} {dev['metrics'][metric]:.4f} on {dev['device']} ({shots}, mitigation "
                 f"{dev['mitigation']}; {_parts(result)})")
    lines.append(f"cost:    {c['circuits']:,} circuits, {c['shots']:,} shots, {c['pubs']} PUBs, ≈ {c['qpu_seconds']:,.1f} s "
                 f"of QPU time (shots × (duration + repetition delay); queue and job overheads not included); "
                 f"{dev['wall_seconds']:.1f} s here")
    s = dev.get("summary") or {}
    if s.get("part_error"):
        lines.append(f"errors:  quantum parts median {s['part_error']['median']:.2%}, max {s['part_error']['max']:.2%}"
                     + (f"; ΔW median {s['delta_error']['median']:.2%}, max {s['delta_error']['max']:.2%}"
                        if s.get("delta_error") else "")
                     + (f"; module output median {s['output_error']['median']:.2%}" if s.get("output_error") else ""))
    if s.get("zero_updates"):
        lines.append(f"note:    {s['zero_updates']} module(s) have ΔW = 0 (e.g. Λ = 0): no relative ΔW error exists; "
                     "their frame errors are listed per module (--json)")
    for r in result.get("sweep", []):
        shots = "∞" if r["shots"] is None else f"{r['shots']:,}"
        lines.append(f"sweep:   {r['curve']:<28} shots {shots:>7}  {metric} {r['metrics'][metric]:.4f}  "
                     f"({r['cost']['circuits']:,} circuits, ≈ {r['cost']['qpu_seconds']:,.0f} QPU s)")
    if result.get("plot"):
        lines.append(f"plot:    {result['plot']}")
    return "\n".join(lines)


def write_report(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report as JSON (atomically)."""
    atomic_write_json(Path(path), result)
