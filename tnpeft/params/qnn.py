"""Nonlinear maps with trainable parameters: a quantum neural network (QNN) simulated in torch.

A nonlinear node whose ``fn`` names a map here (rather than an element-wise function) owns a
small module. The ``qnn`` map reads its input features as rotation angles, runs a real circuit
(:func:`tnpeft.circuits.circuit.qnn_circuit`) for all tokens at once (:mod:`tnpeft.circuits.token_program`:
a few matrix products per encoding round) and reads out
measurement probabilities or ``⟨Z⟩`` values; a *fusion* combines that read-out ``q`` with the
input ``h``:

- ``"product"`` (QWTHN v1, "quantum weighted"): ``h ⊙ q`` — the QNN weights each feature.
- ``"linear"`` (QWTHN v2 / QTHA): ``a ⊙ h + b ⊙ q`` with trainable vectors ``a`` (init 1) and
  ``b`` (init 0), so the map starts as the identity.
- ``"none"``: ``q`` itself (the first ``out`` read-out values).

Read-outs: ``"probs"`` gives ``2ⁿ · p_i`` (probabilities scaled so that their mean over all basis
states is 1, a neutral weight), ``"z"`` gives ``⟨Z_q⟩ ∈ [−1, 1]`` per qubit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

import tnpeft.params.limits as limits
from tnpeft.circuits.circuit import Circuit, encoding_rounds, expect_z, probabilities, qnn_circuit, simulate, z_signs
from tnpeft.circuits.device_hooks import device_for
from tnpeft.circuits.parameter_shift import device_probabilities
from tnpeft.circuits.token_program import run_token_program, token_program
from tnpeft.errors import ConfigError

FUSIONS = ("product", "linear", "none")
READOUTS = ("probs", "z")


def default_qubits(n_features: int) -> int:
    """``⌈log₂ n⌉`` qubits (at least one) for ``n`` features."""
    return max(1, math.ceil(math.log2(n_features))) if n_features > 1 else 1


@dataclass(frozen=True)
class QNNOptions:
    qubits: int
    layers: int
    entangler: str
    readout: str
    fusion: str

    @property
    def readout_size(self) -> int:
        return (1 << self.qubits) if self.readout == "probs" else self.qubits


def qnn_options(in_size: int, out_size: int, node: str | None = None, **options: Any) -> QNNOptions:
    """Check a ``qnn`` node's options against its sizes; return them with defaults filled in."""
    allowed = {"qubits", "layers", "entangler", "readout", "fusion"}
    unknown = set(options) - allowed
    where = f"nonlinear node {node!r}: " if node else ""
    if unknown:
        raise ConfigError(f"{where}the qnn map takes options {sorted(allowed)}, not {sorted(unknown)}",
                          field=sorted(unknown)[0])
    for what, size in (("input", in_size), ("output", out_size)):
        if size > limits.MAX_QNN_INPUTS:
            raise ConfigError(f"{where}the qnn map reads {size:,} {what} features; expected at most "
                              f"{limits.MAX_QNN_INPUTS:,} (each input is one encoding gate)", field="inputs")
    qubits = options.get("qubits") or default_qubits(in_size)
    layers = options.get("layers", 2)
    for key, v, lo in (("qubits", qubits, 1), ("layers", layers, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 4096:
            raise ConfigError(f"{where}option {key!r} must be a positive integer up to 4096, got {v!r}", field=key)
    if qubits > limits.MAX_QUBITS:
        raise ConfigError(f"{where}option 'qubits'={qubits}: the statevector would hold 2^{qubits} amplitudes "
                          f"per sample; expected at most {limits.MAX_QUBITS}", field="qubits")
    o = QNNOptions(qubits, layers, options.get("entangler", "cz"), options.get("readout", "probs"),
                   options.get("fusion", "product"))
    if o.entangler not in ("cz", "cx"):
        raise ConfigError(f"{where}entangler must be 'cz' or 'cx', got {o.entangler!r}", field="entangler")
    if o.readout not in READOUTS:
        raise ConfigError(f"{where}readout must be one of {READOUTS}, got {o.readout!r}", field="readout")
    if o.fusion not in FUSIONS:
        raise ConfigError(f"{where}fusion must be one of {FUSIONS}, got {o.fusion!r}", field="fusion")
    if o.fusion != "none" and out_size != in_size:
        raise ConfigError(f"{where}fusion {o.fusion!r} combines the read-out with the input, so the output size "
                          f"must equal the input size {in_size}, got {out_size}", field="fusion")
    if o.readout_size < out_size:
        raise ConfigError(f"{where}readout {o.readout!r} on {qubits} qubits gives {o.readout_size} values, fewer "
                          f"than the {out_size} the node outputs; use more qubits or readout 'probs'", field="qubits")
    return o


def qnn_num_parameters(in_size: int, out_size: int, **options: Any) -> int:
    """Closed form: ``qubits · max(layers, ⌈in/qubits⌉)`` angles, plus ``2·in`` for linear fusion."""
    o = qnn_options(in_size, out_size, **options)
    angles = o.qubits * max(o.layers, encoding_rounds(in_size, o.qubits))
    return angles + (2 * in_size if o.fusion == "linear" else 0)


class QNNMap(nn.Module):
    """The ``qnn`` nonlinear map: ``(rows, *in sizes) → (rows, *out sizes)``.

    Parameters: ``theta`` (the circuit's angles, uniform in ``[−π, π)``) and, for linear fusion,
    ``a`` and ``b``. The circuit is simulated in float32 at least (bfloat16/float16 inputs are
    promoted and the result cast back).
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None,
                 rng: torch.Generator | None = None, node: str | None = None, **options: Any):
        super().__init__()
        self.in_size, self.out_size = math.prod(in_shape), math.prod(out_shape)
        self.out_shape = tuple(out_shape)
        self.opts = qnn_options(self.in_size, self.out_size, node=node, **options)
        self.circuit: Circuit = qnn_circuit(self.opts.qubits, self.opts.layers, self.in_size, self.opts.entangler)
        if torch.device(device or "cpu").type == "meta":   # shapes only: draw nothing
            theta = torch.empty(self.circuit.n_params, dtype=dtype, device=device)
        else:
            theta = torch.rand(self.circuit.n_params, generator=rng, dtype=torch.float64) * (2 * math.pi) - math.pi
        self.theta = nn.Parameter(theta.to(dtype=dtype or torch.get_default_dtype(), device=device))
        if self.opts.fusion == "linear":
            self.a = nn.Parameter(torch.ones(self.in_size, dtype=dtype, device=device))
            self.b = nn.Parameter(torch.zeros(self.in_size, dtype=dtype, device=device))

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """The scaled read-out ``q`` for features ``h`` of shape ``(rows, in)``. On a quantum device
        (:func:`tnpeft.circuits.device_hooks.device_for`) every row is one circuit measured there,
        with parameter-shift gradients for the angles and, when ``h`` needs one, the inputs."""
        work = torch.promote_types(h.dtype, torch.float32)
        device = device_for(self)
        if device is not None:
            p = device_probabilities(device, self.circuit, self.theta.to(torch.float64), h.to(torch.float64))
            q = p * float(1 << self.opts.qubits) if self.opts.readout == "probs" else p @ z_signs(self.opts.qubits)
            return q.to(h.dtype)
        program = token_program(self.circuit)
        if program is not None and h.dim() == 2:
            state = run_token_program(program, self.circuit.n_qubits, self.theta.to(work), h.to(work))
        else:
            state = simulate(self.circuit, self.theta.to(work), h.to(work))
        if self.opts.readout == "probs":
            q = probabilities(state) * float(1 << self.opts.qubits)
        else:
            q = expect_z(state)
        return q.to(h.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[0]
        flat = h.reshape(rows, self.in_size)
        q = self.readout(flat)
        f = self.opts.fusion
        if f == "product":
            out = flat * q[:, : self.in_size]
        elif f == "linear":
            out = flat * self.a + q[:, : self.in_size] * self.b
        else:
            out = q[:, : self.out_size]
        return out.reshape(rows, *self.out_shape)


@dataclass(frozen=True)
class NonlinearMap:
    """A registered nonlinear map: options check, closed-form count and module builder."""

    name: str
    check: Callable[..., object]
    num_parameters: Callable[..., int]
    build: Callable[..., nn.Module]


NONLINEAR_MAPS: dict[str, NonlinearMap] = {
    "qnn": NonlinearMap("qnn", qnn_options, qnn_num_parameters, QNNMap),
}
