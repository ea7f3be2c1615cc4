r"""What an adapter's circuits cost: qubits, one- and two-qubit gates and depth — as built, decomposed
into CX + one-qubit gates, and transpiled to a backend — per circuit, per module and in total.

**The closed form for Pauli frames.** Write ``N = Σ_{s=0}^{p} 2^{e_s}`` (``e_0 > e_1 > … > e_p``,
``p + 1`` set bits) and, for the two-design circuit on ``q`` qubits with ``L`` layers,
``R(q) = q + 2L(⌊q/2⌋ + ⌊(q−1)/2⌋)`` rotations and ``Z(q) = L(⌊q/2⌋ + ⌊(q−1)/2⌋)`` CZ gates. The
frame's circuit (:mod:`tnpeft.circuits.frames`) has, at each level ``t = 0 … p−1`` of the
cosine–sine recursion, ``R(e_t)`` rotations and ``Z(e_t)`` CZs in each of ``B₁`` and ``A₁`` with
``t + 1`` controls (``B₁``'s at level 0 with none when ``K ≤ 2^{e_0}``), and one rotation with
``t + e_t − e_s`` controls for each ``s > t`` (the cube of ``CS``); then ``R(e_p)``, ``Z(e_p)`` with
``p`` controls. Decomposed, a rotation with one control costs 2 CX and with ``k ≥ 2`` controls at
most ``16k`` (linear-depth multi-controlled ``RY``); a CZ with one control 6 CX (a Toffoli) and with
``k ≥ 2`` controls at most ``6k + 6`` (with one qubit of the register free to borrow; ``6k² + 6``
when none is), so the two-qubit count is at most

    G(N) = Σ_t [ R(e_t)·(c_R(t+1) + c_R(t + 1 or 0)) + Z(e_t)·(c_Z(t+1) + c_Z(t + 1 or 0))
                 + Σ_{s>t} c_R(t + e_t − e_s) ] + R(e_p)·c_R(p) + Z(e_p)·c_Z(p),

``c_R(0) = 0``, ``c_R(1) = 2``, ``c_R(k) = 16k``; ``c_Z(0) = 1``, ``c_Z(1) = 6``, ``c_Z(k) = 6k + 6``
— :func:`pauli_two_qubit_bound`. It grows like
``O(L · popcount(N)² · log N) ⊆ O(L log³ N)``; for ``N = 2ⁿ`` it is the circuit's own ``Z(n)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tnpeft.circuits.circuit import Circuit
from tnpeft.circuits.frames import pauli_count
from tnpeft.errors import TNPeftError
from tnpeft.quantum.compile import circuit_names, to_qiskit
from tnpeft.quantum.synthesis import MAX_SYNTHESIS_QUBITS
from tnpeft.storage import graph_modules

if TYPE_CHECKING:  # pragma: no cover
    from qiskit import QuantumCircuit
    from qiskit.providers import BackendV2


# ------------------------------------------------------------------------------ closed form
def _two_design(q: int, layers: int) -> tuple[int, int]:
    pairs = q // 2 + max(q - 1, 0) // 2
    return q + 2 * layers * pairs, layers * pairs


def cx_cost(name: str, controls: int, n_qubits: int) -> int:
    """The CX count :func:`pauli_two_qubit_bound` charges one gate: ``name`` (``"ry"``/``"cz"``)
    with ``controls`` controls in an ``n_qubits`` register."""
    if name == "ry":
        return 0 if controls == 0 else 2 if controls == 1 else 16 * controls
    if controls <= 1:
        return 1 if controls == 0 else 6
    return 6 * controls + 6 if n_qubits >= controls + 3 else 6 * controls * controls + 6


def pauli_two_qubit_bound(n: int, layers: int = 1, k: int | None = None) -> int:
    """``G(N)``: an upper bound on the two-qubit gates of the ``pauli`` frame of size ``n`` once
    decomposed into CX and one-qubit gates (the closed form above; ``k`` the frame's columns)."""
    if n <= 1:
        return 0
    e = [b for b in range(n.bit_length() - 1, -1, -1) if (n >> b) & 1]
    nq = max(1, (n - 1).bit_length())
    p = len(e) - 1
    total = 0
    for t in range(p):
        r, z = _two_design(e[t], layers)
        before = 0 if (t == 0 and k is not None and k <= (1 << e[0])) else t + 1
        total += r * (cx_cost("ry", t + 1, nq) + cx_cost("ry", before, nq))
        total += z * (cx_cost("cz", t + 1, nq) + cx_cost("cz", before, nq))
        total += sum(cx_cost("ry", t + e[t] - e[s], nq) for s in range(t + 1, p + 1))
    if e[p] >= 1:
        r, z = _two_design(e[p], layers)
        total += r * cx_cost("ry", p, nq) + z * cx_cost("cz", p, nq)
    return total


def gate_list_cost(circuit: Circuit) -> int:
    """The same charge summed over a circuit description's gates (equals the closed form for a
    Pauli frame's circuit)."""
    return sum(cx_cost(g.name, len(g.controls), circuit.n_qubits) for g in circuit.gates
               if g.controls or g.name != "ry")


# ------------------------------------------------------------------------------ reports
def default_backend(num_qubits: int = 19) -> BackendV2:
    """A ``GenericBackendV2`` with a heavy-hex coupling map (as IBM devices have) large enough for
    ``num_qubits``: CX, RZ, SX, X as native gates."""
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit.transpiler import CouplingMap

    d = 3
    while (5 * d * d - 2 * d - 1) // 2 < num_qubits:
        d += 2
    cmap = CouplingMap.from_heavy_hex(d)
    return GenericBackendV2(num_qubits=cmap.size(), coupling_map=cmap, seed=1234)


def _counts(qc: QuantumCircuit) -> dict[str, int]:
    one = sum(1 for inst in qc.data if inst.operation.num_qubits == 1 and inst.operation.name not in ("barrier",))
    two = sum(1 for inst in qc.data if inst.operation.num_qubits == 2)
    many = sum(1 for inst in qc.data if inst.operation.num_qubits > 2)
    return {"one_qubit": one, "two_qubit": two, "multi_qubit": many, "depth": qc.depth()}


def _structure(qc: QuantumCircuit) -> tuple[Any, ...]:
    # what the decomposed gate counts depend on: gates, their qubits and control states, not angles
    return (qc.num_qubits,) + tuple((inst.operation.name, tuple(qc.find_bit(q).index for q in inst.qubits),
                                     getattr(inst.operation, "ctrl_state", None)) for inst in qc.data)


@dataclass
class CircuitResources:
    """One circuit's resources: as built, decomposed into CX + one-qubit gates (``cx``), and
    transpiled to the report's backend (``backend_*``); ``bound`` is the closed form where one
    exists (Pauli frames). For a Pauli frame whose width is not a power of two, ``parameters`` are
    its angles and ``alternative`` the other parametrization of the same frame — ``pow2`` (the
    circuit of the next power of two, projected) for the exact-width cosine–sine frame, and the
    exact-width frame for a ``pow2`` one — with its rows, angles and two-qubit bound."""

    name: str
    module: str | None
    node: str | None
    kind: str
    method: str
    qubits: int
    one_qubit: int
    two_qubit: int
    multi_qubit: int
    depth: int
    cx: int | None = None
    decomposed_one_qubit: int | None = None
    decomposed_depth: int | None = None
    backend_two_qubit: int | None = None
    backend_one_qubit: int | None = None
    backend_depth: int | None = None
    bound: int | None = None
    parameters: int | None = None
    alternative: dict[str, Any] | None = None


@dataclass
class ResourceReport:
    """The resources of every circuit of an adapter, and the circuits that could not be built."""

    circuits: list[CircuitResources] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    backend: str | None = None

    def totals(self) -> dict[str, int]:
        """Sums over the circuits (``None`` figures count as 0), and the widest register."""
        keys = ("one_qubit", "two_qubit", "multi_qubit", "cx", "backend_two_qubit", "backend_one_qubit")
        out = {k: sum(getattr(c, k) or 0 for c in self.circuits) for k in keys}
        out["circuits"] = len(self.circuits)
        out["max_qubits"] = max((c.qubits for c in self.circuits), default=0)
        return out

    def by_module(self) -> dict[str, dict[str, int]]:
        """Per module path: circuits, the widest register, CX after decomposition, two-qubit gates on the backend."""
        out: dict[str, dict[str, int]] = {}
        for c in self.circuits:
            m = out.setdefault(c.module or "", {"circuits": 0, "max_qubits": 0, "cx": 0, "backend_two_qubit": 0})
            m["circuits"] += 1
            m["max_qubits"] = max(m["max_qubits"], c.qubits)
            m["cx"] += c.cx or 0
            m["backend_two_qubit"] += c.backend_two_qubit or 0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "circuits": [asdict(c) for c in self.circuits], "totals": self.totals(),
                "modules": self.by_module(), "skipped": self.skipped}

    def summary(self) -> str:
        """One line: circuits, widest register, gates decomposed and on the backend."""
        t = self.totals()
        on = f", {t['backend_two_qubit']:,} two-qubit gates on {self.backend}" if self.backend else ""
        skip = f"; {len(self.skipped)} not built" if self.skipped else ""
        return (f"{t['circuits']} circuits, up to {t['max_qubits']} qubits: {t['cx']:,} CX + "
                f"{sum((c.decomposed_one_qubit or 0) for c in self.circuits):,} one-qubit gates decomposed{on}{skip}")

    def __str__(self) -> str:
        # one line per circuit (``tnpeft circuits`` prints the same as a table)
        lines = [f"{c.name}: {c.kind} ({c.method}), {c.qubits} qubits, {c.one_qubit} one- / {c.two_qubit} two- / "
                 f"{c.multi_qubit} multi-qubit gates, depth {c.depth}; {_fmt(c.cx)} CX decomposed (bound "
                 f"{_fmt(c.bound)}), {_fmt(c.backend_two_qubit)} two-qubit gates and depth {_fmt(c.backend_depth)} "
                 "on the backend" for c in self.circuits]
        lines += [f"{s['name']}: not built — {s['reason']}" for s in self.skipped]
        lines += self.alternatives()
        lines.append("total: " + self.summary())
        return "\n".join(lines)

    def alternatives(self) -> list[str]:
        """One line per distinct Pauli frame circuit that has another parametrization (exact width ↔
        ``pow2``): its angles and CX bound beside the other's."""
        lines, seen = [], set()
        for c in self.circuits:
            if c.alternative and (c.qubits, c.bound, c.parameters) not in seen:
                seen.add((c.qubits, c.bound, c.parameters))
                a = c.alternative
                lines.append(f"{c.name}: {c.parameters or 0:,} angles, ≤ {c.bound or 0:,} CX; as "
                             f"{a['parametrization']}: {a['rows']:,} rows, {a['parameters']:,} angles, "
                             f"≤ {a['two_qubit_bound']:,} CX")
        return lines


def _fmt(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


def resource_report(source: Any, backend: BackendV2 | str | None = "generic", *, adapter_name: str = "default",
                    optimization_level: int = 1, seed: int = 0,
                    max_synthesis_qubits: int = MAX_SYNTHESIS_QUBITS) -> ResourceReport:
    """The resources of every circuit of ``source`` — anything :func:`tnpeft.graph_modules` reads:
    a built graph, a model with injected adapters, a saved adapter folder, a graph file, ….

    ``backend``: ``"generic"`` (default: :func:`default_backend`, heavy-hex), any ``BackendV2``, or
    ``None`` (no transpiling to a device; the CX decomposition is still counted). Circuits of equal
    structure (the same gates on the same qubits, angles aside) are decomposed and transpiled once.
    A node that cannot be built (e.g. a frame too large to synthesize) is listed in ``skipped``.
    """
    from qiskit import transpile

    modules = graph_modules(source, adapter_name)
    built: list[tuple[str, str, str, QuantumCircuit]] = []
    report = ResourceReport()
    for path, module in modules.items():
        for name in circuit_names(module):
            label = f"{path}:{name}" if path else name
            try:
                circuits = to_qiskit(module, name, max_synthesis_qubits=max_synthesis_qubits)
            except TNPeftError as e:
                report.skipped.append({"name": label, "reason": str(e)})
                continue
            for qc in circuits if isinstance(circuits, list) else [circuits]:
                index = qc.metadata.get("batch_index") or []
                item = f"{name}[{','.join(map(str, index))}]" if index else name
                built.append((f"{path}:{item}" if path else item, path, name, qc))
    if backend == "generic":
        backend = default_backend(max((qc.num_qubits for *_, qc in built), default=1))
    report.backend = None if backend is None else getattr(backend, "name", type(backend).__name__)
    memo: dict[tuple[Any, ...], tuple[dict[str, int], dict[str, int] | None]] = {}
    for label, path, node, qc in built:
        key = _structure(qc)
        if key not in memo:
            dec = transpile(qc, basis_gates=["cx", "u"], optimization_level=optimization_level, seed_transpiler=seed)
            on = None
            if backend is not None:
                on = _counts(transpile(qc, backend=backend, optimization_level=optimization_level,
                                       seed_transpiler=seed))
            memo[key] = (_counts(dec), on)
        dec, on = memo[key]
        md = qc.metadata or {}
        raw = _counts(qc)
        bound = (pauli_two_qubit_bound(md["rows"], md.get("layers", 1), md.get("cols"))
                 if md.get("method") == "pauli" else None)
        params, alt = _pauli_alternative(md) if md.get("method") == "pauli" else (None, None)
        report.circuits.append(CircuitResources(
            label, path or None, node, md.get("kind", "?"), md.get("method", "?"), qc.num_qubits, raw["one_qubit"],
            raw["two_qubit"], raw["multi_qubit"], raw["depth"], cx=dec["two_qubit"],
            decomposed_one_qubit=dec["one_qubit"], decomposed_depth=dec["depth"],
            backend_two_qubit=on["two_qubit"] if on else None, backend_one_qubit=on["one_qubit"] if on else None,
            backend_depth=on["depth"] if on else None, bound=bound, parameters=params, alternative=alt))
    return report


def _pauli_alternative(md: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """A Pauli frame circuit's angles, and the other parametrization of its frame (exact width ↔ pow2)."""
    rows, layers, cols = md["rows"], md.get("layers", 1), md.get("cols")
    frame_rows = md.get("frame_rows", rows)
    params = pauli_count(rows, layers)
    if frame_rows & (frame_rows - 1) == 0:
        return params, None
    if md.get("pow2"):
        other, label = frame_rows, "pauli (exact width: cosine–sine)"
    else:
        other, label = 1 << (rows - 1).bit_length(), "pauli pow2=true (next power of two, projected)"
    return params, {"parametrization": label, "rows": other, "parameters": pauli_count(other, layers),
                    "two_qubit_bound": pauli_two_qubit_bound(other, layers, cols)}
