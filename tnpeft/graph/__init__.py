"""The graph IR: nodes wired by named indices, a validated :class:`Graph`, its values
(:class:`GraphModule`) and its files (JSON + safetensors)."""

from tnpeft.graph.graph import ApplyStep, ContractStep, Graph
from tnpeft.graph.module import GraphModule
from tnpeft.graph.nodes import NODE_KINDS, Dense, Diagonal, Generator, Node, Nonlinear, Unitary, node_from_dict

__all__ = ["Graph", "GraphModule", "Node", "Generator", "Dense", "Diagonal", "Unitary", "Nonlinear", "NODE_KINDS",
           "node_from_dict", "ContractStep", "ApplyStep"]
