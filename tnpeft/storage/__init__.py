"""Where graphs and their values are kept: graph folders (``graph.json`` + ``graph.safetensors``),
saved-adapter folders read without a model, and :func:`graph_modules`, which reads "an adapter"
from any source (a graph, a runtime, a mapping of them, a file or folder, or a source a higher
floor registers)."""

from tnpeft.storage.adapter_folder import read_adapter, read_adapter_modules, split_adapter_state
from tnpeft.storage.graph_folder import LoadedGraph, load_graph, save_graph
from tnpeft.storage.sources import graph_modules, register_source, resolve_graph_module

__all__ = ["save_graph", "load_graph", "LoadedGraph", "read_adapter", "read_adapter_modules", "split_adapter_state",
           "graph_modules", "register_source", "resolve_graph_module"]
