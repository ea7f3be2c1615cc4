r"""Fast kernels for the Givens butterfly: its layers as two block-diagonal factors.

Number the ``size = 2^d`` (padded) rows ``i = q·R + r`` with ``R = 2^⌊d/2⌋``, ``Q = size / R``. A
layer of stride ``2^j`` pairs rows ``i`` and ``i + 2^j``:

* for ``j < log₂ R`` both rows lie in the same run of ``R`` consecutive rows (same ``q``), so a
  sequence of such layers is one block-diagonal matrix with ``Q`` blocks ``R × R``;
* for ``j ≥ log₂ R`` the two rows share ``r`` and their ``q`` differ by ``2^j / R``, so a
  sequence of such layers is, for every ``r``, one ``Q × Q`` matrix on the rows ``q·R + r``.

The default ``d`` layers (strides ``1 … 2^{d−1}``) are therefore ``F₂ · F₁`` — one batched
product with ``R × R`` blocks, one with ``Q × Q`` blocks — ``(R + Q)·size`` multiply-adds per
vector instead of ``N·K`` for the formed frame, at matrix-product speed.

Each factor's blocks are built from the identity by :func:`butterfly_blocks`: while the strides
grow ``1, 2, 4, …`` the product is block diagonal, and layer ``t`` turns neighbouring blocks
``A, B`` of size ``2ᵗ`` into ``[[C·A, −S·B], [S·A, C·B]]`` (``C, S`` the cosines and sines over the
block's first half of rows). Its backward is written out: ``∂/∂θ = C·(G_bl·A − G_tr·B) −
S·(G_tl·A + G_br·B)`` (row sums), ``∂/∂A = C·G_tl + S·G_bl``, ``∂/∂B = C·G_br − S·G_tr``, each
quadrant written in place through a strided view.
"""

from __future__ import annotations

from typing import Any

import torch


def butterfly_blocks(*tables: torch.Tensor) -> torch.Tensor:
    """Layers of strides ``1, 2, …, 2^{m−1}`` applied to the identity, as its diagonal blocks.

    ``tables[t]`` holds layer ``t``'s angles, ``(G, size / 2^{t+1}, 2^t)``: entry ``(b, o)``
    rotates rows ``b·2^{t+1} + o`` and ``b·2^{t+1} + o + 2^t``. Returns ``(G, size / 2^m, 2^m, 2^m)``.
    """
    blocks: torch.Tensor = _Butterfly.apply(*tables)  # type: ignore[no-untyped-call]  # torch: apply unannotated
    return blocks


def block_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """``(B, nb, bs, bs)`` diagonal blocks → the ``(B, nb·bs, nb·bs)`` matrix."""
    b, nb, bs, _ = blocks.shape
    if nb == 1:
        return blocks[:, 0]
    eye = torch.eye(nb, dtype=blocks.dtype, device=blocks.device)
    return (blocks[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(b, nb * bs, nb * bs)


def _quadrants(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(G, nb, 2s, 2s)`` → its four ``(G, nb, s, s)`` quadrants as views (tl, tr, bl, br)."""
    v = x.view(x.shape[0], x.shape[1], 2, stride, 2, stride)
    return v[:, :, 0, :, 0], v[:, :, 0, :, 1], v[:, :, 1, :, 0], v[:, :, 1, :, 1]


class _Butterfly(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *tables: torch.Tensor) -> torch.Tensor:
        g, size = tables[0].shape[0], 2 * tables[0].shape[1]
        blocks = tables[0].new_ones(g, size, 1, 1)
        saved = []
        for t, ang in enumerate(tables):
            stride = 1 << t
            c, s = torch.cos(ang).unsqueeze(-1), torch.sin(ang).unsqueeze(-1)
            a, b = blocks[:, 0::2], blocks[:, 1::2]
            new = blocks.new_empty(g, size // (2 * stride), 2 * stride, 2 * stride)
            tl, tr, bl, br = _quadrants(new, stride)
            torch.mul(a, c, out=tl)
            torch.mul(b, -s, out=tr)
            torch.mul(a, s, out=bl)
            torch.mul(b, c, out=br)
            saved.append(blocks)
            blocks = new
        ctx.save_for_backward(*tables, *saved)
        ctx.n_tables = len(tables)
        return blocks

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        tensors = ctx.saved_tensors
        tables, saved = tensors[:ctx.n_tables], tensors[ctx.n_tables:]
        gblocks = grad.contiguous()
        d_tables = [None] * len(tables)
        for t in range(len(tables) - 1, -1, -1):
            stride = 1 << t
            c, s = torch.cos(tables[t]).unsqueeze(-1), torch.sin(tables[t]).unsqueeze(-1)
            prev = saved[t]
            a, b = prev[:, 0::2], prev[:, 1::2]
            gtl, gtr, gbl, gbr = _quadrants(gblocks, stride)
            d_tables[t] = (c * ((gbl * a).sum(-1, keepdim=True) - (gtr * b).sum(-1, keepdim=True))
                           - s * ((gtl * a).sum(-1, keepdim=True) + (gbr * b).sum(-1, keepdim=True))).squeeze(-1)
            if t == 0:
                break
            nxt = gblocks.new_empty(prev.shape)
            ga, gb = nxt[:, 0::2], nxt[:, 1::2]
            torch.mul(gtl, c, out=ga)
            ga.addcmul_(gbl, s)
            torch.mul(gbr, c, out=gb)
            gb.addcmul_(gtr, s, value=-1.0)
            gblocks = nxt
        return tuple(d_tables)


def monarch_factors(tables: list[tuple[int, torch.Tensor]], size: int) -> list[tuple[str, torch.Tensor]]:
    """The butterfly's layers as block-diagonal factors, in the order they act.

    ``tables``: per layer, its stride and its angles ``(G, size / 2·stride, stride)``. Returns
    ``("r", (G, Q, R, R))`` for a run of short-stride layers (blocks on consecutive rows) and
    ``("q", (G, R, Q, Q))`` for a run of long-stride ones (blocks on rows ``q·R + r``, one per ``r``).
    """
    d = size.bit_length() - 1
    rr = 1 << (d // 2)
    qq = size // rr
    runs: list[tuple[str, list[tuple[int, torch.Tensor]]]] = []
    for stride, t in tables:
        level = "r" if stride < rr else "q"
        if runs and runs[-1][0] == level and stride == 2 * runs[-1][1][-1][0]:
            runs[-1][1].append((stride, t))
        else:
            runs.append((level, [(stride, t)]))
    out = []
    for level, layers in runs:
        g = layers[0][1].shape[0]
        if level == "r":   # per q: the rows q·R … q·R + R − 1, strides 1, 2, …
            parts = [t.reshape(g * qq, rr // (2 * s), s) for s, t in layers]
            blocks = block_diagonal(butterfly_blocks(*parts)).reshape(g, qq, rr, rr)
        else:              # per r: the rows q·R + r, strides 1, 2, … in q
            parts = [t.reshape(g, t.shape[1], s // rr, rr).permute(0, 3, 1, 2).reshape(g * rr, t.shape[1], s // rr)
                     for s, t in layers]
            blocks = block_diagonal(butterfly_blocks(*parts)).reshape(g, rr, qq, qq)
        out.append((level, blocks))
    return out


def apply_factors(h: torch.Tensor, factors: list[tuple[str, torch.Tensor]], adjoint: bool) -> torch.Tensor:
    """The factors applied to every vector of ``h`` ``(M, G, size)``: ``F_m ⋯ F_1 h``, or
    ``F_1ᵀ ⋯ F_mᵀ h`` with ``adjoint``."""
    m, g, size = h.shape
    rr = factors[0][1].shape[-1] if factors[0][0] == "r" else factors[0][1].shape[1]
    x = h.reshape(m, g, size // rr, rr)
    for level, f in (reversed(factors) if adjoint else factors):
        if level == "r":
            x = torch.einsum("gqrs,mgqs->mgqr" if not adjoint else "gqsr,mgqs->mgqr", f, x)
        else:
            x = torch.einsum("grpq,mgqr->mgpr" if not adjoint else "grqp,mgqr->mgpr", f, x)
    return x.reshape(m, g, size)
