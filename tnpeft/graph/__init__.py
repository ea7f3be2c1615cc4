"""The graph IR: nodes wired by named indices, a validated :class:`Graph` (structure), its values
(:class:`GraphModule`), its schedule, its files (JSON + safetensors, graphs and saved adapters),
the merge arithmetic, and :func:`graph_modules`, which reads "an adapter" from any source."""

from tnpeft.graph.adapter_files import read_adapter, read_adapter_modules, split_adapter_state
from tnpeft.graph.algebra import Combination, compress, low_rank_factors, truncate_factors, weighted_sum
from tnpeft.graph.files import load_graph, save_graph
from tnpeft.graph.graph import Graph
from tnpeft.graph.hypernetwork import HyperNetwork
from tnpeft.graph.merge import delta_weight, merged_weight, unmerged_weight
from tnpeft.graph.module import GraphModule
from tnpeft.graph.nodes import NODE_KINDS, Dense, Diagonal, Node, Nonlinear, Unitary, node_from_dict
from tnpeft.graph.schedule import ApplyStep, ContractStep, Schedule
from tnpeft.graph.sources import graph_modules, register_source, resolve_graph_module

__all__ = ["Graph", "GraphModule", "Node", "HyperNetwork", "Dense", "Diagonal", "Unitary", "Nonlinear", "NODE_KINDS",
           "node_from_dict", "ContractStep", "ApplyStep", "Schedule", "save_graph", "load_graph", "read_adapter",
           "read_adapter_modules", "split_adapter_state", "graph_modules", "register_source", "resolve_graph_module",
           "delta_weight", "merged_weight", "unmerged_weight", "weighted_sum", "compress", "low_rank_factors",
           "truncate_factors", "Combination"]
