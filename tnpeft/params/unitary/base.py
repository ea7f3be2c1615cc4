"""What every frame parametrization shares: the module base class and small helpers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence, cast

import torch
from torch import nn

import tnpeft.params.limits as limits
from tnpeft.circuits.circuit import Circuit
from tnpeft.circuits.device_hooks import device_for, device_frames
from tnpeft.circuits.parameter_shift import CircuitDevice
from tnpeft.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from tnpeft.params.unitary.scope import FrameScope


def eye_frames(n: int, k: int, g: int, like: torch.Tensor) -> torch.Tensor:
    """``g`` copies of ``I_{N×K}`` (a view, not a copy) in ``like``'s dtype and device."""
    return torch.eye(n, k, dtype=like.dtype, device=like.device).expand(g, n, k)


def init_angles(shape: Sequence[int], init: str, dtype: torch.dtype | None, device: torch.device | str | None,
                rng: torch.Generator | None) -> nn.Parameter:
    """Circuit angles: uniform on (−π, π), or zero for ``init="identity"``."""
    theta = torch.empty(*shape, dtype=dtype, device=device)
    with torch.no_grad():
        if init == "random":
            theta.uniform_(-math.pi, math.pi, generator=rng)
        else:
            theta.zero_()
    return nn.Parameter(theta)


def quantize_ste(theta: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Round angles to ``2^bits`` levels on the circle; the gradient passes straight through.

    Beyond 20 bits the rounding is done in float64 (in float32 the level index would lose digits,
    and the step ``2π/2^bits`` underflows for ``bits ≥ 130``); beyond
    :data:`~tnpeft.params.limits.MAX_ANGLE_BITS` the grid is finer than float64 resolves angles, and
    the angles are returned as they are (graphs refuse such ``bits``)."""
    if not bits or bits > limits.MAX_ANGLE_BITS:
        return theta
    step = math.ldexp(2 * math.pi, -bits)
    work = theta if bits <= 20 or theta.dtype == torch.float64 else theta.double()
    q = (torch.round(work / step) * step).to(theta.dtype)
    return theta + (q - theta).detach()


class FrameModule(nn.Module):
    """Base of the parametrizations: one trainable tensor of shape ``(*batch, *tail)`` mapped by
    :meth:`_compute` to frames ``(G, N, K)``. With a :class:`~tnpeft.params.unitary.FrameScope`
    (:meth:`join_scope`) frames of equal shape across modules are computed together."""

    n: int
    k: int
    batch: tuple[int, ...]
    scope: FrameScope | None   # kept in __dict__ (see __init__)

    def __init__(self, n: int, k: int, batch: Sequence[int] = ()) -> None:
        super().__init__()
        self.n, self.k, self.batch = n, k, tuple(batch)
        self.__dict__["scope"] = None  # a plain reference: not a submodule, not state

    def join_scope(self, scope: FrameScope) -> None:
        """Compute this frame together with the scope's other frames of the same shape."""
        self.__dict__["scope"] = scope
        scope.register(self)

    def leave_scope(self) -> None:
        """Stop being computed with the scope's other frames (a frame applied without its matrix)."""
        scope = self.scope
        if scope is not None:
            scope.unregister(self)
        self.__dict__["scope"] = None

    def free_tensor(self) -> torch.Tensor:
        """The one trainable tensor, shape ``(*batch, *tail)``."""
        raise NotImplementedError

    def options_key(self) -> tuple[object, ...]:
        """What besides the shape must match for two frames to be computed in one batch."""
        return ()

    def batch_key(self) -> tuple[object, ...]:
        p = self.free_tensor()
        return (type(self), self.n, self.k, tuple(p.shape[len(self.batch):])) + self.options_key()

    def flat_param(self) -> torch.Tensor:
        """The parameter with the batch flattened: ``(G, *tail)``."""
        p = self.free_tensor()
        return p.reshape(math.prod(self.batch), *p.shape[len(self.batch):])

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def frames(self, flat: torch.Tensor) -> torch.Tensor:
        """The frames ``(G, N, K)`` of flat parameters ``(G, *tail)``, in the parameters' dtype.

        bfloat16 / float16 parameters: the frame is computed in float32 (orthonormal to ~1e-7) and
        only the result is rounded to the parameters' dtype. Autocast is off while the frame is
        built (a frame rounded factor by factor to bfloat16 would drift from orthonormal); the
        products with it, outside, run under whatever autocast the caller chose.

        On a quantum device (:func:`tnpeft.circuits.device_hooks.device_for`), a frame with a
        circuit of its own (:meth:`device_circuit`) is estimated from that device's measurements,
        signs included, with parameter-shift gradients (:meth:`device_frames`)."""
        device = device_for(self)
        if device is not None and self.device_circuit() is not None:
            return self.device_frames(device, flat)
        with torch.autocast(flat.device.type, enabled=False):
            if flat.dtype in (torch.bfloat16, torch.float16):
                return self._compute(flat.float()).to(flat.dtype)
            return self._compute(flat)

    def device_circuit(self) -> Circuit | None:
        """The circuit (on ``⌈log₂ rows⌉`` qubits) whose first ``K`` columns make the frame, or
        ``None`` for parametrizations that have no circuit with trainable angles."""
        return None

    def circuit_angles(self, flat: torch.Tensor) -> torch.Tensor:
        """The circuit's angles ``(G, n_params)`` for flat parameters ``(G, *tail)``."""
        return flat

    def from_circuit_columns(self, columns: torch.Tensor) -> torch.Tensor:
        """The frames ``(G, N, K)`` from the circuit's first ``K`` columns ``(G, 2^q, K)``: their first ``N`` rows."""
        return columns[:, : self.n, :]

    def device_frames(self, device: CircuitDevice, flat: torch.Tensor) -> torch.Tensor:
        """The frames ``(G, N, K)`` estimated on ``device`` (interference circuits; see
        :func:`tnpeft.circuits.device_hooks.device_frames`), in ``flat``'s dtype."""
        work = flat.double() if flat.dtype in (torch.bfloat16, torch.float16) else flat
        circuit = self.device_circuit()
        if circuit is None:
            raise ConfigError(f"{type(self).__name__} has no circuit of its own to run on a device", field="device")
        cols = device_frames(device, circuit, self.circuit_angles(work), self.k)
        return self.from_circuit_columns(cols).to(flat.dtype)

    def frames_float64(self) -> torch.Tensor:
        """This module's frames re-evaluated from its parameters in float64, ``(G, N, K)`` (for
        export and checks: independent of the training dtype)."""
        return self._compute(self.flat_param().detach().to(torch.float64))

    def apply_cost(self) -> float | None:
        """Work per vector of :meth:`apply_frame` relative to a dense product with the frame (``N·K``
        multiply-adds), or ``None`` when the frame cannot be applied without being formed."""
        return None

    def apply_frame(self, h: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        """``U`` applied to every vector of ``h`` ``(M, G, K)`` → ``(M, G, N)`` (``Uᵀ``, ``(M, G, N)`` →
        ``(M, G, K)``, with ``adjoint``) without forming ``U``; only where :meth:`apply_cost` is
        not ``None``."""
        raise NotImplementedError(f"{type(self).__name__} is applied through its matrix")

    # the scope protocol (tnpeft.params.unitary.scope)
    def scope_device(self) -> tuple[torch.dtype, torch.device]:
        p = self.free_tensor()
        return p.dtype, p.device

    def scope_version(self) -> int:
        return self.free_tensor()._version

    def compute_alone(self) -> torch.Tensor:
        return self.frames(self.flat_param()).reshape(*self.batch, self.n, self.k)

    @staticmethod
    def compute_group(members: list[FrameModule]) -> list[torch.Tensor]:
        flats = [m.flat_param() for m in members]
        frames = members[0].frames(torch.cat(flats) if len(flats) > 1 else flats[0])
        return [f.reshape(*m.batch, m.n, m.k) for m, f in zip(members, frames.split([x.shape[0] for x in flats]))]

    def set_frames(self, frames: torch.Tensor | None) -> None:
        """Use ``frames`` ``(*batch, N, K)`` — e.g. estimated on a quantum device — as this module's
        value until called again with ``None`` (they take no gradient; the parameters are untouched)."""
        if frames is not None and tuple(frames.shape) != (*self.batch, self.n, self.k):
            raise ConfigError(f"frames of shape {tuple(frames.shape)} given to a frame of shape "
                              f"{(*self.batch, self.n, self.k)}", field="frames")
        self.__dict__["frame_override"] = None if frames is None else frames.detach()

    @property
    def frame_override(self) -> torch.Tensor | None:
        """The frames given to :meth:`set_frames`, or ``None``."""
        return self.__dict__.get("frame_override")

    def forward(self) -> torch.Tensor:
        override = self.__dict__.get("frame_override")
        if override is not None:
            return cast(torch.Tensor, override.to(self.free_tensor().dtype))
        if self.scope is not None:
            return self.scope.frame(self)
        return self.frames(self.flat_param()).reshape(*self.batch, self.n, self.k)


class AngleFrame(FrameModule):
    """A frame whose free parameters are circuit angles ``theta``."""

    theta: nn.Parameter

    def free_tensor(self) -> torch.Tensor:
        return self.theta
