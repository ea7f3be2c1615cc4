"""The runtime: a graph's values and its torch forward. :class:`GraphModule` holds one
parametrization per node and runs the graph's schedule (planned contractions, frames applied to
the activation, nonlinear maps); :mod:`~tnpeft.runtime.weight_update` is the merge arithmetic."""

from tnpeft.runtime.module import GraphModule
from tnpeft.runtime.node_values import build_param
from tnpeft.runtime.shared_values import SharedValues
from tnpeft.runtime.weight_update import delta_weight, merged_bias, merged_weight, unmerged_bias, unmerged_weight

__all__ = ["GraphModule", "SharedValues", "build_param", "delta_weight", "merged_weight", "unmerged_weight",
           "merged_bias", "unmerged_bias"]
