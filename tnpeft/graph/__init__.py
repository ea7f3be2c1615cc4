"""The graph definition: nodes wired by named indices, hyper-network specs, the validated
:class:`Graph` and its schedule. A graph is structure only — a value that can be shared, hashed
and compared; its tensors live in a runtime (:class:`tnpeft.runtime.GraphModule`)."""

from tnpeft.graph.basis import Basis, Fourier
from tnpeft.graph.graph import Graph
from tnpeft.graph.hypernetwork import HyperNetwork
from tnpeft.graph.nodes import NODE_KINDS, Dense, Diagonal, Node, Nonlinear, Share, Unitary, node_from_dict
from tnpeft.graph.schedule import ApplyStep, ContractStep, Schedule
from tnpeft.graph.sharing import count_parameters, full_node, shared_nodes, shared_users

__all__ = ["Graph", "Node", "HyperNetwork", "Dense", "Diagonal", "Unitary", "Nonlinear", "Basis", "Fourier", "Share", "NODE_KINDS",
           "node_from_dict", "ContractStep", "ApplyStep", "Schedule", "count_parameters", "shared_nodes",
           "shared_users", "full_node"]
