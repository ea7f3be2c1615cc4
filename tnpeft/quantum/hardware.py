r"""An adapter's quantum parts estimated on a device, and what that does to each module.

:func:`estimate_quantum_parts` measures every quantum part of an adapter (anything
:func:`tnpeft.graph_modules` reads: a model with injected adapters, a saved adapter folder, a graph
module) once on a :class:`~tnpeft.quantum.device.Device`:

- **frames** (``pauli``, ``givens``; Quantum-PEFT's ``U`` and ``V``) with their signs — by default
  from shallow circuits (``frames="hadamard"``, :mod:`tnpeft.quantum.relative_signs`), or from
  interference circuits (``frames="interference"``, :mod:`tnpeft.circuits.device_hooks`); a
  ``pow2`` frame is measured on its padded rows and projected;
- **QPA hyper-networks**: the probabilities of their circuits (the weights are then generated from
  them by the mapping network, as QPA intends: inference needs no quantum computer);

all parts of one circuit shape in one request. :meth:`QuantumEstimate.apply` puts the estimates in
place of the exact values (frames through ``set_frames``, QPA through ``set_probabilities``) so that
any evaluation — a model's accuracy — sees the adapter as the device gave it.
:meth:`QuantumEstimate.report` gives per module the relative error of each frame and of each
hyper-network's generated values, of the update ``ΔW`` (linear graphs; ``None`` when ``ΔW = 0``,
e.g. ``Λ = 0`` — never "0 %") and of the module's output on a probe batch. ``qnn`` nodes
(QWTHN) read the data, so they run per token during the evaluation itself
(:func:`tnpeft.quantum.on_device`); the report measures their module's output on the probe batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tnpeft.circuits.circuit import unitary_matrix
from tnpeft.circuits.device_hooks import attach_device, circuit_probabilities, device_frames
from tnpeft.errors import ConfigError
from tnpeft.quantum.device import Device
from tnpeft.quantum.in_the_loop import QuantumPart, quantum_parts
from tnpeft.quantum.relative_signs import phase_circuit, phase_inputs, reconstruct_frame
from tnpeft.quantum.signed import adapter_update
from tnpeft.storage import graph_modules

FRAME_METHODS = ("hadamard", "interference")


@dataclass
class PartEstimate:
    """One quantum part's estimate: ``value`` (a frame ``(*batch, N, K)``, or QPA's probabilities of
    its first ``n_ch`` states) beside ``exact``."""

    part: QuantumPart
    value: torch.Tensor
    exact: torch.Tensor

    @property
    def relative_error(self) -> float:
        den = float(torch.linalg.norm(self.exact))
        return float(torch.linalg.norm(self.value - self.exact)) / den if den > 0 else float("nan")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float | None:
    den = float(torch.linalg.norm(b))
    return float(torch.linalg.norm(a - b)) / den if den > 0 else None


@dataclass
class QuantumEstimate:
    """The quantum parts of an adapter estimated on ``device`` (:func:`estimate_quantum_parts`)."""

    source: Any
    device: Device
    frames: str
    parts: list[PartEstimate] = field(default_factory=list)
    adapter_name: str = "default"

    @contextmanager
    def apply(self, qnn_on_device: bool = True) -> Iterator[QuantumEstimate]:
        """Inside the block the adapter uses the estimates (and, with ``qnn_on_device``, runs its
        ``qnn`` nodes on the device, token by token)."""
        modules = graph_modules(self.source, self.adapter_name)
        with ExitStack() as stack:
            for pe in self.parts:
                mod = pe.part.module
                if pe.part.kind == "frame":
                    mod.set_frames(pe.value.to(mod.free_tensor().dtype))
                    stack.callback(mod.set_frames, None)
                else:
                    mod.set_probabilities(pe.value.to(mod.theta.dtype))
                    stack.callback(mod.set_probabilities, None)
            if qnn_on_device:
                for part in quantum_parts(self.source, self.adapter_name):
                    if part.kind == "qnn":
                        attach_device(part.module, self.device)
                        stack.callback(attach_device, part.module, None)
            for gm in modules.values():
                gm.clear_generated()
                stack.callback(gm.clear_generated)
            yield self

    def report(self, probe_rows: int = 16, seed: int = 0) -> list[dict[str, Any]]:
        """Per adapted module: each part's relative error, the update's (``None`` when the exact
        ``ΔW`` is 0) and the output's on ``probe_rows`` random input rows."""
        out = []
        by_path: dict[str, list[PartEstimate]] = {}
        for pe in self.parts:
            by_path.setdefault(pe.part.path, []).append(pe)
        for path, gm in graph_modules(self.source, self.adapter_name).items():
            g = gm.graph
            dtype = gm.param_dtype
            x = torch.randn(probe_rows, g.in_features, generator=torch.Generator().manual_seed(seed)).to(dtype)
            row: dict[str, Any] = {"module": path, "parts": {pe.part.name: pe.relative_error for pe in by_path.get(path, [])}}
            with torch.no_grad():
                exact_y = gm(x).double()
                exact_w = adapter_update(g, gm) if g.is_linear and g.mode == "add" and not g.shared_legs else None
                with self.apply():
                    dev_y = gm(x).double()
                    dev_w = adapter_update(g, gm) if exact_w is not None else None
            row["delta_norm"] = None if exact_w is None else float(torch.linalg.norm(exact_w))
            row["delta_error"] = None if exact_w is None or dev_w is None else _rel(dev_w, exact_w)
            row["output_error"] = _rel(dev_y, exact_y)
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device.name, "shots": self.device.shots, "mitigation": self.device.mitigation.label,
                "frames": self.frames, "parts": [{"module": p.part.path, "node": p.part.name, "kind": p.part.kind,
                                                  "relative_error": p.relative_error} for p in self.parts]}


def _frame_group(parts: list[QuantumPart], device: Device, method: str) -> list[PartEstimate]:
    first = parts[0].module
    circ = first.device_circuit()
    k, q = first.k, circ.n_qubits
    with torch.no_grad():
        thetas = [p.module.circuit_angles(p.module.flat_param().detach().to(torch.float64)) for p in parts]
        allt = torch.cat(thetas)                                                    # (G, P)
        exact_cols = unitary_matrix(circ, allt)[..., :k]                            # (G, D, K)
        if method == "hadamard":
            inputs = torch.as_tensor(phase_inputs(q, k))
            probs = circuit_probabilities(phase_circuit(circ), allt[:, None, :], inputs[None], device=device)
            cols = torch.stack([torch.as_tensor(reconstruct_frame(p.numpy(), q, k, e.numpy()))
                                for p, e in zip(probs, exact_cols)])
        else:
            cols = device_frames(device, circ, allt, k)
        out, start = [], 0
        for p, t in zip(parts, thetas):
            g = t.shape[0]
            m = p.module
            value = m.from_circuit_columns(cols[start:start + g]).reshape(*m.batch, m.n, m.k)
            exact = m.from_circuit_columns(exact_cols[start:start + g]).reshape(*m.batch, m.n, m.k)
            out.append(PartEstimate(p, value, exact))
            start += g
    return out


def _qpa_group(parts: list[QuantumPart], device: Device) -> list[PartEstimate]:
    first = parts[0].module
    n_ch = first.shape.n_chunks
    with torch.no_grad():
        thetas = torch.stack([p.module.theta.detach().to(torch.float64) for p in parts])
        probs = circuit_probabilities(first.circuit, thetas, device=device)[:, :n_ch]
        exact = circuit_probabilities(first.circuit, thetas)[:, :n_ch]
    return [PartEstimate(p, v, e) for p, v, e in zip(parts, probs, exact)]


def estimate_quantum_parts(source: Any, device: Device, *, frames: str = "hadamard",
                           adapter_name: str = "default") -> QuantumEstimate:
    """Measure the frames and QPA hyper-networks of ``source``'s adapter once on ``device`` (module
    docstring); ``qnn`` nodes are left to run per token inside :meth:`QuantumEstimate.apply`."""
    if frames not in FRAME_METHODS:
        raise ConfigError(f"frames must be one of {FRAME_METHODS}, got {frames!r}", field="frames")
    parts = quantum_parts(source, adapter_name)
    if not parts:
        raise ConfigError("the adapter has no quantum part (no pauli/givens frame, qnn node or QPA hyper-network)",
                          field="source")
    est = QuantumEstimate(source, device, frames, adapter_name=adapter_name)
    groups: dict[Any, list[QuantumPart]] = {}
    for p in parts:
        if p.kind == "frame":
            key: Any = ("frame", p.module.device_circuit(), p.module.k, type(p.module), p.module.n,
                        getattr(p.module, "pow2", False))
        elif p.kind == "qpa":
            key = ("qpa", p.module.circuit, p.module.shape.n_chunks)
        else:
            continue
        groups.setdefault(key, []).append(p)
    for key, members in groups.items():
        est.parts += _frame_group(members, device, frames) if key[0] == "frame" else _qpa_group(members, device)
    return est


def frame_errors(estimate: QuantumEstimate) -> dict[str, float]:
    """``{"module:node": relative error}`` of every estimated part."""
    return {f"{p.part.path + ':' if p.part.path else ''}{p.part.name}": p.relative_error for p in estimate.parts}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and maxima over modules of the errors :meth:`QuantumEstimate.report` gives."""
    def stat(vals: list[float]) -> dict[str, float] | None:
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        return {"median": float(np.median(vals)), "max": float(np.max(vals))} if vals else None

    parts = [v for r in rows for v in r["parts"].values()]
    return {"modules": len(rows), "part_error": stat(parts), "delta_error": stat([r["delta_error"] for r in rows]),
            "output_error": stat([r["output_error"] for r in rows]),
            "zero_updates": sum(1 for r in rows if r["delta_norm"] == 0.0)}
