"""The contraction engine: an einsum network (operands named by index tuples) → a cotengra
contraction tree, turned once into a list of pairwise torch contractions and cached.

This floor knows nothing of graphs or adapters: it plans and runs networks of named indices.
:mod:`tnpeft.graph` turns an adapter graph into such networks.
"""

from tnpeft.contract.plan import (
    ContractionPlan,
    PlanStats,
    PlanStep,
    PlanView,
    check_optimizer,
    count_cache_hit,
    plan_for,
    plan_stats,
    reset_plan_cache,
)

__all__ = ["ContractionPlan", "PlanView", "PlanStep", "PlanStats", "plan_for", "plan_stats", "reset_plan_cache", "count_cache_hit",
           "check_optimizer"]
