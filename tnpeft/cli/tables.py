"""The command line's tables: text laid out in columns for a terminal. Library code returns data
(reports, dicts) and plain lines; the columns are made here, so that ``tnpeft count``, ``circuits``,
``verify`` and ``compare`` print aligned tables while Python callers get structured results."""

from __future__ import annotations

import json
import math
from typing import AbstractSet, Any, Sequence

from tnpeft.algebra import cut_rank
from tnpeft.graph import Graph, count_parameters


def columns(rows: Sequence[Sequence[str]], right: AbstractSet[int] = frozenset(), sep: str = "  ") -> list[str]:
    """``rows`` (the first is the header) padded into aligned columns; the columns in ``right`` are
    right-aligned (numbers)."""
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return [sep.join(x.rjust(w[i]) if i in right else x.ljust(w[i]) for i, x in enumerate(r)).rstrip() for r in rows]


def percent(part: float, whole: float) -> str:
    """``part / whole`` as a percentage with at least three significant digits (parts per million
    below 0.01 %)."""
    if not whole:
        return "n/a"
    p = 100.0 * part / whole
    if p == 0:
        return "0 %"
    if abs(p) < 0.01:
        return f"{p * 1e4:.3g} ppm"
    digits = max(2, 2 - math.floor(math.log10(abs(p))))
    return f"{p:.{digits}f} %"


def lora_same_rank(g: Graph) -> tuple[int | None, int | None]:
    """``(parameters, r)`` of a LoRA of the same rank on this layer: the rank of the graph's update
    (its cheapest cut, at most ``min(in, out)``; the hyper-parameter ``r``/``rank`` of a nonlinear
    graph), or ``(None, None)`` when it has none."""
    r = cut_rank(g)
    if r is None:
        hp = g.meta.get("hparams") or {}
        r = next((hp[k] for k in ("r", "rank", "bottleneck") if isinstance(hp.get(k), int) and not isinstance(hp.get(k), bool)),
                 None)
    if not r:
        return None, None
    return r * (g.in_features + g.out_features), r


def count_modules(label: str, mods: dict[str, Any], as_json: bool) -> str:
    """A saved adapter's count (``tnpeft count --adapter-dir``): one row per adapted module, and
    the total; as JSON text with ``as_json``."""
    rows = [(p, m.graph) for p, m in mods.items()]
    total = count_parameters({p: g for p, g in rows})      # tensors shared across layers counted once
    if as_json:
        return json.dumps({"adapter": label, "parameters": total, "modules": [
            {"module": p, "name": g.name, "in_features": g.in_features, "out_features": g.out_features,
             "parameters": g.num_parameters(), "nodes": g.parameter_table()} for p, g in rows]}, indent=2)
    lines = [f"{label}: {len(rows)} adapted modules, {total:,} trainable parameters"]
    cells = [("module", "adapter", "in → out", "parameters")]
    cells += [(p, g.name or "graph", f"{g.in_features} → {g.out_features}", f"{g.num_parameters():,}") for p, g in rows]
    cells.append(("total", "", "", f"{total:,}"))
    lines += columns(cells, right={3})
    return "\n".join(lines)


def _pm(mean: float | None, std: float | None, scale: float = 1.0, se: float | None = None) -> str:
    if mean is None:
        return "n/a"
    if std is not None:
        return f"{mean * scale:.2f} ± {std * scale:.2f}"
    if se is not None:
        return f"{mean * scale:.2f} ± {se * scale:.2f} SE"
    return f"{mean * scale:.2f} (1 seed)"


def compare_table(result: dict[str, Any]) -> str:
    """``tnpeft compare``: the comparison table, its notes, the protocol and where the files are."""
    rows, cls = result["summary"], result["maximize"]
    m1, m2 = ("accuracy", "macro_f1") if cls else ("perplexity", "loss")
    scale = 100.0 if cls else 1.0
    # ×LoRA8 only where the comparison has a LoRA r=8 row to measure against
    ratios = any(r["params_vs_lora_r8"] is not None for r in rows)
    head = ("adapter", "params", "head", *(("×LoRA8",) if ratios else ()), "lr",
            "test acc %" if cls else "test ppl", "macro-F1 %" if cls else "test loss", "step s", "peak MB")
    table = [head]
    for r in rows:
        ratio = () if not ratios else ("" if r["params_vs_lora_r8"] is None else f"{r['params_vs_lora_r8']:.3g}",)
        lr = "diverged" if r["lr"] is None else f"{r['lr']:g}" + ("*" if r.get("lr_at_edge") else "")
        table.append((r["adapter"], f"{r['adapter_parameters']:,}", f"{r['head_parameters']:,}", *ratio, lr,
                      _pm(r[f"test_{m1}_mean"], r[f"test_{m1}_std"], scale, r.get(f"test_{m1}_se")),
                      _pm(r[f"test_{m2}_mean"], r[f"test_{m2}_std"], scale),
                      "n/a" if r["step_seconds"] is None else f"{r['step_seconds']:.3f}",
                      "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"))
    lines = columns(table, right=set(range(1, len(head))))
    cfg = result["config"]
    n_sel = sum(c["selected"] for c in result["cells"])
    unit = "examples" if cls else f"blocks of {cfg.get('max_length', '?')} tokens"
    spread = (f"mean ± std over {len(result['seeds'])} seeds" if len(result["seeds"]) > 1 else
              "one seed: ± SE is the test set's binomial standard error, not a spread over seeds" if cls else
              "one seed: each figure is one run's, with no spread")
    lines += ["",
              f"protocol {result['protocol']}: {result['protocol_cells']} training cells, learning rate chosen on "
              f"{cfg['val_size']:,} validation {unit} ({'highest accuracy' if cls else 'lowest perplexity'}, mean "
              f"over seeds), figures on {cfg['test_size']:,} test {unit} ({n_sel} cells tested); {spread}",
              "params: the adapter's trainable parameters; head: the new task head's; lr*: the selected rate is at "
              "the edge of its grid; step s: median seconds per optimizer step; peak MB: " + result["memory"]]
    base = result.get("base_model")
    if base:
        lines.append(f"the model without an adapter: validation perplexity {base['val']['perplexity']:.2f}, test "
                     f"{base['test']['perplexity']:.2f} (loss {base['test']['loss']:.4f})")
    lines += [f"note: {n}" for n in result.get("notes", [])]
    lines.append(f"wrote {result['out']}/results.json, pareto.png, curves.png, cells/ "
                 f"(total {result['wall_seconds']:.0f} s)")
    return "\n".join(lines)


def count_table(label: str, g: Graph, hparams: dict[str, Any]) -> str:
    """``tnpeft count`` of one graph: its nodes, the total, and the comparisons with a dense update
    and with LoRA of the same rank."""
    n_in, n_out = g.in_features, g.out_features
    dense = n_in * n_out
    total = g.num_parameters()
    hps = ", ".join(f"{k}={v}" for k, v in hparams.items())
    lines = [f"{label}  {n_in} → {n_out}" + (f"  ({hps})" if hps else "")]
    rows = [("node", "kind", "indices", "parameters")]
    rows += [(r["node"], r["kind"], ", ".join(f"{i}={s}" for i, s in r["inds"].items()), f"{r['parameters']:,}")
             for r in g.parameter_table()]
    rows.append(("total", "", "", f"{total:,}"))
    lines += columns(rows, right={3})
    lines.append(f"a dense update of this layer has {dense:,} parameters; the adapter is {percent(total, dense)} of it")
    generated = g.num_generated()
    if generated:
        outs = ", ".join(o for k in g.hypernetworks for o in g.hypernetworks[k].outputs)
        lines.append(f"the hyper-network produces {generated:,} values (nodes {outs}), which are not trained themselves")
    lora_eq, lora_rank = lora_same_rank(g)
    if lora_eq:
        lines.append(f"LoRA of the same rank (r={lora_rank}) has {lora_eq:,} parameters; the adapter trains "
                     f"{percent(total, lora_eq)} of that ({percent(lora_eq - total, lora_eq)} fewer)" if total <= lora_eq
                     else f"LoRA of the same rank (r={lora_rank}) has {lora_eq:,} parameters; the adapter trains "
                     f"{total / lora_eq:.2f}× that")
    return "\n".join(lines)


def resources_table(report: Any) -> str:
    """``tnpeft circuits``: one row per circuit of a :class:`~tnpeft.quantum.resources.ResourceReport`,
    what was not built, and the totals."""
    def fmt(v: int | None) -> str:
        return "—" if v is None else f"{v:,}"

    head = ("circuit", "kind", "method", "qubits", "1q", "2q", "multi", "depth", "CX", "bound", "backend 2q",
            "backend depth")
    rows = [(c.name, c.kind, c.method, str(c.qubits), str(c.one_qubit), str(c.two_qubit), str(c.multi_qubit),
             str(c.depth), fmt(c.cx), fmt(c.bound), fmt(c.backend_two_qubit), fmt(c.backend_depth))
            for c in report.circuits]
    lines = columns([head, *rows], right=set(range(3, len(head))))
    lines += [f"{s['name']}: not built — {s['reason']}" for s in report.skipped]
    lines += report.alternatives()
    lines.append("total: " + report.summary())
    return "\n".join(lines)


def devices_table(infos: Sequence[Any], note: str | None, show_all: bool = False) -> str:
    """``tnpeft devices``: one row per usable device (every device with ``show_all``) of
    :func:`tnpeft.quantum.devices.list_devices`, then the unusable ones with the reason."""
    head = ("device", "qubits", "basis gates", "2q gate", "median 2q error", "median readout error")
    rows = [(i.name, str(i.qubits) if i.qubits else "any", ",".join(i.basis_gates) if i.qubits else "any",
             i.two_qubit_gate or "—", "—" if i.median_two_qubit_error is None else f"{i.median_two_qubit_error:.4f}",
             "—" if i.median_readout_error is None else f"{i.median_readout_error:.4f}")
            for i in infos if i.usable or show_all]
    lines = columns([head, *rows], right={1, 4, 5})
    lines += [(f"{i.name}: {i.note}" if show_all else f"not listed: {i.name}: {i.note}")
              for i in infos if not i.usable and i.note]
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def budget_table(budget: Any) -> str:
    """``tnpeft train --quantum-backend --dry-run``: one row per circuit shape of a
    :class:`~tnpeft.quantum.in_the_loop.Budget`, then its totals and notes."""
    head = ("circuit shape", "kind", "qubits", "nodes", "forward", "backward", "2q gates", "duration")
    rows = [(r.shape, r.kind, str(r.qubits), str(r.parts), f"{r.forward:,}", f"{r.backward:,}",
             "—" if r.two_qubit is None else f"{r.two_qubit:,}",
             "—" if r.duration is None else f"{r.duration * 1e6:,.1f} µs") for r in budget.rows]
    lines = columns([head, *rows], right=set(range(2, len(head))))
    lines.append(budget.summary())
    lines += [f"note: {n}" for n in budget.notes]
    return "\n".join(lines)
