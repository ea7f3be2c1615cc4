"""Parametrizations: free trainable tensors in, constrained node tensors out.

Each node kind of the graph IR has a parametrization here. A parametrization is a small
``nn.Module`` whose ``forward()`` returns the node's tensor; its closed-form parameter count is
available without allocating anything, so that :meth:`tnpeft.Graph.num_parameters` is instant.
Circuits (:mod:`tnpeft.circuits.circuit`) are data here too, with the statevector simulator that
QNN nodes and QPA's hyper-network run on.
"""

from tnpeft.params.affine import BiasMap
from tnpeft.params.dense import DENSE_INITS, BasisVector, DenseParam, FourierBasis, fourier_frequencies, init_dense
from tnpeft.params.diagonal import DIAGONAL_INITS, DiagonalParam
from tnpeft.params.functions import FUNCTIONS, get_function
from tnpeft.params.hypernetworks import HYPERNETWORKS
from tnpeft.params.qnn import NONLINEAR_MAPS
from tnpeft.params.unitary import UNITARY_PARAMS, UnitaryParametrization, register_unitary

__all__ = [
    "DenseParam",
    "BasisVector",
    "BiasMap",
    "FourierBasis",
    "fourier_frequencies",
    "DiagonalParam",
    "DENSE_INITS",
    "DIAGONAL_INITS",
    "FUNCTIONS",
    "HYPERNETWORKS",
    "NONLINEAR_MAPS",
    "get_function",
    "init_dense",
    "UNITARY_PARAMS",
    "UnitaryParametrization",
    "register_unitary",
]
