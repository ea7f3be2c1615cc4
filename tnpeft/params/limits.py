"""Size budgets: how large a graph, a node or a parametrization may be.

Structure limits (index sizes, nodes per graph, indices per node, QNN inputs, qubits, angle bits)
are checked when a graph is built, from Python or from a file. Allocation budgets (elements of a
node's tensor, of all of a graph's tensors, trainable parameters) are checked on the graph
(:meth:`tnpeft.Graph.check_budget`) before a module of it allocates anything — also on the meta
device, so loading a file checks them before reading its weights — while a graph as a value may be
larger: ``num_parameters()`` still counts a hypothetical 10⁶ × 10⁶ layer. A small, hostile file
therefore cannot make tnpeft allocate gigabytes or build huge Python structures. The limits are
generous for real adapters (a dense ΔW of a 32,768 × 32,768 layer fits) and plain module
attributes: a program that needs more may raise them.
"""

from __future__ import annotations

#: the largest size of one index
MAX_INDEX_SIZE = 1 << 40
#: the most elements one node's tensor may have (the product of its sizes; a unitary node's frames)
MAX_TENSOR_ELEMENTS = 1 << 31
#: the most elements all node tensors of one graph may have together (what a forward materializes)
MAX_GRAPH_ELEMENTS = 1 << 32
#: the most trainable parameters one graph may have (its nodes' and hyper-networks' together)
MAX_PARAMETERS = 1 << 31
#: the most nodes one graph may have
MAX_NODES = 4096
#: the most indices one node may have
MAX_NODE_INDICES = 64
#: the most input features a QNN node reads (each is one angle-encoding gate)
MAX_QNN_INPUTS = 1 << 16
#: the most qubits of a simulated circuit (QNN nodes, QPA's hyper-network): 2^20 amplitudes per sample
MAX_QUBITS = 20
#: the most bits a quantized angle may have: 2^52 levels is float64's resolution on the circle
MAX_ANGLE_BITS = 52
#: the most elements of the dense ΔW that ``tnpeft.verify`` builds for its dense checks; above it the
#: forward is compared with a sampled block of ΔW and the merge round trip is skipped (the report says so)
MAX_DENSE_CHECK_ELEMENTS = 1 << 26
