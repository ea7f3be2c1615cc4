"""The graph definition: nodes wired by named indices, hyper-network specs, the validated
:class:`Graph` and its schedule. A graph is structure only — a value that can be shared, hashed
and compared; its tensors live in a runtime (:class:`tnpeft.runtime.GraphModule`)."""

from tnpeft.graph.graph import Graph
from tnpeft.graph.hypernetwork import HyperNetwork
from tnpeft.graph.nodes import NODE_KINDS, Dense, Diagonal, Node, Nonlinear, Unitary, node_from_dict
from tnpeft.graph.schedule import ApplyStep, ContractStep, Schedule

__all__ = ["Graph", "Node", "HyperNetwork", "Dense", "Diagonal", "Unitary", "Nonlinear", "NODE_KINDS",
           "node_from_dict", "ContractStep", "ApplyStep", "Schedule"]
