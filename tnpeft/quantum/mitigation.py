r"""Error mitigation for measured probabilities: read-out errors and gate noise.

**Read-out** (``"readout"``). Each measured qubit ``q`` reports the wrong bit with probabilities
``e0 = P(1|0)`` and ``e1 = P(0|1)``: the measured distribution is ``(⊗_q A_q) p`` with
``A_q = [[1−e0, e1], [e0, 1−e1]]``. :func:`readout_inverse` applies ``A_q⁻¹`` along each qubit's
axis of the probability vector reshaped to ``[2]*m`` (``O(m·2^m)``, never a ``2^m × 2^m`` matrix),
then :func:`project_simplex` clips the result to the nearest distribution (Euclidean projection:
the inverse of a noisy estimate has small negative entries). ``e0``, ``e1`` come from **two
calibration circuits** per set of measured qubits (all 0, all 1: :func:`calibration_from`), run on
the device with the same shots; or, with ``calibration="reported"``, from the device's own
calibration data (no circuit; on a simulator built from that data this matches it by construction,
on hardware it is a day old). ``"mthree"`` uses the ``mthree`` package's solver instead of the
tensored inverse when it is installed (same two calibration circuits; needs shots).

**Gate noise** (``"zne"``, zero-noise extrapolation). Every two-qubit gate ``G`` of the circuit
*as it runs on the device* (after transpiling) is folded into ``G (G†G)^k``: the same operation with
``λ = 2k + 1`` times the two-qubit noise (:func:`fold_two_qubit`). The probabilities measured at
``λ = 1, 3, 5`` are extrapolated cell by cell to ``λ = 0`` (:func:`extrapolate`: a least-squares line
by default, ``"richardson"`` the quadratic through the three points — less bias, about twice the
shot noise) and projected onto the simplex. Read-out mitigation is applied first (read-out error
does not grow with folding). Cost: three circuits per circuit, running ``1×, 3×, 5×`` as long in
their two-qubit part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tnpeft.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit

MITIGATIONS = ("none", "readout", "mthree", "zne")
ZNE_FITS = ("linear", "richardson")


@dataclass(frozen=True)
class Mitigation:
    """Which mitigation a device applies: ``readout`` (``"tensored"`` or ``"mthree"``, or ``None``),
    ``calibration`` (``"circuits"`` or ``"reported"``), ``zne`` scale factors (empty: none) and fit."""

    readout: str | None = None
    calibration: str = "circuits"
    zne: tuple[int, ...] = ()
    zne_fit: str = "linear"

    @property
    def label(self) -> str:
        parts = []
        if self.readout:
            parts.append("readout" if self.readout == "tensored" else "mthree")
        if self.zne:
            parts.append("zne" + ("" if self.zne_fit == "linear" else f"-{self.zne_fit}"))
        return "+".join(parts) or "none"

    def extra_circuits(self, measured_sets: int = 1) -> dict[str, Any]:
        """What mitigation adds: circuits per circuit (ZNE's scales), and calibration circuits per set of measured qubits."""
        cal = 2 if self.readout and self.calibration == "circuits" else 0
        return {"circuits_per_circuit": max(1, len(self.zne)), "calibration_circuits": cal * measured_sets,
                "zne_scales": list(self.zne) or [1]}


def parse_mitigation(spec: Any) -> Mitigation:
    """``None``/``"none"``, ``"readout"``, ``"mthree"``, ``"zne"``, or a ``+``/``,``-joined combination
    (``"readout+zne"``); ``"zne-richardson"`` picks the quadratic fit; ``"readout-reported"`` reads the
    device's calibration instead of running two circuits. A :class:`Mitigation` passes through."""
    if isinstance(spec, Mitigation):
        return spec
    if spec is None:
        return Mitigation()
    if not isinstance(spec, str):
        raise ConfigError(f"mitigation must be a string such as 'readout+zne', got {spec!r}", field="mitigation")
    readout: str | None = None
    calibration, fit = "circuits", "linear"
    zne: tuple[int, ...] = ()
    for part in [p for p in spec.replace(",", "+").split("+") if p]:
        base, _, opt = part.partition("-")
        if base == "none" and not opt:
            continue
        if base in ("readout", "mthree") and opt in ("", "reported", "circuits"):
            readout = "tensored" if base == "readout" else "mthree"
            calibration = opt or "circuits"
        elif base == "zne" and opt in ("",) + ZNE_FITS:
            zne, fit = (1, 3, 5), opt or "linear"
        else:
            raise ConfigError(f"unknown mitigation {part!r}; expected one of {MITIGATIONS} joined by '+' (e.g. "
                              "'readout+zne', 'zne-richardson', 'readout-reported')", field="mitigation")
    return Mitigation(readout, calibration, zne, fit)


def project_simplex(p: np.ndarray) -> np.ndarray:
    """The Euclidean projection of every row of ``p`` ``(…, D)`` onto the probability simplex."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.reshape(-1, p.shape[-1])
    u = -np.sort(-flat, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    ks = np.arange(1, flat.shape[1] + 1)
    ok = u - css / ks > 0
    rho = flat.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    tau = css[np.arange(flat.shape[0]), rho] / (rho + 1)
    return np.maximum(flat - tau[:, None], 0.0).reshape(p.shape)


def _apply_per_qubit(p: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    m = len(mats)
    lead = p.shape[:-1]
    t = p.reshape(*lead, *([2] * m))
    nl = len(lead)
    for q, a in enumerate(mats):        # qubit q is bit q: axis (nl + m − 1 − q) of the row-major reshape
        ax = nl + m - 1 - q
        t = np.moveaxis(np.tensordot(a, t, axes=([1], [ax])), 0, ax)
    return t.reshape(p.shape)


def confusion(e0: Any, e1: Any) -> list[np.ndarray]:
    """The per-qubit read-out matrices ``A_q = [[1−e0, e1], [e0, 1−e1]]`` (column: the true bit)."""
    return [np.array([[1 - a, b], [a, 1 - b]]) for a, b in zip(np.asarray(e0, float), np.asarray(e1, float))]


def apply_readout(p: np.ndarray, e0: Any, e1: Any) -> np.ndarray:
    """The distribution a device with read-out errors ``e0``, ``e1`` reports for true ``p`` ``(…, 2^m)``."""
    return _apply_per_qubit(np.asarray(p, dtype=np.float64), confusion(e0, e1))


def readout_inverse(p: np.ndarray, e0: Any, e1: Any, *, project: bool = True) -> np.ndarray:
    """Undo read-out errors: ``(⊗ A_q⁻¹) p`` for every row of ``p`` ``(…, 2^m)``, projected onto the
    simplex unless ``project=False``. A qubit with ``e0 + e1 ≥ 1`` carries no information and is refused."""
    e0, e1 = np.asarray(e0, float), np.asarray(e1, float)
    bad = np.nonzero(e0 + e1 >= 1.0)[0]
    if bad.size:
        raise ConfigError(f"measured qubit(s) {bad.tolist()} read out at random (P(1|0) + P(0|1) ≥ 1); read-out "
                          "mitigation cannot invert that", field="mitigation")
    out = _apply_per_qubit(np.asarray(p, dtype=np.float64), [np.linalg.inv(a) for a in confusion(e0, e1)])
    return project_simplex(out) if project else out


def calibration_from(p_zeros: np.ndarray, p_ones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(e0, e1)`` per qubit from the measured distributions ``(2^m,)`` of the all-0 and all-1 states."""
    d = p_zeros.shape[-1]
    m = d.bit_length() - 1
    idx = np.arange(d)
    bits = (idx[:, None] >> np.arange(m)) & 1                  # (D, m)
    e0 = p_zeros @ bits
    e1 = p_ones @ (1 - bits)
    return e0, e1


def mthree_inverse(counts: np.ndarray, e0: Any, e1: Any) -> np.ndarray:
    """Read-out mitigation by ``mthree`` (its iterative solver in the subspace of observed outcomes)
    for every row of integer ``counts`` ``(B, 2^m)``; rows come back as distributions."""
    try:
        import mthree
    except ImportError:
        raise ConfigError("mitigation 'mthree' needs the mthree package (pip install mthree); 'readout' is "
                          "tnpeft's own and needs nothing", field="mitigation") from None
    counts = np.asarray(counts)
    d = counts.shape[-1]
    m = d.bit_length() - 1
    solver = mthree.M3Mitigation()
    solver.cals_from_matrices(confusion(e0, e1))
    out = np.zeros(counts.shape, dtype=np.float64)
    for r, row in enumerate(counts.reshape(-1, d)):
        nz = np.nonzero(row)[0]
        data = {format(int(i), f"0{m}b"): int(row[i]) for i in nz}
        quasi = solver.apply_correction(data, list(range(m)))
        for key, v in quasi.nearest_probability_distribution().items():
            out.reshape(-1, d)[r, int(key, 2)] = v
    return out


def fold_two_qubit(qc: QuantumCircuit, scale: int) -> QuantumCircuit:
    """``qc`` with every two-qubit gate ``G`` replaced by ``G (G†G)^k``, ``scale = 2k + 1`` (odd ≥ 1).
    Fold circuits that are already transpiled and run them as they are: transpiling again would
    cancel the folds."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1 or scale % 2 == 0:
        raise ConfigError(f"a folding scale must be an odd positive integer, got {scale!r}", field="zne")
    if scale == 1:
        return qc
    k = (scale - 1) // 2
    out = qc.copy_empty_like()
    for inst in qc.data:
        out.append(inst)
        if inst.operation.num_qubits == 2 and inst.operation.name != "barrier" and not inst.clbits:
            inverse = inst.operation.inverse()
            for _ in range(k):
                out.append(inverse, inst.qubits)
                out.append(inst.operation, inst.qubits)
    return out


def extrapolate(values: np.ndarray, scales: tuple[int, ...], fit: str = "linear") -> np.ndarray:
    """Zero-noise values from ``values`` ``(L, …)`` measured at noise scales ``scales`` (``L`` of
    them): the intercept of a least-squares line (``"linear"``) or of the polynomial of degree
    ``L − 1`` through the points (``"richardson"``)."""
    if fit not in ZNE_FITS:
        raise ConfigError(f"ZNE fit must be one of {ZNE_FITS}, got {fit!r}", field="zne")
    lam = np.asarray(scales, dtype=np.float64)
    if len(lam) != values.shape[0] or len(lam) < 2:
        raise ConfigError(f"extrapolation needs at least two scales, one per row of values; got {tuple(scales)}",
                          field="zne")
    degree = 1 if fit == "linear" else len(lam) - 1
    vander = np.vander(lam, degree + 1, increasing=True)           # (L, degree+1)
    weights = np.linalg.pinv(vander)[0]                            # intercept as a linear combination of the rows
    return np.tensordot(weights, values, axes=(0, 0))
