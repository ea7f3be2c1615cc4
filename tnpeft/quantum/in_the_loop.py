r"""Quantum hardware in the loop: an adapter's quantum nodes evaluated on a device while it trains
or evaluates, and what that costs.

A quantum node has two evaluators behind one interface: the exact torch simulator (the default,
differentiable by autograd) and a :class:`~tnpeft.quantum.device.Device` (measured probabilities,
differentiable by the parameter-shift rule, :mod:`tnpeft.circuits.parameter_shift`).
:func:`on_device` selects the device for the quantum parts of an adapter, a model or the whole
process::

    with tnpeft.quantum.on_device(model, "fake_torino", shots=1024, mitigation="readout") as dev:
        loss = model(**batch)["loss"]; loss.backward()       # forward measured, backward by shifts
    print(dev.stats)                                          # circuits, shots, estimated QPU seconds

The quantum parts (:func:`quantum_parts`), and what one training step sends to the device
(:func:`device_budget`, per step — :class:`Budget`):

=====================  ==================================  ==========================================
part                   forward: circuits (bindings)        backward: circuits per forward circuit
=====================  ==================================  ==========================================
QPA hyper-network      1 (hyper-networks of one shape:     2 per angle (plain ``RY``: two-term rule)
                       one request)
``qnn`` node (QWTHN)   1 per token (row)                   2 per angle + 2 per input feature (the
                                                           features are trained upstream)
``pauli``/``givens``   ``K`` per frame (interference       4 per shift group (all rotations are
frame                  circuits; frames of one shape:      controlled by the ancilla: four-term rule;
                       one request)                        a shared ``CS(φ)`` angle is one group)
=====================  ==================================  ==========================================

Each circuit runs ``shots`` times (``× 3`` with zero-noise extrapolation, plus two read-out
calibration circuits per set of measured qubits). Frames of other parametrizations (``cayley``,
``exp``, ``taylor``, ``householder``) have no circuit with trainable angles and stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from tnpeft.circuits.circuit import Circuit
from tnpeft.circuits.device_hooks import attach_device, interference_circuit, use_device
from tnpeft.circuits.parameter_shift import grouped_circuit, shift_cost
from tnpeft.errors import ConfigError
from tnpeft.graph import Nonlinear, Unitary
from tnpeft.params.hypernetworks import QPAHyperNetwork
from tnpeft.params.qnn import QNNMap
from tnpeft.params.unitary import FrameModule
from tnpeft.quantum.device import Device
from tnpeft.storage import graph_modules


@dataclass
class QuantumPart:
    """One quantum node of an adapted module: ``kind`` is ``"frame"``, ``"qnn"`` or ``"qpa"``;
    ``circuit`` is what runs on the device (a frame's interference circuit); ``forward`` its
    bindings per forward pass (``None``: one per token); ``shifts`` the circuits per binding of
    its gradient."""

    path: str
    name: str
    kind: str
    module: Any
    circuit: Circuit
    forward: int | None
    shifts: int


def quantum_parts(source: Any, adapter_name: str = "default") -> list[QuantumPart]:
    """The nodes of ``source``'s adapters (anything :func:`tnpeft.graph_modules` reads) that can run on a device."""
    parts = []
    for path, gm in graph_modules(source, adapter_name).items():
        g = gm.graph
        for name, node in g.nodes.items():
            if isinstance(node, Unitary) and name not in g.generated:
                frame = gm.get_submodule(name)
                circ = frame.device_circuit() if isinstance(frame, FrameModule) else None
                if isinstance(frame, FrameModule) and circ is not None:
                    inter = interference_circuit(circ)
                    parts.append(QuantumPart(path, name, "frame", frame, inter, math.prod(frame.batch) * frame.k,
                                             shift_cost(inter)))
            elif isinstance(node, Nonlinear) and node.fn == "qnn":
                mod = cast(QNNMap, gm.get_submodule(name))
                parts.append(QuantumPart(path, name, "qnn", mod, mod.circuit, None,
                                         shift_cost(mod.circuit, params=True, inputs=True)))
        for name, net in g.hypernetworks.items():
            if net.kind == "qpa":
                net_mod = cast(QPAHyperNetwork, gm.get_submodule(name))
                parts.append(QuantumPart(path, name, "qpa", net_mod, net_mod.circuit, 1, shift_cost(net_mod.circuit)))
    return parts


def _clear(source: Any, adapter_name: str) -> None:
    for gm in graph_modules(source, adapter_name).values():
        gm.clear_generated()


@contextmanager
def on_device(source: Any = None, backend: Any = "ideal", *, shots: int | None = 4096, mitigation: Any = None,
              seed: int | None = None, sampler: Any = None, device: Device | None = None,
              adapter_name: str = "default", remember: bool = False) -> Iterator[Device]:
    """Inside the block the quantum nodes of ``source`` (a model with adapters, a graph module, …;
    ``None``: every quantum node of the process) run on ``device`` — or on a new
    :class:`~tnpeft.quantum.device.Device` built from ``backend``, ``shots``, ``mitigation``,
    ``seed``, ``sampler`` and ``remember``. Yields the device (its :attr:`~Device.stats` count
    what ran). Outside the block everything is exact again."""
    dev = device if device is not None else Device(backend, shots=shots, mitigation=mitigation, seed=seed,
                                                   sampler=sampler, remember=remember)
    with ExitStack() as stack:
        if source is None:
            stack.enter_context(use_device(dev))
        else:
            parts = quantum_parts(source, adapter_name)
            if not parts:
                raise ConfigError("the adapter has no quantum node to run on a device (no pauli/givens frame, qnn node "
                                  "or QPA hyper-network)", field="source")
            for p in parts:
                attach_device(p.module, dev)
                stack.callback(attach_device, p.module, None)
            _clear(source, adapter_name)
            stack.callback(_clear, source, adapter_name)
        yield dev


@dataclass
class BudgetRow:
    """The device work of one circuit shape per training step."""

    shape: str
    kind: str
    qubits: int
    parts: int
    forward: int
    backward: int
    two_qubit: int | None
    duration: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Budget:
    """What one step sends to a device: per circuit shape its forward and backward circuits; in
    total circuits, shots and the estimated QPU seconds (``Σ shots × (duration + repetition delay)``,
    ZNE scales and read-out calibration included)."""

    device: str
    shots: int | None
    mitigation: str
    rows: list[BudgetRow] = field(default_factory=list)
    circuits: int = 0
    shots_total: int = 0
    qpu_seconds: float = 0.0
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "shots": self.shots, "mitigation": self.mitigation,
                "circuits_per_step": self.circuits, "shots_per_step": self.shots_total,
                "qpu_seconds_per_step": round(self.qpu_seconds, 3), "requests_per_step": self.requests,
                "shapes": [r.to_dict() for r in self.rows], "notes": self.notes}

    def summary(self) -> str:
        """One line: the step's circuits, shots, requests and estimated QPU time."""
        shots = "exact (no shots)" if self.shots is None else f"{self.shots:,} shots each"
        return (f"per step on {self.device} ({shots}, mitigation {self.mitigation}): {self.circuits:,} circuits, "
                f"{self.shots_total:,} shots, {self.requests} requests, ≈ {self.qpu_seconds:,.1f} s of QPU time")

    def __str__(self) -> str:
        # one line per circuit shape (``tnpeft train --dry-run`` prints the same as a table)
        lines = [f"{r.shape}: {r.kind} on {r.qubits} qubits, {r.parts} nodes, {r.forward:,} forward and "
                 f"{r.backward:,} backward circuits, {'—' if r.two_qubit is None else f'{r.two_qubit:,}'} two-qubit "
                 f"gates, {'—' if r.duration is None else f'{r.duration * 1e6:,.1f} µs'}" for r in self.rows]
        lines.append(self.summary())
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def device_budget(source: Any, device: Device, *, tokens: int = 1, backward: bool = True,
                  adapter_name: str = "default") -> Budget:
    """The device work of one training step (``backward=False``: one evaluation pass) of
    ``source``'s quantum nodes on ``device``, with ``tokens`` rows reaching each ``qnn`` node. The
    circuits are transpiled for the device (to read their gates and durations), nothing runs."""
    parts = quantum_parts(source, adapter_name)
    budget = Budget(device.name, device.shots, device.mitigation.label)
    shapes: dict[Circuit, list[QuantumPart]] = {}
    for p in parts:
        shapes.setdefault(p.circuit, []).append(p)
    scales = len(device.mitigation.zne) or 1
    physical = set()
    for circuit, members in shapes.items():
        compiled = device.compile_circuit(grouped_circuit(circuit))
        physical.add(compiled.physical)
        first = members[0]
        fwd = sum(tokens if p.forward is None else p.forward for p in members)
        bwd = sum((tokens if p.forward is None else p.forward) * p.shifts for p in members) if backward else 0
        label = f"{first.kind} {first.path + ':' if first.path else ''}{first.name}" + \
            (f" (+{len(members) - 1} alike)" if len(members) > 1 else "")
        dur = compiled.duration[0]
        budget.rows.append(BudgetRow(label, first.kind, circuit.n_qubits, len(members), fwd, bwd,
                                     compiled.two_qubit[0], dur))
        n = (fwd + bwd) * scales
        budget.circuits += n
        # qnn nodes run once per layer in sequence; hyper-networks and frames of one shape together
        calls = len(members) if first.kind == "qnn" else 1
        budget.requests += calls * ((1 if fwd else 0) + (1 if bwd else 0))
        if device.shots:
            budget.shots_total += n * device.shots
            budget.qpu_seconds += sum((fwd + bwd) * device.shots * ((d or 0.0) + device.rep_delay)
                                      for d in compiled.duration)
    cal = device.mitigation.extra_circuits(len(physical))["calibration_circuits"]
    if cal:
        budget.notes.append(f"read-out calibration: {cal} circuits once per run (2 per set of measured qubits)")
    if any(p.kind == "qnn" for p in parts):
        budget.notes.append(f"qnn nodes: counted for {tokens:,} tokens per step (batch size × tokens per text)")
    if device.shots is None:
        budget.notes.append("exact distributions: no shots, no QPU time")
    elif any(d is None for r in budget.rows for d in [r.duration]):
        budget.notes.append("the device states no durations: QPU time counts the repetition delay only")
    return budget
