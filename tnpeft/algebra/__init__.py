"""Graph algebra on adapters with values: two matrices from a graph, weighted sums, compression.

A linear additive graph's update ``s·ΔW`` is a fixed ``out × in`` matrix. Three operations work on
any such graph, built-in or a user's, without forming ``ΔW`` unless they must:

* :func:`low_rank_factors` — ``s·ΔW = B A`` exactly, with ``B`` of shape ``out × r`` and ``A`` of
  ``r × in``. The graph is cut in two along the cheapest set of bond indices that separates the
  nodes holding the input leg(s) from those holding the output leg(s); each half is contracted on
  its own, so ``r`` is the product of the cut bonds' sizes (Quantum-PEFT: ``B = U Λ s``,
  ``A = Vᵀ``; AdaLoRA: ``B = P Λ s``, ``A = Q``; an MPO: its rank bonds). A graph that cannot be
  cut below ``min(out, in)`` (a single dense node, pass-through legs) gives ``ΔW`` itself and an
  identity at rank ``min(out, in)``.
* :func:`weighted_sum` — ``Σ wᵢ sᵢ ΔWᵢ`` as *one* graph with values. ``"cat"`` is exact: graphs of
  one topology whose nodes are all joined by bond indices are summed by the direct sum of their
  bonds (each bond's size is the sum of the parts' sizes, each node block-diagonal in its bonds —
  the topology is kept, e.g. two MPOs give an MPO); any other mix is summed as the concatenation of
  the parts' :func:`low_rank_factors` (a LoRA-shaped graph of rank ``Σ rᵢ``). ``"linear"`` (graphs
  of one topology and equal sizes) is peft's "linear" combination: each part's factor ``wᵢ sᵢ`` is
  spread evenly over its ``k`` nodes (``|wᵢ sᵢ|^{1/k}`` on each, the sign on the first) and the
  nodes are summed — the size of one part, exact for one part only (the cross terms between parts
  remain); its error against the exact sum is reported. ``"svd"``: the exact sum, :func:`compress`-ed.
* :func:`compress` — a truncated SVD of the update at a given rank, from the factors (a QR of each,
  an SVD of an ``r × r`` core), with the relative Frobenius error ``‖s·ΔW − B′A′‖ / ‖s·ΔW‖``.

The results are :class:`Combination` records holding a new :class:`GraphModule` (its graph has
dense and diagonal nodes only, scale 1: weights and scales are folded into the values); a result
whose values or update overflow its dtype, or NaN / infinite inputs, raise
:class:`~tnpeft.errors.NonFiniteError`. Nonlinear graphs (QWTHN) and input-mode graphs (OFT,
``W' = W R``) have no update to add and are refused with a :class:`~tnpeft.errors.NotMergeableError`.
"""

from tnpeft.algebra.factors import (
    MAX_CUT_SEARCH,
    Combination,
    as_module,
    check_additive,
    cut_rank,
    lora_graph_module,
    low_rank_factors,
    truncate_factors,
)
from tnpeft.algebra.sums import COMBINATION_TYPES, compress, finite_weight, weighted_sum

__all__ = ["Combination", "COMBINATION_TYPES", "MAX_CUT_SEARCH", "as_module", "check_additive", "compress",
           "cut_rank", "finite_weight", "low_rank_factors", "lora_graph_module", "truncate_factors", "weighted_sum"]
