"""Hyper-networks: trainable networks that produce the values of other nodes.

A graph may list hyper-networks; each fills a set of dense nodes (its *outputs*) with the values
it generates, and only the hyper-network is trained. The ``qpa`` kind is the hyper-network of QPA
(Liu et al., ICLR 2025, arXiv 2410.09846): a quantum circuit's measurement probabilities, each
paired with the bits of its basis state, run through a small mapping MLP that emits one chunk of
the target parameters per basis state.

For ``m`` target parameters and chunk size ``n_mlp``: ``n_ch = ⌈m / n_mlp⌉`` chunks and
``N_q = max(1, ⌈log₂ n_ch⌉)`` qubits. The circuit is ``L`` blocks of (``RY`` on every qubit, a
``CX`` ladder) from ``|0…0⟩`` — ``N_q · L`` angles. For basis state ``i < n_ch`` the features are
``(f(p_i), s₀(i), …, s_{N_q−1}(i))`` with ``s_q(i) = 2·bit_q(i) − 1 ∈ {−1, +1}`` (bit ``q`` =
qubit ``q``, Qiskit's order); the MLP maps them ``(N_q+1) → 32 → 64 → 128 → 128 → 64 → 32 → 32 →
n_mlp``; the chunks are concatenated and truncated to ``m``.

Presets (``preset=``):

- ``"reference"`` — the reference implementation's behaviour: ``f(p) = (0.6·tanh(0.1·2^{N_q−1}·p))^0.15``
  minus its mean over the ``n_ch`` states, an MLP *without* activation functions (an affine map),
  the generated vector mean-centred, and an adapter scale of 2 (set by :func:`tnpeft.adapters.qpa`).
- ``"tnpeft"`` (default) — ``f(p) = 2^{N_q}·p − 1`` (zero mean over all basis states, order one),
  ``tanh`` between the MLP's layers (an affine MLP can only emit chunks from an ``(N_q+2)``-dimensional
  space), no mean-centring, and the last layer initialised small (output std ≈ 0.02) so the adapted
  model starts close to the base model; adapter scale 1.

Probabilities come from the torch simulator by default; :meth:`QPAHyperNetwork.forward` also accepts
externally measured probabilities (from shots on a Qiskit backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, cast

import torch
from torch import nn

import tnpeft.params.limits as limits
from tnpeft.circuits.circuit import Circuit, qpa_circuit
from tnpeft.circuits.device_hooks import circuit_probabilities, device_for
from tnpeft.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from tnpeft.params.unitary.scope import FrameScope

QPA_HIDDEN = (32, 64, 128, 128, 64, 32, 32)
QPA_PRESETS = ("tnpeft", "reference")


@dataclass(frozen=True)
class QPAShape:
    """The sizes a QPA hyper-network derives from ``m`` target parameters and its options."""

    m: int
    chunk_size: int
    n_chunks: int
    qubits: int
    layers: int
    widths: tuple[int, ...]
    preset: str

    @property
    def circuit_parameters(self) -> int:
        return self.qubits * self.layers

    @property
    def mlp_parameters(self) -> int:
        w = self.widths
        return sum(a * b + b for a, b in zip(w[:-1], w[1:]))

    @property
    def num_parameters(self) -> int:
        return self.circuit_parameters + self.mlp_parameters


def qpa_shape(m: int, chunk_size: int | None = None, layers: int = 8, hidden: Any = QPA_HIDDEN,
              preset: str = "tnpeft", where: str = "") -> QPAShape:
    """Check a QPA hyper-network's options and derive its sizes (``chunk_size`` defaults to
    ``⌈m / 128⌉``, i.e. 128 chunks on 7 qubits)."""
    if chunk_size is None:
        chunk_size = max(1, math.ceil(m / 128))
    for key, v, hi in (("chunk_size", chunk_size, 1 << 24), ("layers", layers, 4096)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise ConfigError(f"{where}{key} must be a positive integer up to {hi}, got {v!r}", field=key)
    if not isinstance(hidden, (list, tuple)) or not hidden or len(hidden) > 64 or not all(
            isinstance(h, int) and not isinstance(h, bool) and 0 < h <= 1 << 16 for h in hidden):
        raise ConfigError(f"{where}hidden must be a non-empty list (up to 64) of layer widths in [1, 65536], "
                          f"got {hidden!r}",
                          field="hidden")
    if preset not in QPA_PRESETS:
        raise ConfigError(f"{where}preset must be one of {QPA_PRESETS}, got {preset!r}", field="preset")
    n_ch = math.ceil(m / chunk_size)
    qubits = max(1, math.ceil(math.log2(n_ch))) if n_ch > 1 else 1
    if qubits > limits.MAX_QUBITS:
        raise ConfigError(f"{where}{n_ch:,} chunks need {qubits} qubits; raise chunk_size (expected at most "
                          f"{limits.MAX_QUBITS} qubits)", field="chunk_size")
    return QPAShape(m, chunk_size, n_ch, qubits, layers, (qubits + 1, *hidden, chunk_size), preset)


class QPAHyperNetwork(nn.Module):
    """The QPA hyper-network; ``forward()`` returns the ``m`` generated values (a flat vector).

    Parameters: ``theta`` (``N_q·L`` circuit angles) and ``mlp`` (an ``nn.Sequential`` of
    ``nn.Linear`` layers). ``forward(probs=...)`` takes measured probabilities of the first
    ``n_ch`` basis states instead of simulating the circuit.
    """

    bits: torch.Tensor   # a buffer

    def __init__(self, m: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None,
                 **options: Any):
        super().__init__()
        self.shape = s = qpa_shape(m, **options)
        self.circuit: Circuit = qpa_circuit(s.qubits, s.layers)
        dtype = dtype or torch.get_default_dtype()
        meta = torch.device(device or "cpu").type == "meta"   # shapes only: draw nothing
        theta = torch.empty(s.circuit_parameters, dtype=dtype, device=device) if meta else \
            torch.rand(s.circuit_parameters, generator=rng, dtype=torch.float64) * (2 * math.pi) - math.pi
        self.theta = nn.Parameter(theta.to(dtype=dtype, device=device))
        layers: list[nn.Module] = []
        w = s.widths
        for i, (a, b) in enumerate(zip(w[:-1], w[1:])):
            lin = nn.Linear(a, b, dtype=dtype, device=device)
            bound = 1.0 / math.sqrt(a)
            if not meta:
                with torch.no_grad():
                    lin.weight.copy_((torch.rand(b, a, generator=rng, dtype=torch.float64) * 2 - 1) * bound)
                    lin.bias.copy_((torch.rand(b, generator=rng, dtype=torch.float64) * 2 - 1) * bound)
                    if i == len(w) - 2 and s.preset == "tnpeft":
                        lin.weight.mul_(0.02 * math.sqrt(3.0))   # output std ≈ 0.02 for unit-variance inputs
                        lin.bias.zero_()
            layers.append(lin)
            if s.preset == "tnpeft" and i < len(w) - 2:
                layers.append(nn.Tanh())
        self.mlp = nn.Sequential(*layers)
        idx = torch.arange(s.n_chunks, device=device)
        bits = ((idx[:, None] >> torch.arange(s.qubits, device=device)) & 1).to(dtype) * 2 - 1
        self.register_buffer("bits", bits, persistent=False)

    def set_probabilities(self, probs: torch.Tensor | None) -> None:
        """Use ``probs`` (e.g. measured on a quantum backend) instead of the simulated circuit until
        called again with ``None``. The owning module's cache must be cleared after a change
        (:meth:`tnpeft.GraphModule.clear_generated`)."""
        s = self.shape
        if probs is not None and tuple(probs.shape) != (s.n_chunks,):
            raise ConfigError(f"QPA hyper-network expects probabilities of its first {s.n_chunks} basis states, "
                              f"got shape {tuple(probs.shape)}", field="probs")
        self.__dict__["_override"] = probs

    @property
    def probability_override(self) -> torch.Tensor | None:
        """The probabilities given to :meth:`set_probabilities`, or ``None`` (simulate the circuit)."""
        return self.__dict__.get("_override")

    def probabilities(self) -> torch.Tensor:
        """The probabilities of the first ``n_ch`` basis states: exact (torch simulator), measured
        on the quantum device the module runs on (:func:`tnpeft.circuits.device_hooks.device_for`;
        gradients by the parameter-shift rule), or those given to :meth:`set_probabilities`."""
        if self.probability_override is not None:
            return self.probability_override
        device = device_for(self)
        work = torch.float64 if device is not None else torch.promote_types(self.theta.dtype, torch.float32)
        p = circuit_probabilities(self.circuit, self.theta.to(work), device=device)
        return p[: self.shape.n_chunks].to(self.theta.dtype)

    def features(self, probs: torch.Tensor) -> torch.Tensor:
        """The MLP's input, ``(n_ch, N_q + 1)``, from the probabilities of the first ``n_ch`` states."""
        s = self.shape
        if s.preset == "reference":
            f = (0.6 * torch.tanh(0.1 * 2.0 ** (s.qubits - 1) * probs)).pow(0.15)
            f = f - f.mean()
        else:
            f = probs * float(1 << s.qubits) - 1.0
        return torch.cat([f[:, None].to(self.bits.dtype), self.bits], dim=1)

    # the scope protocol (tnpeft.params.unitary.scope): hyper-networks of one shape across the
    # layers of a model run as one batched circuit simulation and one batched MLP
    def join_scope(self, scope: FrameScope) -> None:
        """Compute this hyper-network together with the scope's others of the same shape."""
        self.__dict__["scope"] = scope
        scope.register(self)

    def batch_key(self) -> tuple[object, ...]:
        return (type(self), self.shape, tuple(type(m) for m in self.mlp))

    def scope_device(self) -> tuple[torch.dtype, torch.device]:
        return self.theta.dtype, self.theta.device

    def scope_version(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters())

    def compute_alone(self) -> torch.Tensor:
        return self._generate(None)

    @staticmethod
    def compute_group(members: list[QPAHyperNetwork]) -> list[torch.Tensor]:
        if len(members) == 1:
            return [members[0]._generate(None)]
        first, s = members[0], members[0].shape
        device = device_for(first)
        work = torch.float64 if device is not None else torch.promote_types(first.theta.dtype, torch.float32)
        thetas = torch.stack([m.theta for m in members]).to(work)
        probs = circuit_probabilities(first.circuit, thetas, device=device)[:, : s.n_chunks].to(first.theta.dtype)
        x = torch.stack([m.features(p) for m, p in zip(members, probs)])      # (G, n_ch, N_q + 1)
        for j, layer in enumerate(first.mlp):
            if isinstance(layer, nn.Linear):
                w = torch.stack([cast(nn.Linear, m.mlp[j]).weight for m in members])          # (G, out, in)
                b = torch.stack([cast(nn.Linear, m.mlp[j]).bias for m in members])
                x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            else:
                x = layer(x)
        out = x.reshape(len(members), -1)[:, : s.m]
        if s.preset == "reference":
            out = out - out.mean(1, keepdim=True)
        return list(out.unbind(0))

    def forward(self, probs: torch.Tensor | None = None) -> torch.Tensor:
        scope: FrameScope | None = self.__dict__.get("scope")
        if probs is None and self.probability_override is None and scope is not None:
            return scope.frame(self)
        return self._generate(probs)

    def _generate(self, probs: torch.Tensor | None) -> torch.Tensor:
        s = self.shape
        if probs is None:
            probs = self.probabilities()
        elif probs.shape != (s.n_chunks,):
            raise ConfigError(f"QPA hyper-network expects probabilities of its first {s.n_chunks} basis states, "
                              f"got shape {tuple(probs.shape)}", field="probs")
        out: torch.Tensor = self.mlp(self.features(probs.to(self.theta.device))).reshape(-1)[: s.m]
        if s.preset == "reference":
            out = out - out.mean()
        return out


class HyperNetworkShape(Protocol):
    """What a kind's option check returns: at least the closed-form count of its parameters."""

    @property
    def num_parameters(self) -> int: ...


@dataclass(frozen=True)
class HyperNetworkKind:
    """A registered hyper-network kind: option check (→ shape), closed-form count, builder."""

    name: str
    shape: Callable[..., HyperNetworkShape]
    build: Callable[..., nn.Module]

    def num_parameters(self, m: int, **options: Any) -> int:
        return self.shape(m, **options).num_parameters


HYPERNETWORKS: dict[str, HyperNetworkKind] = {"qpa": HyperNetworkKind("qpa", qpa_shape, QPAHyperNetwork)}
