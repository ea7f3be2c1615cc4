"""What a comparison is made of: its shared context (model, splits, budget), its learning-rate grid
(default grids centred on each method's registered rate), its splits, and the files its cells
leave (``cell.json``, ``test.json``) — the pieces :func:`tnpeft.train.compare` runs."""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

from tnpeft.adapters.methods import DEFAULT_LEARNING_RATE, METHODS, check_hparams
from tnpeft.adapters.specs import train_method
from tnpeft.errors import ConfigError
from tnpeft.fileio import read_json
from tnpeft.train.datasets import ClassificationData, LMData, load_classification, load_lm, load_model
from tnpeft.train.train_config import MAX_LR

PEFT_LORA = "peft_lora"
PEFT_LORA_HPARAMS = {"r": 8, "alpha": 16, "dropout": 0.0}
# peft's own tuners as reference rows: the spec name, its hyper-parameters with their defaults (the
# defaults of tnpeft's method of the same name where both have one; peft's VeRA starts λ_d at 0.1)
PEFT_REFERENCES: dict[str, dict[str, Any]] = {
    PEFT_LORA: PEFT_LORA_HPARAMS,
    "peft_loha": {"r": 8, "alpha": 8.0},
    "peft_lokr": {"r": 8, "alpha": 8.0, "decompose_both": False, "decompose_factor": -1},
    "peft_vera": {"r": 256, "d_initial": 0.1},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# what each reference hyper-parameter must be: (test, what the error says is expected)
_PEFT_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "r": (lambda v: _is_int(v) and 1 <= v <= 1 << 20, "a positive integer"),
    "alpha": (lambda v: _is_real(v) and v > 0, "a positive finite number"),
    "dropout": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "decompose_both": (lambda v: isinstance(v, bool), "true or false"),
    "decompose_factor": (lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 or a positive integer"),
    "d_initial": (lambda v: _is_real(v), "a finite number"),
}
_BUILDER = re.compile(r"[A-Za-z_][\w.]*")
_IDENT = re.compile(r"[A-Za-z_]\w*")


@dataclass
class AdapterSpec:
    """A row of a comparison: ``label`` (the spec text), ``name`` (a method, ``module:function``, a
    graph file or one of peft's own tuners, :data:`PEFT_REFERENCES`), its ``hparams`` and what
    :func:`inject` takes (``method``; for peft's tuners, the spec name)."""

    label: str
    name: str
    hparams: dict[str, Any] = field(default_factory=dict)
    method: Any = None

    @property
    def is_peft(self) -> bool:
        return self.name in PEFT_REFERENCES

    @property
    def method_name(self) -> str:
        """The method the row runs: ``peft_loha`` → ``loha``; a tnpeft row's own name."""
        return self.name.removeprefix("peft_") if self.is_peft else self.name


def split_spec_items(text: str) -> list[str]:
    """``a=1,b=[2,3]`` → ``["a=1", "b=[2,3]"]`` (commas inside brackets or quotes stay)."""
    items, depth, cur, quote = [], 0, "", False
    for ch in text:
        if ch == '"':
            quote = not quote
        elif not quote and ch in "[{":
            depth += 1
        elif not quote and ch in "]}":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i for i in items if i.strip()]


def parse_adapter_spec(text: Any) -> AdapterSpec:
    """``NAME[:key=value,...]`` as an :class:`AdapterSpec`, checked (unknown adapters and
    hyper-parameters are a :class:`ConfigError` naming the spec)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"adapter spec {text!r}: expected NAME[:key=value,...], e.g. lora:r=8", field="adapters")
    parts = text.split(":")
    if (len(parts) >= 2 and parts[0] not in METHODS and parts[0] not in PEFT_REFERENCES and _BUILDER.fullmatch(parts[0])
            and _IDENT.fullmatch(parts[1])):
        name, rest = f"{parts[0]}:{parts[1]}", ":".join(parts[2:])
    else:
        name, rest = parts[0], ":".join(parts[1:])
    hparams: dict[str, Any] = {}
    for item in split_spec_items(rest):
        k, eq, v = item.partition("=")
        if not eq or not _IDENT.fullmatch(k.strip()):
            raise ConfigError(f"adapter spec {text!r}: hyper-parameter {item!r} must be written key=value "
                              "(e.g. lora:r=8,alpha=16)", field="adapters")
        try:
            hparams[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            hparams[k.strip()] = v
    if name in PEFT_REFERENCES:
        defaults = PEFT_REFERENCES[name]
        bad = sorted(set(hparams) - set(defaults))
        if bad:
            raise ConfigError(f"adapter spec {text!r}: {name} takes {sorted(defaults)}, not {bad}", field="adapters")
        hp = {**defaults, **hparams}
        for key in defaults:
            ok, want = _PEFT_CHECKS[key]
            if not ok(hp[key]):
                raise ConfigError(f"adapter spec {text!r}: {name}'s {key} is {hp[key]!r}; expected {want}",
                                  field="adapters")
        return AdapterSpec(text, name, hp, name)
    try:
        method = train_method(name, hparams)
        check_hparams(method, hparams)
    except ConfigError as e:
        raise ConfigError(f"adapter spec {text!r}: {e}", field="adapters") from None
    return AdapterSpec(text, name, hparams, method)



def lr_centre(spec: AdapterSpec, centres: dict[str, float] | None = None) -> float:
    """The centre of a spec's default grid: ``centres[name]`` if given, else the registered
    method's ``learning_rate`` (peft's tuners: tnpeft's method of that name), else
    :data:`DEFAULT_LEARNING_RATE`."""
    if centres and spec.name in centres:
        return float(centres[spec.name])
    method = METHODS.get(spec.method_name)
    return method.learning_rate if method is not None else DEFAULT_LEARNING_RATE


def default_lrs(spec: AdapterSpec, centres: dict[str, float] | None = None) -> list[float]:
    """The default grid of a spec: its centre (:func:`lr_centre`) ÷ 3, × 1, × 3 (two significant
    digits)."""
    c = lr_centre(spec, centres)
    return [float(f"{c / 3:.2g}"), c, float(f"{c * 3:.2g}")]


def check_lrs(lrs: Any, where: str) -> list[float]:
    if not isinstance(lrs, (list, tuple)) or not lrs:
        raise ConfigError(f"{where}: the learning-rate grid is empty; give at least one rate, e.g. 1e-3",
                          field="lrs")
    for v in lrs:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= MAX_LR:
            raise ConfigError(f"{where}: learning rate {v!r} must be a positive finite number up to {MAX_LR:g}",
                              field="lrs")
    return sorted({float(v) for v in lrs})


def parse_lr_grid(items: list[str]) -> dict[str, list[float]]:
    """``["quantum_peft=1e-3,3e-3", "lora:r=1=1e-3"]`` → ``{key: rates}`` (the key: an adapter's
    spec text or its method name; the rates follow the last ``=``)."""
    out: dict[str, list[float]] = {}
    for item in items:
        key, eq, vals = item.rpartition("=")
        try:
            rates = [float(v) for v in vals.split(",") if v.strip()]
        except ValueError:
            rates = None
        if not eq or not key or rates is None:
            raise ConfigError(f"--lr-grid {item!r}: expected ADAPTER=LR,LR,... (e.g. quantum_peft=1e-3,3e-3)",
                              field="lr_grid")
        out[key] = check_lrs(rates, f"--lr-grid {item!r}")
    return out


@dataclass
class Context:
    """What every cell shares: the model, the splits, the budget (read by :mod:`tnpeft.train.cells`)."""

    model: str
    task: str
    train: Any
    val: Any
    test: Any
    num_labels: int
    steps: int | None
    epochs: int
    batch_size: int
    max_length: int
    target_modules: Any = None
    exclude_modules: list[str] | None = None
    warmup_steps: int = 20
    warmup_fraction: float = 0.1
    eval_every: int = 0           # validate every N steps (a curve in each cell); 0: only at the end
    patience: int = 0             # with eval_every: stop after this many evaluations without improvement
    weight_decay: float = 0.0
    eval_batch_size: int = 128
    progress: bool = True
    device: str = "cpu"
    fingerprint: dict[str, Any] = field(default_factory=dict)


def select_lr(val_by_lr: dict[float, list[float | None]], maximize: bool) -> float | None:
    """The learning rate of the best validation mean (a rate with a diverged seed, ``None``, is not
    selectable); ties go to the smaller rate. ``None`` when every rate diverged."""
    ok = {lr: statistics.fmean(cast(list[float], v)) for lr, v in val_by_lr.items() if v and all(x is not None for x in v)}
    if not ok:
        return None
    return min(ok, key=lambda lr: ((-ok[lr] if maximize else ok[lr]), lr))


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value; None for none)."""
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def load_splits(data: str, task: str, model: str, train_size: int | None, val_size: int, test_size: int,
                 max_length: int, text_column: str, label_column: str) -> tuple[Any, Any, Any, int]:
    """Train / validation / test, disjoint and the same for every cell: the held-out rows of a fixed
    shuffle (or the last blocks of a text) are cut into validation then test."""
    held = val_size + test_size
    if task == "classification":
        tr, ho = load_classification(data, text_column=text_column, label_column=label_column,
                                     train_size=train_size, test_size=held, seed=0)
        if len(ho) < held:
            raise ConfigError(f"{data}: {len(ho)} held-out rows, fewer than --val-size + --test-size = {held}",
                              field="test_size")

        def cut(a: int, b: int) -> ClassificationData:
            return ClassificationData(ho.texts[a:b], ho.labels[a:b], ho.label_names)
        return tr, cut(0, val_size), cut(val_size, held), len(tr.label_names)
    tok = load_model(model, task).tokenizer
    lm_tr, lm_ho = load_lm(data, tok, block=max_length, text_column=text_column, train_size=train_size, test_size=held)
    if len(lm_ho) < held or len(lm_tr) == 0:
        raise ConfigError(f"{data}: the text makes {len(lm_tr) + len(lm_ho)} blocks of {max_length} tokens, too few "
                          f"for --val-size + --test-size = {held} held-out blocks and a training set", field="test_size")
    return lm_tr, LMData(lm_ho.blocks[:val_size]), LMData(lm_ho.blocks[val_size:held]), 0


def check_positive(name: str, v: Any, allow_none: bool = False) -> None:
    if allow_none and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}", field=name)


def cell_dir(out: Path, spec: AdapterSpec, lr: float, seed: int) -> Path:
    slug = re.sub(r"[^\w.=,+-]+", "_", spec.label)[:60]
    tag = hashlib.sha256(spec.label.encode()).hexdigest()[:6]
    return out / "cells" / f"{slug}-{tag}" / f"lr={lr:g}" / f"seed={seed}"


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_done(path: Path, want: str, metrics: tuple[str, ...] = (), base: bool = False) -> dict[str, Any] | None:
    """A finished cell's record (``cell.json``, or ``test.json`` with its ``test`` metrics, or with
    ``base`` the model's own ``val`` and ``test`` figures), or ``None``; every field the comparison
    reads is checked (a :class:`ConfigError` names the field)."""
    if not path.exists():
        return None
    rec = read_json(path, "comparison cell", error=lambda m: ConfigError(m, field="out"))
    if not isinstance(rec, dict) or rec.get("config_hash") != want:
        raise ConfigError(f"{path} belongs to a comparison with other settings (model, data, split, budget or "
                          "adapter); use another --out or delete that folder", field="out")

    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def scores(v: Any, more: tuple[str, ...] = ()) -> bool:
        return isinstance(v, dict) and all(num(v.get(m)) for m in (*metrics, *more))
    fields: dict[str, tuple[Callable[[Any], bool], str]] = {"test": (lambda v: scores(v, ("eval_seconds",)), f"an object of numbers {[*metrics, 'eval_seconds']}")} \
        if path.name == "test.json" else {split: (scores, f"an object of numbers {list(metrics)}") for split in ("val", "test")} \
        if base else {
        "val": (lambda v: v is None or scores(v), f"null or an object of numbers {list(metrics)}"),
        "adapter_parameters": (lambda v: num(v) and v >= 0 and int(v) == v, "a non-negative integer"),
        "head_parameters": (lambda v: num(v) and v >= 0 and int(v) == v, "a non-negative integer"),
        "step_seconds_median": (lambda v: v is None or num(v), "null or a number"),
        "peak_memory_mb": (lambda v: v is None or num(v), "null or a number"),
        "train_loss": (lambda v: isinstance(v, list) and all(num(x) for x in v), "a list of numbers")}
    for name, (ok, want_text) in fields.items():
        if name not in rec or not ok(rec[name]):
            raise ConfigError(f"{path}: field {name!r} is {rec.get(name, '(missing)')!r}; expected {want_text} — the "
                              "file was edited or is corrupt: delete it and run the same command to redo the cell",
                              field="out")
    return rec


def learning_rate_grid(specs: list[AdapterSpec], lrs: list[float] | None, lr_grid: dict[str, list[float]] | None,
                       lr_centres: dict[str, float] | None) -> dict[str, list[float]]:
    """Each adapter's learning rates: ``lrs`` for all, else its default grid (:func:`default_lrs`),
    with ``lr_grid`` entries (by spec label, or by method name for every spec of that method)
    taking precedence."""
    grid = {s.label: default_lrs(s, lr_centres) for s in specs}
    if lrs is not None:
        lrs = check_lrs(lrs, "--lrs")
        grid = {k: list(lrs) for k in grid}
    for key, rates in (lr_grid or {}).items():
        hit = [s for s in specs if key in (s.label, s.name)]
        if not hit:
            raise ConfigError(f"--lr-grid {key!r} names no adapter of --adapters ({', '.join(grid)})", field="lr_grid")
        for s in hit:
            if key == s.label or not any(k == s.label for k in lr_grid or {}):
                grid[s.label] = check_lrs(rates, f"--lr-grid {key!r}")
    return grid
