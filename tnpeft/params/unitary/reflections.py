"""Frames from elementary orthogonal maps: Householder reflections and Givens butterflies."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from tnpeft.caches import memoized
from tnpeft.circuits.circuit import Circuit
from tnpeft.circuits.frames import givens_circuit
from tnpeft.params.unitary.base import AngleFrame, FrameModule, eye_frames, init_angles, quantize_ste
from tnpeft.params.unitary.butterfly import apply_factors, block_diagonal, butterfly_blocks, monarch_factors


class HouseholderFrame(FrameModule):
    r"""``U = H_1 ⋯ H_{K′} I_{N×K}``, ``H_j = I − 2 u_j u_jᵀ``, ``u_j = v_j / ‖v_j‖`` (a zero
    ``v_j`` gives ``H_j = I``). Parameters ``N·K′``; cost ``O(N·K·K′)``. ``init="paired"`` repeats
    each random vector once (``u₂ = u₁``, …; an odd last one is zero): the product starts at the
    identity with non-zero gradients (HRA's symmetric initialisation)."""

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), intrinsic_rank: int | None = None,
                 init: str = "random", dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None):
        super().__init__(n, k, batch)
        m = min(intrinsic_rank or k, n)
        v = torch.empty(*self.batch, m, n, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "random":
                v.normal_(0.0, 1.0, generator=rng)
            elif init == "paired":   # u₁ = u₂, u₃ = u₄, …: H₁H₂ = I, so U starts at I_{N×K} with live gradients
                v.zero_()
                half = v[..., : m - m % 2: 2, :]
                half.normal_(0.0, 1.0, generator=rng)
                v[..., 1: m - m % 2: 2, :] = half
            else:
                v.zero_()
        self.vectors = nn.Parameter(v)

    def free_tensor(self) -> torch.Tensor:
        return self.vectors

    def _compute(self, v: torch.Tensor) -> torch.Tensor:
        norm = v.norm(dim=2, keepdim=True)
        u = torch.where(norm > 0, v / norm.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))
        m = eye_frames(self.n, self.k, v.shape[0], v)
        for j in range(v.shape[1] - 1, -1, -1):
            uj = u[:, j].unsqueeze(2)                       # (G, N, 1)
            m = m - 2.0 * uj @ (uj.transpose(1, 2) @ m)
        return m


@memoized("tables:butterfly_pairs")
def butterfly_pairs(n: int, layers: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Per butterfly layer ``l``: the rows ``i`` and ``i + 2^(l mod ⌈log₂ n⌉)`` it rotates together."""
    depth = max(1, (n - 1).bit_length())
    out = []
    for layer in range(layers):
        stride = 1 << (layer % depth)
        a = tuple(i for i in range(n) if (i // stride) % 2 == 0 and i + stride < n)
        out.append((a, tuple(i + stride for i in a)))
    return tuple(out)


def _pairs_at(n: int, stride: int) -> int:
    # rows i < n - stride whose block i // stride is even: the pairs one butterfly layer rotates
    q, r = divmod(max(0, n - stride), 2 * stride)
    return q * stride + min(r, stride)


def givens_count(n: int, layers: int | None = None) -> int:
    """Angles of the ``givens`` frame of size ``n``: one per rotated pair of rows, over all layers
    (closed form: nothing is enumerated)."""
    layers = layers or max(1, (n - 1).bit_length())
    depth = max(1, (n - 1).bit_length())
    full, rest = divmod(layers, depth)
    per = [_pairs_at(n, 1 << s) for s in range(depth)]
    return full * sum(per) + sum(per[:rest])


class GivensFrame(AngleFrame):
    """Butterfly layers of disjoint Givens rotations: layer ``l`` rotates rows ``i`` and
    ``i + 2^(l mod ⌈log₂N⌉)``. ``⌈log₂ N⌉`` layers (the default) connect every row with every other,
    as in an FFT. Exactly orthogonal; ``O(N·K)`` per layer; never a dense permutation.

    Each layer is applied on a strided view of the rows — ``(blocks, 2, stride, K)``, the pairs
    being the two halves of each block — with the layer's angles scattered into a
    ``(blocks, stride)`` table (zero, the identity, where a pair would leave the ``N`` rows):
    contiguous element-wise work, no row gathers or scatters."""

    _layout: tuple[_LayoutRow, ...]   # kept in __dict__ (see __init__)

    def __init__(self, n: int, k: int, batch: Sequence[int] = (), layers: int | None = None, bits: int | None = None,
                 init: str = "random", dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 rng: torch.Generator | None = None):
        super().__init__(n, k, batch)
        self.bits = bits
        self.n_layers = layers or max(1, (n - 1).bit_length())
        pairs = butterfly_pairs(n, self.n_layers)
        self.__dict__["_layout"] = _layout(n, pairs)   # plain data: where each layer's angles go
        self.theta = init_angles((*self.batch, sum(len(a) for a, _ in pairs)), init, dtype, device, rng)

    def options_key(self) -> tuple[object, ...]:
        return (self.n_layers, self.bits)

    def angles(self) -> torch.Tensor:
        """The angles the rotations use, ``(G, count)``: quantized when the frame has ``bits``."""
        return quantize_ste(self.flat_param(), self.bits)

    def device_circuit(self) -> Circuit | None:
        """The butterfly as fully controlled ``RY(2θ)`` gates (:func:`~tnpeft.circuits.frames.givens_circuit`)."""
        return givens_circuit(self.n, butterfly_pairs(self.n, self.n_layers)) if self.n > 1 else None

    def circuit_angles(self, flat: torch.Tensor) -> torch.Tensor:
        return quantize_ste(flat, self.bits)

    @property
    def size(self) -> int:
        """The rows the butterfly runs on: ``N`` rounded up to a power of two (extra rows stay 0)."""
        return 1 << max(1, (self.n - 1).bit_length())

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        g = theta.shape[0]
        m, off, layout = eye_frames(self.n, self.k, g, theta), 0, self._layout
        if 8 * self.k >= self.n and self.n > 2:
            # a wide frame: while the strides grow 1, 2, 4, … the product is block diagonal, so the
            # first layers are built block by block (Σ size·2ᵗ⁺¹ work instead of N·K per layer)
            first = min(self.n_layers, self.size.bit_length() - 1)
            tables = self._angle_tables(theta)[:first]
            m = block_diagonal(butterfly_blocks(*(t for _, t in tables)))[:, :self.n, :self.k]
            off, layout = sum(c for *_, c, _f in self._layout[:first]), self._layout[first:]
        for stride, rows, slots, count, full in layout:
            if not count:
                continue
            t = theta[:, off:off + count]
            off += count
            if not full:   # pairs that would leave the rows: the identity (angle 0) in those slots
                assert slots is not None
                t = t.new_zeros(g, (rows // (2 * stride)) * stride).index_copy(1, slots.to(t.device), t)
            t = t.reshape(g, rows // (2 * stride), 1, stride, 1)
            c, s = torch.cos(t), torch.sin(t)
            x = m if rows == self.n else torch.cat((m, m.new_zeros(g, rows - self.n, self.k)), 1)
            v = x.reshape(g, rows // (2 * stride), 2, stride, self.k)
            x0, x1 = v[:, :, :1], v[:, :, 1:]
            m = torch.cat((c * x0 - s * x1, s * x0 + c * x1), 2).reshape(g, rows, self.k)[:, :self.n]
        return m

    def _angle_tables(self, theta: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """Per layer, its stride and its angles ``(G, size / 2·stride, stride)`` (0, the identity,
        where a pair would leave the ``N`` rows)."""
        g, size, off, tables = theta.shape[0], self.size, 0, []
        for stride, _rows, slots, count, _full in self._layout:
            if not count:
                continue
            t = theta[:, off:off + count]
            off += count
            if count != (size // (2 * stride)) * stride:
                assert slots is not None
                t = t.new_zeros(g, (size // (2 * stride)) * stride).index_copy(1, slots.to(t.device), t)
            tables.append((stride, t.reshape(g, size // (2 * stride), stride)))
        return tables

    def apply_cost(self) -> float | None:
        if self.n < 4:
            return None
        # per vector: one multiply-add per block row of every factor, against N·K for the frame
        d = self.size.bit_length() - 1
        r, q = 1 << (d // 2), self.size >> (d // 2)
        strides = [s for s, *_rest in self._layout if _rest[2]]
        runs = sum(1 for i, s in enumerate(strides) if i == 0 or (s < r) != (strides[i - 1] < r) or s < strides[i - 1])
        per_run = (r + q) / 2
        return runs * per_run * self.size / (self.n * self.k)

    def apply_frame(self, h: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        theta = quantize_ste(self.flat_param(), self.bits)
        dtype = h.dtype
        work = h.float() if dtype in (torch.bfloat16, torch.float16) else h
        width = self.n if adjoint else self.k
        if width < self.size:
            work = torch.nn.functional.pad(work, (0, self.size - width))
        out = apply_factors(work, monarch_factors(self._angle_tables(theta.to(work.dtype)), self.size), adjoint)
        return out[..., :self.k if adjoint else self.n].to(dtype)


# a butterfly layer: stride, padded rows, angle slots (None for an empty layer), angle count, full
_LayoutRow = tuple[int, int, torch.Tensor | None, int, bool]


def _layout(n: int, pairs: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]) -> tuple[_LayoutRow, ...]:
    """Per layer: (stride, rows padded to a multiple of 2·stride, the slots of its angles in the
    ``(blocks, stride)`` table, how many angles, whether they fill the table)."""
    out: list[_LayoutRow] = []
    for a, b in pairs:
        if not a:
            out.append((1, n, None, 0, True))
            continue
        stride = b[0] - a[0]
        rows = -(-n // (2 * stride)) * 2 * stride
        slots = torch.tensor([(i // (2 * stride)) * stride + i % stride for i in a], dtype=torch.long)
        full = len(a) == (rows // (2 * stride)) * stride
        out.append((stride, rows, slots, len(a), full))
    return tuple(out)
