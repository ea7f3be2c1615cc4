"""Real quantum circuits as data, and a batched, differentiable statevector simulator in torch.

A :class:`Circuit` is a tuple of gates on ``n`` qubits. Every gate is real (``RY``, ``CZ``,
``CX``, each optionally controlled on other qubits being 0 or 1), so states stay real and a
circuit is an orthogonal ``2ⁿ × 2ⁿ`` matrix. A rotation angle comes from the circuit's trainable
parameters (``("param", k)``) or from a data input (``("input", j)``, angle encoding), times a
fixed ``factor``.

Qubit order follows Qiskit: qubit ``q`` is bit ``q`` (the least significant bit is qubit 0) of a
basis-state index, so :func:`simulate` returns exactly the amplitudes of
``qiskit.quantum_info.Statevector(circuit)``.

:func:`simulate` is batched over any leading shape: parameters of shape ``(*P, n_params)`` and
inputs of shape ``(*B, n_inputs)`` broadcast against each other, so one call runs many samples
(tokens) through many circuits (layers) of the same shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tnpeft.caches import memoized
from tnpeft.errors import ConfigError

GATES = ("ry", "cz", "cx")


@dataclass(frozen=True)
class Gate:
    """One gate: ``name`` in ``("ry", "cz", "cx")``, the qubits it acts on (``cx``: control,
    target) and, for ``ry``, where its angle comes from: ``("param", k)`` or ``("input", j)``; the
    rotation is ``RY(factor · angle)``. ``controls`` are ``(qubit, value)`` pairs: the gate acts
    only on the basis states whose control qubits hold those values (a multi-controlled gate;
    ``value`` 0 is an open control)."""

    name: str
    qubits: tuple[int, ...]
    angle: tuple[str, int] | None = None
    controls: tuple[tuple[int, int], ...] = ()
    factor: float = 1.0

    @property
    def control_qubits(self) -> tuple[int, ...]:
        return tuple(q for q, _ in self.controls)

    def controlled(self, *controls: tuple[int, int]) -> Gate:
        """This gate with more controls (added in front of its own)."""
        return Gate(self.name, self.qubits, self.angle, tuple(controls) + self.controls, self.factor)


@dataclass(frozen=True)
class Circuit:
    """A real circuit on ``n_qubits`` qubits starting from ``|0…0⟩``."""

    n_qubits: int
    gates: tuple[Gate, ...]
    n_params: int
    n_inputs: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_qubits, int) or self.n_qubits < 1:
            raise ConfigError(f"a circuit needs at least one qubit, got {self.n_qubits!r}", field="qubits")
        for g in self.gates:
            if g.name not in GATES:
                raise ConfigError(f"unknown gate {g.name!r}; expected one of {GATES}", field="gates")
            every = g.qubits + g.control_qubits
            if any(not 0 <= q < self.n_qubits for q in every) or len(set(every)) != len(every):
                raise ConfigError(f"gate {g.name} on qubits {g.qubits} (controls {g.controls}) does not fit "
                                  f"{self.n_qubits} qubits", field="gates")
            if any(v not in (0, 1) for _, v in g.controls):
                raise ConfigError(f"gate {g.name}: control values must be 0 or 1, got {g.controls}", field="gates")
            if g.name == "ry":
                src, k = g.angle or ("", -1)
                limit = self.n_params if src == "param" else self.n_inputs if src == "input" else 0
                if not 0 <= k < limit:
                    raise ConfigError(f"ry on qubit {g.qubits[0]} reads angle {g.angle}; the circuit has "
                                      f"{self.n_params} parameters and {self.n_inputs} inputs", field="gates")

    @property
    def dim(self) -> int:
        return 1 << self.n_qubits

    def count(self, name: str) -> int:
        """Number of gates called ``name``."""
        return sum(g.name == name for g in self.gates)

    @property
    def is_controlled(self) -> bool:
        """True if some gate has controls."""
        return any(g.controls for g in self.gates)


def circuit_angle_count(n_qubits: int, layers: int) -> int:
    """Angles of the simplified two-design circuit on ``n_qubits``: one RY per qubit, then per
    layer two RYs per CZ pair on pairs (0,1),(2,3),… and (1,2),(3,4),…"""
    return n_qubits + 2 * layers * (n_qubits // 2 + max(n_qubits - 1, 0) // 2)


def pauli_circuit(n_qubits: int, layers: int) -> Circuit:
    """Quantum-PEFT's real two-design circuit (the ``pauli`` frame of size ``2ⁿ``) — the one
    description its torch kernel, its Qiskit circuit and its drawing all follow.

    An ``RY`` on every qubit (angles ``0 … n−1``); then per layer, for the pairs (0,1),(2,3),… and
    then (1,2),(3,4),…: ``CZ`` on every pair of the half-layer, followed by ``RY`` on both qubits of
    each pair (the next angles, pair by pair). :func:`circuit_angle_count` angles."""
    gates: list[Gate] = [Gate("ry", (q,), ("param", q)) for q in range(n_qubits)]
    a = n_qubits
    for _ in range(layers):
        for parity in (0, 1):
            pairs = list(range(parity, n_qubits - 1, 2))
            gates += [Gate("cz", (p, p + 1)) for p in pairs]
            for p in pairs:
                for q in (p, p + 1):
                    gates.append(Gate("ry", (q,), ("param", a)))
                    a += 1
    return Circuit(n_qubits, tuple(gates), a)


def _ladder(n: int, gate: str) -> list[Gate]:
    return [Gate(gate, (q, q + 1)) for q in range(n - 1)]


def qpa_circuit(n_qubits: int, layers: int) -> Circuit:
    """QPA's circuit: ``layers`` blocks of (``RY`` on every qubit, then a ``CX`` ladder
    ``0→1→…→n−1``) from ``|0…0⟩``; ``n_qubits · layers`` angles."""
    gates: list[Gate] = []
    k = 0
    for _ in range(layers):
        for q in range(n_qubits):
            gates.append(Gate("ry", (q,), ("param", k)))
            k += 1
        gates += _ladder(n_qubits, "cx")
    return Circuit(n_qubits, tuple(gates), k)


def encoding_rounds(n_inputs: int, n_qubits: int) -> int:
    """How many angle-encoding rounds ``n_inputs`` features need on ``n_qubits`` qubits."""
    return max(1, math.ceil(n_inputs / n_qubits))


def qnn_circuit(n_qubits: int, layers: int, n_inputs: int, entangler: str = "cz") -> Circuit:
    """A data re-uploading QNN: ``max(layers, rounds)`` blocks, where block ``b`` first angle-encodes
    features ``b·n … b·n+n−1`` (``RY(x_j)`` on qubit ``j mod n``) while features remain, then applies
    a trainable ``RY`` on every qubit and an entangling ladder (``cz`` or ``cx``).
    ``rounds = ⌈n_inputs / n⌉``; angles ``n · max(layers, rounds)``."""
    if entangler not in ("cz", "cx"):
        raise ConfigError(f"entangler must be 'cz' or 'cx', got {entangler!r}", field="entangler")
    blocks = max(layers, encoding_rounds(n_inputs, n_qubits) if n_inputs else 0)
    gates: list[Gate] = []
    k = 0
    for b in range(blocks):
        for j in range(b * n_qubits, min(n_inputs, (b + 1) * n_qubits)):
            gates.append(Gate("ry", (j % n_qubits,), ("input", j)))
        for q in range(n_qubits):
            gates.append(Gate("ry", (q,), ("param", k)))
            k += 1
        gates += _ladder(n_qubits, entangler)
    return Circuit(n_qubits, tuple(gates), k, n_inputs)


@memoized("tables:cz_signs")
def _cz_signs(n: int, a: int, b: int) -> torch.Tensor:
    i = torch.arange(1 << n)
    return 1.0 - 2.0 * (((i >> a) & 1) & ((i >> b) & 1)).to(torch.float64)


@memoized("tables:cx_perm")
def _cx_perm(n: int, c: int, t: int) -> torch.Tensor:
    i = torch.arange(1 << n)
    return i ^ (((i >> c) & 1) << t)


@memoized("tables:z_signs")
def z_signs(n: int) -> torch.Tensor:
    """``(2ⁿ, n)``: entry ``[i, q]`` is the ``Z`` eigenvalue ``1 − 2·bit_q(i)`` of basis state ``i``."""
    i = torch.arange(1 << n)
    return (1.0 - 2.0 * ((i[:, None] >> torch.arange(n)) & 1)).to(torch.float64)


def simulate(circuit: Circuit, params: torch.Tensor, inputs: torch.Tensor | None = None,
             initial: torch.Tensor | None = None) -> torch.Tensor:
    """The final statevector, shape ``(*batch, 2ⁿ)``, real.

    ``params``: ``(*P, n_params)``; ``inputs``: ``(*B, n_inputs)`` (or ``None`` when the circuit
    reads none); ``initial``: ``(*S, 2ⁿ)`` starting states (default ``|0…0⟩``); ``batch`` is the
    broadcast of ``P``, ``B`` and ``S``. Differentiable in all three.
    """
    n = circuit.n_qubits
    if params.shape[-1] != circuit.n_params:
        raise ConfigError(f"the circuit has {circuit.n_params} parameters, got a tensor of shape "
                          f"{tuple(params.shape)}", field="params")
    if circuit.n_inputs:
        if inputs is None or inputs.shape[-1] != circuit.n_inputs:
            got = None if inputs is None else tuple(inputs.shape)
            raise ConfigError(f"the circuit reads {circuit.n_inputs} inputs, got {got}", field="inputs")
        batch = torch.broadcast_shapes(params.shape[:-1], inputs.shape[:-1])
    else:
        batch = params.shape[:-1]
    dtype = params.dtype if params.is_floating_point() else torch.get_default_dtype()
    if initial is None:
        psi = torch.zeros(*batch, 1 << n, dtype=dtype, device=params.device)
        psi[..., 0] = 1.0
    else:
        if initial.shape[-1] != 1 << n:
            raise ConfigError(f"initial states must have {1 << n} amplitudes, got shape {tuple(initial.shape)}",
                              field="initial")
        batch = torch.broadcast_shapes(batch, initial.shape[:-1])
        psi = initial.to(dtype).expand(*batch, 1 << n)
    segments = _segments(circuit)
    # one table of cos/sin(angle/2): the parameters, then the inputs, then an identity column
    half = [params.to(dtype).expand(*batch, circuit.n_params) * 0.5]
    if circuit.n_inputs and inputs is not None:   # (checked above: a circuit with inputs is given them)
        half.append(inputs.to(dtype).expand(*batch, circuit.n_inputs) * 0.5)
    half.append(torch.zeros(*batch, 1, dtype=dtype, device=params.device))
    table = torch.cat(half, -1)
    cos_t, sin_t = torch.cos(table), torch.sin(table)
    for seg in segments:
        if seg[0] == "gate":   # a controlled gate, or a rotation by a multiple of its angle
            psi = _apply_single(seg, psi, table)
        elif seg[0] == "ry":
            for lo, c, idx in seg[1]:
                ix = idx.to(psi.device)
                cs, sn = cos_t[..., ix], sin_t[..., ix]                       # (*batch, c)
                r = torch.stack((torch.stack((cs, -sn), -1), torch.stack((sn, cs), -1)), -2)  # (*batch, c, 2, 2)
                m = r[..., c - 1, :, :]
                for j in range(c - 2, -1, -1):                                # qubit lo + c - 1 is most significant
                    m = _kron(m, r[..., j, :, :])
                v = psi.reshape(*batch, 1 << (n - lo - c), 1 << c, 1 << lo)
                psi = torch.matmul(m.unsqueeze(-3), v).reshape(*batch, 1 << n)
        else:
            _, perm, sign = seg
            if perm is not None:
                psi = psi[..., perm.to(psi.device)]
            if sign is not None:
                psi = psi * sign.to(psi.device, psi.dtype)
    return psi


def _apply_single(seg: tuple[Any, ...], psi: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    _, g, k, idx0, idx1, vec = seg
    if g.name == "ry":
        half = table[..., k] * g.factor
        c, s = torch.cos(half)[..., None], torch.sin(half)[..., None]
        i0, i1 = idx0.to(psi.device), idx1.to(psi.device)
        a0, a1 = psi[..., i0], psi[..., i1]
        return psi.index_copy(-1, i0, c * a0 - s * a1).index_copy(-1, i1, s * a0 + c * a1)
    if g.name == "cz":
        signs: torch.Tensor = vec.to(psi.device, psi.dtype)
        return psi * signs
    return psi[..., vec.to(psi.device)]


def _control_mask(n: int, controls: tuple[tuple[int, int], ...]) -> torch.Tensor:
    i = torch.arange(1 << n)
    ok = torch.ones(1 << n, dtype=torch.bool)
    for q, v in controls:
        ok &= ((i >> q) & 1) == v
    return ok


def _single(circuit: Circuit, g: Gate) -> tuple[Any, ...]:
    """A gate compiled on its own: index pairs (RY), a sign vector (CZ) or a permutation (CX),
    restricted to the basis states its controls select."""
    n = circuit.n_qubits
    i = torch.arange(1 << n)
    ok = _control_mask(n, g.controls)
    if g.name == "ry":
        t = g.qubits[0]
        src, k = g.angle  # type: ignore[misc]
        idx0 = i[ok & (((i >> t) & 1) == 0)]
        return ("gate", g, k if src == "param" else circuit.n_params + k, idx0, idx0 | (1 << t), None)
    if g.name == "cz":
        a, b = g.qubits
        hit = ok & (((i >> a) & 1) == 1) & (((i >> b) & 1) == 1)
        return ("gate", g, None, None, None, 1.0 - 2.0 * hit.to(torch.float64))
    c, t = g.qubits
    flip = ok & (((i >> c) & 1) == 1)
    return ("gate", g, None, None, None, torch.where(flip, i ^ (1 << t), i))


def _kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product of square matrices ``(…, p, p) ⊗ (…, q, q)``."""
    p, q = a.shape[-1], b.shape[-1]
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return (a[..., :, None, :, None] * b[..., None, :, None, :]).reshape(*batch, p * q, p * q)


_FUSE = 4  # qubits per fused rotation block: 16×16 Kronecker factors


@memoized("circuits:segments")
def _segments(circuit: Circuit) -> tuple[tuple[Any, ...], ...]:
    """The gate list compiled for the simulator: runs of RY gates on distinct qubits become blocks
    of Kronecker factors on up to four neighbouring qubits; runs of CX/CZ gates become one
    permutation and one sign vector. Exact: only the grouping of commuting/consecutive gates changes."""
    n = circuit.n_qubits
    ident = circuit.n_params + circuit.n_inputs
    segs: list[tuple[Any, ...]] = []
    run: dict[int, int] = {}
    perm: torch.Tensor | None = None
    sign: torch.Tensor | None = None

    def flush_ry() -> None:
        if not run:
            return
        blocks = []
        for lo in range(0, n, _FUSE):
            c = min(_FUSE, n - lo)
            qs = range(lo, lo + c)
            if any(q in run for q in qs):
                blocks.append((lo, c, torch.tensor([run.get(q, ident) for q in qs])))
        segs.append(("ry", tuple(blocks)))
        run.clear()

    def flush_ps() -> None:
        nonlocal perm, sign
        if perm is not None or sign is not None:
            segs.append(("ps", perm, sign))
        perm = sign = None

    for g in circuit.gates:
        if g.controls or g.factor != 1.0:
            flush_ry()
            flush_ps()
            segs.append(_single(circuit, g))
        elif g.name == "ry":
            flush_ps()
            q = g.qubits[0]
            if q in run:
                flush_ry()
            src, k = g.angle  # type: ignore[misc]
            run[q] = k if src == "param" else circuit.n_params + k
        else:
            flush_ry()
            if g.name == "cz":
                z = _cz_signs(n, *g.qubits)
                sign = z if sign is None else sign * z
            else:
                p = _cx_perm(n, *g.qubits)
                perm = p if perm is None else perm[p]
                sign = None if sign is None else sign[p]
    flush_ry()
    flush_ps()
    return tuple(segs)


def probabilities(state: torch.Tensor) -> torch.Tensor:
    """Measurement probabilities ``|⟨i|ψ⟩|²`` of every basis state."""
    return state * state


def expect_z(state: torch.Tensor) -> torch.Tensor:
    """``⟨Z_q⟩`` for every qubit ``q``, shape ``(*batch, n)``."""
    n = state.shape[-1].bit_length() - 1
    return probabilities(state) @ z_signs(n).to(state.device, state.dtype)


def unitary_matrix(circuit: Circuit, params: torch.Tensor) -> torch.Tensor:
    """The circuit's ``2ⁿ × 2ⁿ`` orthogonal matrix (column ``j`` = the image of ``|j⟩``), shape
    ``(*P, 2ⁿ, 2ⁿ)``; for input-free circuits (tests, export)."""
    if circuit.n_inputs:
        raise ConfigError("a circuit with data inputs has no fixed matrix", field="inputs")
    eye = torch.eye(circuit.dim, dtype=params.dtype, device=params.device)
    states = simulate(circuit, params[..., None, :], initial=eye)   # (*P, j, amplitudes)
    return states.transpose(-1, -2)
