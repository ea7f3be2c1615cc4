"""Frames from elementary orthogonal maps: Householder reflections and Givens butterflies."""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from tnpeft.params.unitary.base import AngleFrame, FrameModule, eye_frames, init_angles, quantize_ste


class HouseholderFrame(FrameModule):
    r"""``U = H_1 ⋯ H_{K′} I_{N×K}``, ``H_j = I − 2 u_j u_jᵀ``, ``u_j = v_j / ‖v_j‖`` (a zero
    ``v_j`` gives ``H_j = I``). Parameters ``N·K′``; cost ``O(N·K·K′)``."""

    def __init__(self, n: int, k: int, batch=(), intrinsic_rank: int | None = None, init: str = "random",
                 dtype=None, device=None, rng=None):
        super().__init__(n, k, batch)
        m = min(intrinsic_rank or k, n)
        v = torch.empty(*self.batch, m, n, dtype=dtype, device=device)
        with torch.no_grad():
            if init == "random":
                v.normal_(0.0, 1.0, generator=rng)
            else:
                v.zero_()
        self.vectors = nn.Parameter(v)

    def param(self) -> torch.Tensor:
        return self.vectors

    def _compute(self, v: torch.Tensor) -> torch.Tensor:
        norm = v.norm(dim=2, keepdim=True)
        u = torch.where(norm > 0, v / norm.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))
        m = eye_frames(self.n, self.k, v.shape[0], v)
        for j in range(v.shape[1] - 1, -1, -1):
            uj = u[:, j].unsqueeze(2)                       # (G, N, 1)
            m = m - 2.0 * uj @ (uj.transpose(1, 2) @ m)
        return m


@cache
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
    as in an FFT. Exactly orthogonal; ``O(N·K)`` per layer; never a dense permutation."""

    def __init__(self, n: int, k: int, batch=(), layers: int | None = None, bits: int | None = None,
                 init: str = "random", dtype=None, device=None, rng=None):
        super().__init__(n, k, batch)
        self.bits = bits
        self.n_layers = layers or max(1, (n - 1).bit_length())
        pairs = butterfly_pairs(n, self.n_layers)
        for i, (a, b) in enumerate(pairs):
            self.register_buffer(f"_a{i}", torch.tensor(a, dtype=torch.long, device=device), persistent=False)
            self.register_buffer(f"_b{i}", torch.tensor(b, dtype=torch.long, device=device), persistent=False)
        self.theta = init_angles((*self.batch, sum(len(a) for a, _ in pairs)), init, dtype, device, rng)

    def options_key(self) -> tuple:
        return (self.n_layers, self.bits)

    def angles(self) -> torch.Tensor:
        """The angles the rotations use, ``(G, count)``: quantized when the frame has ``bits``."""
        return quantize_ste(self.flat_param(), self.bits)

    def _compute(self, flat: torch.Tensor) -> torch.Tensor:
        theta = quantize_ste(flat, self.bits)
        m = eye_frames(self.n, self.k, theta.shape[0], theta)
        off = 0
        for i in range(self.n_layers):
            ia, ib = getattr(self, f"_a{i}"), getattr(self, f"_b{i}")
            if ia.numel() == 0:
                continue
            t = theta[:, off:off + ia.numel()].unsqueeze(2)
            off += ia.numel()
            c, s = torch.cos(t), torch.sin(t)
            xa, xb = m[:, ia], m[:, ib]
            m = m.index_copy(1, ia, c * xa - s * xb).index_copy(1, ib, s * xa + c * xb)
        return m
