"""Graph files: ``graph.json`` (structure, hyper-parameters) + ``graph.safetensors`` (values).

``save_graph(module, dir)`` writes a :class:`GraphModule`'s structure and values;
``load_graph(dir)`` returns both, explicitly: ``graph, module = load_graph(dir)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from tnpeft.errors import AdapterFileError, ConfigError, TNPeftError
from tnpeft.fileio import (
    GRAPH,
    atomic_write_pair,
    checkpoint_folder,
    read_json,
    read_safetensors,
    sha256,
    tensors_to_bytes,
)
from tnpeft.graph.graph import Graph
from tnpeft.runtime.module import GraphModule
from tnpeft.storage.adapter_folder import cast_state, check_state, upgrade_state


class LoadedGraph(NamedTuple):
    """What :func:`load_graph` returns: the structure and a runtime holding the saved values."""

    graph: Graph
    module: GraphModule


def save_graph(module: GraphModule, directory: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Write a graph's structure and values — a :class:`GraphModule` — into ``directory`` (created
    if needed); the JSON records the weights' checksum. A bare :class:`Graph` holds no values and is
    refused (save ``GraphModule(graph)``). A folder holding a checkpoint of another kind (an adapter,
    a model) is refused unless ``overwrite`` (:func:`tnpeft.fileio.checkpoint_folder`)."""
    if isinstance(module, Graph):
        raise ConfigError("save_graph needs values: a Graph is structure only; pass GraphModule(graph) (or the "
                          "module of an adapted layer)", field="module")
    if not isinstance(module, GraphModule):
        raise ConfigError(f"save_graph takes a GraphModule, got {type(module).__name__}", field="module")
    d = Path(directory)
    blob = tensors_to_bytes(module.state_dict(), metadata={"format": "pt"})
    meta = module.graph.to_dict()
    meta["weights_sha256"] = sha256(blob)
    with checkpoint_folder(d, GRAPH, overwrite=overwrite):   # the previous pair stays loadable until the new one is in
        atomic_write_pair(d, "graph.safetensors", blob, "graph.json", meta)


def load_graph(directory: str | os.PathLike[str], finite: bool = True) -> LoadedGraph:
    """Read a graph written by :func:`save_graph`: ``(graph, module)``, the module holding the saved
    values (JSON is parsed as data; no code is executed). ``finite=False`` accepts NaN and infinite
    values."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise AdapterFileError(f"graph folder {str(d)!r} is a file, not a folder")
    meta = read_json(d / "graph.json", "graph file")
    if not isinstance(meta, dict):
        raise AdapterFileError(f"graph file {str(d / 'graph.json')!r} must hold a JSON object")
    checksum = meta.pop("weights_sha256", None)
    try:
        graph = Graph.from_dict(meta)
    except TNPeftError as e:
        raise AdapterFileError(f"graph file {str(d / 'graph.json')!r}: {e}") from None
    module = GraphModule(graph, device="meta")        # the bound on the weights file, allocating nothing
    limit = (16 << 20) + 8 * sum(t.numel() for t in module.state_dict().values())
    where = f"weights file {str(d / 'graph.safetensors')!r}"
    state = upgrade_state(module, read_safetensors(d / "graph.safetensors", checksum, max_bytes=limit))
    check_state(module, state, where)                 # before the real module allocates its values
    module = GraphModule(graph)
    state = cast_state(module, state, where, finite)
    module.load_state_dict(state)
    return LoadedGraph(graph, module)
