r"""Where a quantum node's circuit runs: the exact torch simulator (the default) or a device.

Every node built on a circuit — a ``qnn`` nonlinear node, QPA's hyper-network, a ``pauli`` or
``givens`` frame — asks :func:`device_for` before it runs its circuit. ``None`` (the default)
means the exact, differentiable statevector simulator; a :class:`~tnpeft.circuits.parameter_shift.CircuitDevice`
means measured probabilities with parameter-shift gradients. A device is chosen for the whole
process inside :func:`use_device`, or for single modules with :func:`attach_device` (what
:func:`tnpeft.quantum.on_device` does for the modules of a model).

**Frames from a device, with their signs.** Measuring ``U|j⟩`` gives ``|U_ij|²`` only. The
interference circuit of :func:`interference_circuit` has one more qubit ``a`` (the top one):
``RY(π/2)`` on ``a``; on the ``a = 0`` branch ``|j⟩`` is prepared (``RY(π·bit_q(j))`` on each qubit
``q``, controlled on ``a = 0``) and ``U`` applied (every gate of ``U`` gains the control ``a = 0``);
on the ``a = 1`` branch the uniform state ``|s⟩`` (``RY(π/2)`` on each qubit, controlled on ``a = 1``);
then ``RY(−π/2)`` on ``a``. With ``D = 2ⁿ``, ``P(a = 0, i) − P(a = 1, i) = U_ij / √D``, so
``Û_ij = √D (p̂₀(i) − p̂₁(i))`` (:func:`device_frames`). The column index and the fixed angles are
the circuit's *inputs*, so the ``K`` columns of every frame of one shape run as one circuit with
``G·K`` rows of parameter values; all of ``U``'s rotations are controlled there, so their
gradient takes the four-term rule.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tnpeft.caches import memoized
from tnpeft.circuits.circuit import Circuit, Gate, probabilities, simulate
from tnpeft.circuits.parameter_shift import CircuitDevice, device_probabilities

_CURRENT: contextvars.ContextVar[CircuitDevice | None] = contextvars.ContextVar("tnpeft_device", default=None)
#: how many :func:`use_device` blocks are open in the process: while none is, the context variable
#: is not read (``torch.compile`` cannot trace ``ContextVar.get``; a plain global it can)
_OPEN = [0]


@contextmanager
def use_device(device: CircuitDevice | None) -> Iterator[CircuitDevice | None]:
    """Inside the block every circuit-built node without a device of its own runs on ``device``
    (``None``: the exact simulator)."""
    token = _CURRENT.set(device)
    _OPEN[0] += 1
    try:
        yield device
    finally:
        _OPEN[0] -= 1
        _CURRENT.reset(token)


def attach_device(module: torch.nn.Module, device: CircuitDevice | None) -> None:
    """Run ``module``'s circuit on ``device`` (``None``: back to the process-wide choice)."""
    if device is None:
        module.__dict__.pop("quantum_device", None)
    else:
        module.__dict__["quantum_device"] = device


def device_for(module: torch.nn.Module | None = None) -> CircuitDevice | None:
    """The device ``module``'s circuit runs on: its own (:func:`attach_device`), else the one of the
    enclosing :func:`use_device`, else ``None`` (the exact simulator)."""
    own = module.__dict__.get("quantum_device") if module is not None else None
    if own is not None or not _OPEN[0]:
        return own
    return _CURRENT.get()


def circuit_probabilities(circuit: Circuit, params: torch.Tensor, inputs: torch.Tensor | None = None,
                          device: CircuitDevice | None = None) -> torch.Tensor:
    """Outcome probabilities ``(*batch, 2ⁿ)``: exact from the simulator, or measured on ``device``
    (gradients by the parameter-shift rule)."""
    if device is None:
        return probabilities(simulate(circuit, params, inputs))
    return device_probabilities(device, circuit, params, inputs)


@memoized("circuits:interference")
def interference_circuit(circuit: Circuit) -> Circuit:
    """The sign-revealing circuit of an input-free ``circuit`` on ``n`` qubits (module docstring):
    ``n + 1`` qubits, the same parameters, inputs ``(π/2, −π/2, π·bit₀(j), …, π·bit_{n−1}(j))``
    (:func:`column_inputs`)."""
    n = circuit.n_qubits
    a = n
    gates: list[Gate] = [Gate("ry", (a,), ("input", 0))]
    gates += [Gate("ry", (q,), ("input", 2 + q), ((a, 0),)) for q in range(n)]
    gates += [Gate("ry", (q,), ("input", 0), ((a, 1),)) for q in range(n)]
    gates += [g.controlled((a, 0)) for g in circuit.gates]
    gates.append(Gate("ry", (a,), ("input", 1)))
    return Circuit(n + 1, tuple(gates), circuit.n_params, n + 2)


def column_inputs(n_qubits: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The inputs of :func:`interference_circuit` for columns ``0 … k−1``, shape ``(k, n + 2)``."""
    j = torch.arange(k, device=like.device)
    bits = ((j[:, None] >> torch.arange(n_qubits, device=like.device)) & 1).to(like.dtype) * math.pi
    fixed = torch.tensor([math.pi / 2, -math.pi / 2], dtype=like.dtype, device=like.device).expand(k, 2)
    return torch.cat([fixed, bits], 1)


def device_frames(device: CircuitDevice, circuit: Circuit, thetas: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` columns of ``circuit``'s ``2ⁿ × 2ⁿ`` matrix for every row of angles ``thetas``
    ``(G, n_params)``, signs included, estimated on ``device``: ``(G, 2ⁿ, k)``; differentiable in
    ``thetas`` by the parameter-shift rule."""
    n = circuit.n_qubits
    d = 1 << n
    inputs = column_inputs(n, k, thetas)                            # (k, n + 2)
    p = device_probabilities(device, interference_circuit(circuit), thetas[:, None, :], inputs[None])   # (G, k, 2D)
    u = math.sqrt(d) * (p[..., :d] - p[..., d:])                    # (G, k, D)
    return u.transpose(-1, -2)
