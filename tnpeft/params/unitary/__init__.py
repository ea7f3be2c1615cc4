r"""Unitary nodes: ``N×K`` matrices with orthonormal columns (points of the Stiefel manifold
``V_K(N)``), produced from free parameters so that ``UᵀU = I`` holds by construction at every
step — never by a penalty, never by a truncated series.

Every parametrization takes a leading *batch* shape (a block-diagonal OFT is a batch of small
rotations) and returns ``(*batch, N, K)``. None of them forms an ``N×N`` matrix: each applies its
maps to the ``K`` columns of ``I_{N×K}`` directly.

==============  ====================================================  ===========================
name            construction                                          parameters (per batch item)
==============  ====================================================  ===========================
``pauli``       real two-design circuit (RY + CZ layers) on           ``n + 2L(⌊n/2⌋ + ⌊(n−1)/2⌋)``
                ``n = log₂ N`` qubits; any other ``N`` by a           for ``N = 2ⁿ``; see
                cosine–sine split (:mod:`.pauli`)                     :func:`pauli_count`
``cayley``      ``(I − A)(I + A)⁻¹``, ``A`` skew of rank ≤ 2K′        ``N·K′``
``exp``         ``exp(A)``, same skew matrix                          ``N·K′``
``taylor``      ``Σ_{j≤order} Aʲ/j!`` then a QR retraction            ``N·K′``
``householder`` ``H₁⋯H_{K′}``, ``Hⱼ = I − 2uⱼuⱼᵀ``                     ``N·K′``
``givens``      butterfly layers of disjoint 2×2 rotations            ``Σ_layers ⌊pairs⌋``
``cayley_packed`` ``(I − A)(I + A)⁻¹``, ``A`` from a packed triangle   ``N(N−1)/2``
``cayley_neumann`` its truncated Neumann series (peft OFT; *not*      ``N(N−1)/2``
                orthogonal: registered ``exact=False``)
==============  ====================================================  ===========================

``K′`` is the *intrinsic rank* (option ``intrinsic_rank``, default ``K``): the skew factor of
``cayley``/``exp``/``taylor`` has ``K′`` columns, ``householder`` uses ``K′`` reflections.
``pauli`` and ``givens`` accept ``bits`` to quantize their angles to ``2^bits`` levels with a
straight-through estimator.

Modules: :mod:`.registry` (the name → parametrization table), :mod:`.base` (the module base
class), :mod:`.scope` (batching across layers), and one module per family: :mod:`.pauli`,
:mod:`.skew`, :mod:`.reflections`.
"""

from __future__ import annotations

from typing import Callable

from tnpeft.circuits.circuit import circuit_angle_count
from tnpeft.params.unitary.base import AngleFrame, FrameModule, eye_frames, init_angles, quantize_ste
from tnpeft.params.unitary.packed import NeumannCayleyFrame, PackedCayleyFrame, packed_count
from tnpeft.params.unitary.pauli import (
    PauliFrame,
    apply_circuit,
    is_pow2,
    next_pow2,
    pauli_count,
    pauli_param_count,
    project_rows,
)
from tnpeft.params.unitary.reflections import GivensFrame, HouseholderFrame, butterfly_pairs, givens_count
from tnpeft.params.unitary.registry import UNITARY_PARAMS, UnitaryParametrization, register_unitary
from tnpeft.params.unitary.scope import FrameScope
from tnpeft.params.unitary.skew import CayleyFrame, ExpFrame, SkewFrame, TaylorFrame


def _build(cls: Callable[..., FrameModule]) -> Callable[..., FrameModule]:
    return lambda n, k, batch=(), dtype=None, device=None, rng=None, **o: cls(
        n, k, batch, dtype=dtype, device=device, rng=rng, **o)


register_unitary(UnitaryParametrization("pauli", pauli_param_count, _build(PauliFrame), ("layers", "bits", "init", "pow2"),
                                        identity_init=False))
for _name, _cls, _opts in (("cayley", CayleyFrame, ("intrinsic_rank", "init")),
                           ("exp", ExpFrame, ("intrinsic_rank", "init")),
                           ("taylor", TaylorFrame, ("intrinsic_rank", "order", "init")),
                           ("householder", HouseholderFrame, ("intrinsic_rank", "init"))):
    register_unitary(UnitaryParametrization(
        _name, lambda n, k, intrinsic_rank=None, order=2, init="random": n * min(intrinsic_rank or k, n),
        _build(_cls), _opts, inits=("paired",) if _name == "householder" else ()))
register_unitary(UnitaryParametrization("cayley_packed", lambda n, k, init="random": packed_count(n),
                                        _build(PackedCayleyFrame), ("init",)))
register_unitary(UnitaryParametrization("cayley_neumann", lambda n, k, init="random", terms=5: packed_count(n),
                                        _build(NeumannCayleyFrame), ("init", "terms"), exact=False))
register_unitary(UnitaryParametrization("givens", lambda n, k, layers=None, bits=None, init="random": givens_count(n, layers),
                                        _build(GivensFrame), ("layers", "bits", "init")))

__all__ = ["UNITARY_PARAMS", "UnitaryParametrization", "register_unitary", "FrameScope", "FrameModule", "AngleFrame",
           "PauliFrame", "PackedCayleyFrame", "NeumannCayleyFrame", "packed_count", "SkewFrame", "CayleyFrame", "ExpFrame", "TaylorFrame", "HouseholderFrame", "GivensFrame",
           "pauli_count", "givens_count", "circuit_angle_count", "apply_circuit", "quantize_ste", "eye_frames",
           "init_angles", "is_pow2", "butterfly_pairs", "next_pow2", "pauli_param_count", "project_rows"]
