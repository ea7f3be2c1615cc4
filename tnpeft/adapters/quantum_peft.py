"""Quantum-PEFT (Koike-Akino et al., ICLR 2025, arXiv 2503.05431) as a three-node graph."""

from __future__ import annotations

from typing import Any

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.errors import ConfigError
from tnpeft.graph import Diagonal, Graph, Unitary
from tnpeft.params import UNITARY_PARAMS

_CIRCUIT_PARAMS = ("pauli", "givens")


def _check_arguments(in_features: int, out_features: int, rank: int, layers: int, param: str,
                     intrinsic_rank: int | None, bits: int | None, pow2: bool) -> None:
    """Raise a :class:`ConfigError` naming the field unless the hyper-parameters make a graph."""
    check_positive_int("quantum_peft", "rank", rank)
    check_positive_int("quantum_peft", "layers", layers)
    if param not in UNITARY_PARAMS:
        raise ConfigError(f"quantum_peft: unknown param {param!r}; expected one of {sorted(UNITARY_PARAMS)}",
                          field="param")
    if not UNITARY_PARAMS[param].exact:
        raise ConfigError(f"quantum_peft: param {param!r} is not orthogonal (a truncated series); U and V need "
                          "orthonormal columns", field="param")
    if rank > min(in_features, out_features):
        raise ConfigError(f"quantum_peft: rank {rank} exceeds min(in_features, out_features) = "
                          f"{min(in_features, out_features)}; orthonormal columns need K ≤ N", field="rank")
    if intrinsic_rank is not None:
        check_positive_int("quantum_peft", "intrinsic_rank", intrinsic_rank)
        if intrinsic_rank > rank:
            raise ConfigError(f"quantum_peft: intrinsic_rank {intrinsic_rank} exceeds rank {rank}",
                              field="intrinsic_rank")
    if bits is not None:
        check_positive_int("quantum_peft", "bits", bits)
        if param not in _CIRCUIT_PARAMS:
            raise ConfigError(f"quantum_peft: bits quantizes circuit angles; param {param!r} has none "
                              f"(use one of {list(_CIRCUIT_PARAMS)})", field="bits")
    if not isinstance(pow2, bool) or (pow2 and param != "pauli"):
        raise ConfigError(f"quantum_peft: pow2 (true/false) pads the 'pauli' circuit to a power of two; got pow2={pow2!r} "
                          f"with param {param!r}", field="pow2")


@register("quantum_peft", paper="Koike-Akino et al., ICLR 2025, arXiv 2503.05431", aliases={"r": "rank"},
          learning_rate=2e-2, advice=(
    "Raise the rank before the layers: the frames' parameters do not grow with the rank, only Λ does (K per "
    "module: rank 8 → 64 adds 56 parameters per adapted layer); on tweets at 3 epochs ranks 8, 32, 64, 128 reached "
    "0.749, 0.759, 0.764, 0.770 (3 seeds each), rank 128 1.0 point below LoRA r=8 with 35x fewer parameters; a "
    "second layer (+84 parameters per adapted layer at any rank) added 1.0 point at rank 8 and 0.15 at rank 128 (0.772, the best "
    "row), less than the same parameters spent on the rank. Needs "
    "about 10× LoRA's learning rate (2e-2). For a quantum device use pow2=true: a 384-row frame needs 8 two-qubit gates instead of "
    "about 400."))
def quantum_peft(in_features: int, out_features: int, rank: int = 8, layers: int = 1, param: str = "pauli",
                 intrinsic_rank: int | None = None, bits: int | None = None, scale: float = 1.0,
                 order: int = 2, pow2: bool = False) -> Graph:
    r"""Quantum-PEFT: ``ΔW = U Λ Vᵀ`` with orthonormal frames ``U ∈ V_K(M)``, ``V ∈ V_K(N)``.

    Graph::

        in ──(V: N×K unitary)── k ──(Λ diagonal)── k ──(U: M×K unitary)── out

    ``U`` and ``V`` are the first ``K`` columns of orthogonal matrices made by ``param``:
    ``"pauli"`` (default) is the paper's real two-design circuit — an RY on every qubit, then
    ``layers`` layers of CZ+RY on pairs (0,1),(2,3),… and (1,2),(3,4),… — on ``log₂ N`` qubits, with
    angles growing like ``L·log₂ N``; non-power-of-two sizes use an exact cosine–sine split (see
    :class:`tnpeft.params.unitary.PauliFrame`). ``"cayley"``, ``"exp"``, ``"taylor"``,
    ``"householder"`` and ``"givens"`` are the comparison maps of the paper's ablations.
    ``Λ = diag(λ)`` starts at zero, so the adapted model starts exactly at the base model.

    Args:
        rank: K, the number of columns (the rank of ΔW); ``r`` is another name for it.
        layers: circuit layers L for ``pauli`` (and butterfly layers for ``givens``).
        param: the Stiefel parametrization.
        intrinsic_rank: K′ ≤ K. For ``cayley``/``exp``/``taylor``/``householder`` the skew factor
            has only K′ columns (K′ reflections): parameters ``N·K′ + M·K′ + K``. For
            ``pauli``/``givens``, which have no column factor, Λ is masked to its first K′
            entries: parameters ``frames + K′``. (The paper is silent on the circuit case; this is
            tnpeft's choice.)
        bits: quantize the circuit angles (``pauli``, ``givens``) to ``2^bits`` levels
            (straight-through estimator).
        scale: the factor ``s`` on ``U Λ Vᵀ`` (the paper uses 1).
        order: the series order of ``taylor``.
        pow2: for ``pauli``, run each frame's circuit on the next power of two rows and keep the
            orthonormal basis of its first ``N`` rows — a different parametrization, made for
            quantum devices: ``log₂ R``-qubit two-design angles and gates (8 CZ for ``N = 384``
            instead of ~400 after transpiling; see :class:`tnpeft.params.unitary.PauliFrame`).

    Parameters (closed form): ``count(param, N, K) + count(param, M, K) + K`` (see
    :mod:`tnpeft.params.unitary`), with the ``intrinsic_rank`` substitutions above.
    """
    _check_arguments(in_features, out_features, rank, layers, param, intrinsic_rank, bits, pow2)
    options: dict[str, Any] = {}
    if param in _CIRCUIT_PARAMS:
        options["layers"] = layers
        if bits is not None:
            options["bits"] = bits
        if pow2:
            options["pow2"] = True
    else:
        if intrinsic_rank is not None:
            if "intrinsic_rank" not in UNITARY_PARAMS[param].options:
                raise ConfigError(f"quantum_peft: param {param!r} has no intrinsic rank", field="intrinsic_rank")
            options["intrinsic_rank"] = intrinsic_rank
        if param == "taylor":
            options["order"] = order
    mask = intrinsic_rank if (param in _CIRCUIT_PARAMS and intrinsic_rank is not None) else None
    return Graph(
        [Unitary("V", ("in", "k"), (in_features, rank), param=param, options=dict(options)),
         Diagonal("L", ("k",), (rank,), init="zeros", active=mask),
         Unitary("U", ("out", "k"), (out_features, rank), param=param, options=dict(options))],
        in_features=in_features, out_features=out_features, scale=scale, name="quantum_peft",
    )
