"""Graph files: ``graph.json`` (structure, hyper-parameters) + ``graph.safetensors`` (values)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tnpeft.errors import AdapterFileError, TNPeftError
from tnpeft.fileio import atomic_write_bytes, atomic_write_json, read_json, read_safetensors, sha256, tensors_to_bytes
from tnpeft.graph.graph import Graph


def save_graph(graph: Graph, directory: str | os.PathLike) -> None:
    """Write the graph's structure and values; the JSON records the weights' checksum."""
    d = Path(directory)
    blob = tensors_to_bytes(graph.module.state_dict(), metadata={"format": "pt"})
    atomic_write_bytes(d / "graph.safetensors", blob)
    meta = graph.to_dict()
    meta["weights_sha256"] = sha256(blob)
    atomic_write_json(d / "graph.json", meta)


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`AdapterFileError` unless ``state`` has exactly the module's keys, shapes and
    floating dtypes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise AdapterFileError(f"{where}: missing tensors {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                               f"unexpected tensors {extra[:5]}{'…' if len(extra) > 5 else ''}")
    for k, v in own.items():
        got = state[k]
        if tuple(got.shape) != tuple(v.shape):
            raise AdapterFileError(f"{where}: tensor {k!r} has shape {tuple(got.shape)}, expected {tuple(v.shape)}")
        if not got.is_floating_point():
            raise AdapterFileError(f"{where}: tensor {k!r} has dtype {got.dtype}, expected a floating-point dtype")
        if not torch.isfinite(got).all():
            raise AdapterFileError(f"{where}: tensor {k!r} holds NaN or infinite values")


def load_graph(directory: str | os.PathLike) -> Graph:
    """Read a graph written by :func:`save_graph` (JSON is parsed as data; no code is executed)."""
    d = Path(directory)
    meta = read_json(d / "graph.json", "graph file")
    if not isinstance(meta, dict):
        raise AdapterFileError(f"graph file {str(d / 'graph.json')!r} must hold a JSON object")
    checksum = meta.pop("weights_sha256", None)
    try:
        graph = Graph.from_dict(meta)
    except TNPeftError as e:
        raise AdapterFileError(f"graph file {str(d / 'graph.json')!r}: {e}") from None
    state = read_safetensors(d / "graph.safetensors", checksum)
    check_state(graph.module, state, f"weights file {str(d / 'graph.safetensors')!r}")
    graph.module.load_state_dict(state)
    return graph
