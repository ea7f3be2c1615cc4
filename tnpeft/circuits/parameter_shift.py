r"""Circuits run on a device, differentiated by the parameter-shift rule.

A device (a quantum computer, or a simulator of one) returns measured probabilities, not a graph
torch can differentiate. The gradient of every probability ``p_i(α)`` with respect to a gate angle
``α`` is nevertheless a combination of the same probabilities at shifted angles — exact, not a
finite difference:

- **RY(α)** (generator ``Y/2``, eigenvalues ``±½``), uncontrolled — the *two-term* rule
  ``∂f/∂α = [f(α + π/2) − f(α − π/2)] / 2``;
- **controlled RY(α)**, any number of open or closed controls (generator ``P ⊗ Y/2`` with ``P``
  the projector onto the control pattern: eigenvalues ``0, ±½``) — the *four-term* rule
  ``∂f/∂α = c₊[f(α + π/2) − f(α − π/2)] − c₋[f(α + 3π/2) − f(α − 3π/2)]``, ``c± = (√2 ± 1)/(4√2)``
  (the two-term rule is wrong there). The four-term rule is exact for plain ``RY`` too.
- **CZ, CX** (controlled or not) have no angle: nothing to shift.

tnpeft's gates are ``RY(factor · θ)``: the rule shifts the *gate angle* ``α = factor·θ`` and the
chain rule multiplies by ``factor`` (shifting ``θ`` by ``π/2`` would be wrong for ``factor ≠ 1``).
One angle may drive several gates — the cosine–sine rotation ``CS(φ)`` of a Pauli frame of a
non-power-of-two width is one ``RY(2φ)`` per cube of ``{j < N₂}``. Gates that use one angle, act on
one target, follow each other and are controlled on *disjoint* cubes multiply to a single
rotation whose generator is ``(Σ P_c) ⊗ Y/2`` with ``Σ P_c`` again a projector: they are shifted
together, by the four-term rule (:func:`shift_groups`). Any other repeated use is shifted gate by
gate (the product rule). Angle-encoded data inputs ``RY(x_j)`` are shifted like parameters when
their gradient is needed (a QNN fed by trainable features).

Cost, per circuit whose gradient is wanted: two evaluations per two-term group, four per four-term
group (:func:`shift_cost`). :func:`device_probabilities` runs the forward and, in the backward
pass, all shifted circuits of one call as **one** request to the device (one array of parameter
values for one circuit shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch

from tnpeft.caches import memoized
from tnpeft.circuits.circuit import Circuit, Gate
from tnpeft.errors import ConfigError

_C_PLUS = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_C_MINUS = (math.sqrt(2) - 1) / (4 * math.sqrt(2))

#: (shift of the gate angle, coefficient) of each rule
SHIFT_RULES: dict[str, tuple[tuple[float, float], ...]] = {
    "two": ((math.pi / 2, 0.5), (-math.pi / 2, -0.5)),
    "four": ((math.pi / 2, _C_PLUS), (-math.pi / 2, -_C_PLUS), (3 * math.pi / 2, -_C_MINUS),
             (-3 * math.pi / 2, _C_MINUS)),
}


class CircuitDevice(Protocol):
    """What runs circuits for :func:`device_probabilities`: ``probabilities(circuit, values)``
    estimates the outcome probabilities of ``circuit`` (input-free, every angle its own parameter)
    for each row of ``values`` ``(B, n_params)``, as an array ``(B, 2ⁿ)``; ``purpose`` says why
    (``"forward"`` or ``"shift"``) for its accounting."""

    def probabilities(self, circuit: Circuit, values: np.ndarray, *, purpose: str = "forward") -> np.ndarray: ...


@dataclass(frozen=True)
class ShiftGroup:
    """Gates (indices into ``circuit.gates``) that one shift moves together: all read angle
    ``source[index]`` (``source`` is ``"param"`` or ``"input"``) times ``factor``; ``rule`` is
    ``"two"`` or ``"four"``."""

    gates: tuple[int, ...]
    source: str
    index: int
    factor: float
    rule: str


def _disjoint(a: Gate, b: Gate) -> bool:
    """Whether two gates' control cubes are disjoint (some qubit is controlled on 0 by one and 1 by the other)."""
    ca, cb = dict(a.controls), dict(b.controls)
    return any(q in cb and cb[q] != v for q, v in ca.items())


@memoized("circuits:shift_groups")
def shift_groups(circuit: Circuit) -> tuple[ShiftGroup, ...]:
    """The circuit's rotations grouped for the parameter-shift rule (see the module docstring): a
    run of consecutive ``RY`` gates on one target reading one angle with one factor, on pairwise
    disjoint control cubes, is one four-term group; every other rotation is a group of its own,
    two-term when it has no controls, four-term when it has."""
    groups: list[ShiftGroup] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            g = circuit.gates[run[0]]
            rule = "two" if len(run) == 1 and not g.controls else "four"
            groups.append(ShiftGroup(tuple(run), g.angle[0], g.angle[1], g.factor, rule))  # type: ignore[index]
            run.clear()

    for i, g in enumerate(circuit.gates):
        if g.name != "ry":
            flush()
            continue
        if run:
            h = circuit.gates[run[0]]
            joins = (g.angle == h.angle and g.factor == h.factor and g.qubits == h.qubits and g.controls
                     and all(_disjoint(g, circuit.gates[j]) for j in run))
            if not joins:
                flush()
        run.append(i)
    flush()
    return tuple(groups)


@memoized("circuits:grouped")
def grouped_circuit(circuit: Circuit) -> Circuit:
    """The circuit with one parameter per shift group (gate angle = parameter, factor 1) and no
    inputs: what a device runs; values come from :func:`group_values`."""
    groups = shift_groups(circuit)
    owner = {i: k for k, grp in enumerate(groups) for i in grp.gates}
    gates = tuple(Gate(g.name, g.qubits, ("param", owner[i]), g.controls, 1.0) if g.name == "ry" else g
                  for i, g in enumerate(circuit.gates))
    return Circuit(circuit.n_qubits, gates, len(groups))


def group_values(circuit: Circuit, params: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
    """The gate angles of every shift group, ``(*batch, groups)``, from parameters ``(*P, n_params)``
    and inputs ``(*B, n_inputs)`` (broadcast); differentiable in both."""
    groups = shift_groups(circuit)
    if params.shape[-1] != circuit.n_params:
        raise ConfigError(f"the circuit has {circuit.n_params} parameters, got a tensor of shape "
                          f"{tuple(params.shape)}", field="params")
    if circuit.n_inputs and (inputs is None or inputs.shape[-1] != circuit.n_inputs):
        raise ConfigError(f"the circuit reads {circuit.n_inputs} inputs, got "
                          f"{None if inputs is None else tuple(inputs.shape)}", field="inputs")
    table = [params]
    if circuit.n_inputs:
        batch = torch.broadcast_shapes(params.shape[:-1], inputs.shape[:-1])  # type: ignore[union-attr]
        table = [params.expand(*batch, circuit.n_params), inputs.to(params.dtype).expand(*batch, circuit.n_inputs)]  # type: ignore[union-attr]
    flat = torch.cat(table, -1)
    idx = torch.tensor([g.index + (circuit.n_params if g.source == "input" else 0) for g in groups],
                       dtype=torch.long, device=flat.device)
    factor = torch.tensor([g.factor for g in groups], dtype=flat.dtype, device=flat.device)
    return flat.index_select(-1, idx) * factor


def shift_cost(circuit: Circuit, params: bool = True, inputs: bool = False) -> int:
    """Circuits the parameter-shift gradient of one evaluation needs: 2 per two-term group and 4
    per four-term group, over the groups reading parameters (and inputs, with ``inputs``)."""
    return sum(len(SHIFT_RULES[g.rule]) for g in shift_groups(circuit)
               if (g.source == "param" and params) or (g.source == "input" and inputs))


class _DeviceRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, device: Any, circuit: Circuit, needed: tuple[int, ...]) -> torch.Tensor:
        grouped = grouped_circuit(circuit)
        flat = values.detach().reshape(-1, values.shape[-1]).to(torch.float64).cpu().numpy()
        probs = np.asarray(device.probabilities(grouped, flat, purpose="forward"), dtype=np.float64)
        ctx.device, ctx.circuit, ctx.needed = device, circuit, needed
        ctx.save_for_backward(values)
        return torch.as_tensor(probs, dtype=values.dtype, device=values.device).reshape(*values.shape[:-1], -1)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        (values,) = ctx.saved_tensors
        groups = shift_groups(ctx.circuit)
        needed = [k for k in ctx.needed if ctx.needs_input_grad[0]]
        if not needed:
            return None, None, None, None
        flat = values.detach().reshape(-1, values.shape[-1]).to(torch.float64).cpu().numpy()
        rows = flat.shape[0]
        shifted, coefs = [], []
        for k in needed:
            for shift, c in SHIFT_RULES[groups[k].rule]:
                v = flat.copy()
                v[:, k] += shift
                shifted.append(v)
                coefs.append((k, c))
        probs = np.asarray(ctx.device.probabilities(grouped_circuit(ctx.circuit), np.concatenate(shifted),
                                                    purpose="shift"), dtype=np.float64)
        probs = probs.reshape(len(coefs), rows, -1)
        g = grad_out.detach().reshape(rows, -1).to(torch.float64).cpu().numpy()
        dots = np.einsum("srd,rd->sr", probs, g)                     # (shifts, rows)
        grad = np.zeros_like(flat)
        for s, (k, c) in enumerate(coefs):
            grad[:, k] += c * dots[s]
        out = torch.as_tensor(grad, dtype=values.dtype, device=values.device).reshape(values.shape)
        return out, None, None, None


def device_probabilities(device: CircuitDevice, circuit: Circuit, params: torch.Tensor,
                         inputs: torch.Tensor | None = None) -> torch.Tensor:
    """``circuit``'s outcome probabilities ``(*batch, 2ⁿ)`` measured on ``device``, with the
    parameter-shift rule as their gradient with respect to ``params`` (and ``inputs`` when they
    require one). One device request for the forward, one for all shifted circuits of the backward."""
    values = group_values(circuit, params, inputs)
    grads = {"param": params.requires_grad, "input": inputs is not None and inputs.requires_grad}
    needed = tuple(k for k, g in enumerate(shift_groups(circuit)) if grads[g.source])
    if not torch.is_grad_enabled() or not needed:
        return _DeviceRun.forward(_NoContext(), values.detach(), device, circuit, needed)
    return cast(torch.Tensor, _DeviceRun.apply(values, device, circuit, needed))  # type: ignore[no-untyped-call]  # torch


class _NoContext:
    """Stands for autograd's context when no gradient is recorded."""

    needs_input_grad = (False,)

    def save_for_backward(self, *tensors: torch.Tensor) -> None:
        pass
