"""Tensor-network adapters from the literature, each a short graph: QuanTA, TT-LoRA, a tensor
ring, and LoRETTA's two forms. Counts in closed form are in each docstring (and checked against the
graph in the tests)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.adapters.tensor_train import factorize
from tnpeft.errors import ConfigError
from tnpeft.graph import Dense, Graph, Nonlinear


def _sizes(method: str, what: str, n: int, count: int, given: Any) -> tuple[int, ...]:
    if given is None:
        return factorize(n, count)
    f = tuple(given)
    if not f or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in f) or math.prod(f) != n:
        raise ConfigError(f"{method}: {what} must be positive integers whose product is {n}, got {given!r}",
                          field=what)
    return f


def tt_chain(prefix: str, legs: list[tuple[str, int]], rank: int, bond: str, ring: bool = False,
             last_zero: bool = True, std: float | None = None) -> list[Dense]:
    """A tensor train of 3-leg cores ``G_k[b_{k−1}, leg_k, b_k]`` over ``legs`` (boundary bonds
    dropped; with ``ring`` the first and last cores share bond ``{bond}0``: a tensor ring). Cores
    start ``N(0, std²)`` (``std`` chosen so the chain's product has unit scale per leg when not
    given); the last one at zero with ``last_zero``."""
    d = len(legs)
    std = std if std is not None else rank ** -0.5
    cores = []
    for k, (leg, size) in enumerate(legs):
        inds, sizes = [leg], [size]
        left = f"{bond}{k}" if k > 0 else (f"{bond}0" if ring else None)
        right = f"{bond}{k + 1}" if k < d - 1 else (f"{bond}0" if ring else None)
        if left:
            inds.insert(0, left)
            sizes.insert(0, rank)
        if right:
            inds.append(right)
            sizes.append(rank)
        zero = last_zero and k == d - 1
        cores.append(Dense(f"{prefix}{k + 1}", tuple(inds), tuple(sizes), init="zeros" if zero else "normal",
                           std=None if zero else std))
    return cores


def _legs(base: str, sizes: tuple[int, ...]) -> list[tuple[str, int]]:
    return [(f"{base}{k + 1}", s) for k, s in enumerate(sizes)]


@register("ttlora", paper="Anjum et al., TT-LoRA, arXiv 2408.01008 (2024)")
def ttlora(in_features: int, out_features: int, r: int = 4, in_cores: int = 2, out_cores: int = 2,
           in_factors: Any = None, out_factors: Any = None, alpha: float = 1.0) -> Graph:
    r"""TT-LoRA: ``ΔW`` (as a tensor with legs ``i₁ … i_p, o₁ … o_q``, ``N = Π nₖ``, ``M = Π mₖ``)
    is one tensor train of 3-leg cores ``Gₖ[r_{k−1}, nₖ, r_k]``, ``r₀ = r_d = 1``, all inner ranks
    ``r``; ``y += alpha · ΔW x``. The input cores come first, then the output cores (the paper's
    newer code; its 2024 code reshapes ``(out, in)`` instead — the same family).

    The paper starts from a non-zero TT (TT-SVD of a random matrix); tnpeft starts the last core at
    zero, so the adapted model starts at the base model. Parameters (closed form):
    ``n₁ r + Σ_{k=2}^{d−1} r² nₖ + r n_d`` over the ``d = p + q`` modes.
    """
    check_positive_int("ttlora", "r", r)
    ins = _sizes("ttlora", "in_factors", in_features, in_cores, in_factors)
    outs = _sizes("ttlora", "out_factors", out_features, out_cores, out_factors)
    legs = _legs("i", ins) + _legs("o", outs)
    return Graph(tt_chain("G", legs, r, "a"), in_index=tuple(n for n, _ in legs[:len(ins)]),
                 out_index=tuple(n for n, _ in legs[len(ins):]), scale=alpha, name="ttlora")


@register("tensor_ring", paper="Zhao et al., Tensor Ring Decomposition, arXiv 1606.05535 (the format)")
def tensor_ring(in_features: int, out_features: int, r: int = 4, in_cores: int = 2, out_cores: int = 2,
                in_factors: Any = None, out_factors: Any = None, alpha: float = 1.0) -> Graph:
    r"""A tensor-ring adapter: TT-LoRA's train closed into a ring,
    ``ΔW[i₁…, o₁…] = Tr(G₁[i₁] ⋯ G_d[o_q])`` with every core ``(r, nₖ, r)`` — no boundary rank of 1,
    so no mode is privileged. The graph is TT-LoRA's chain plus one bond joining the last core to
    the first (a loop: cotengra contracts it like any other network). No canonical PEFT paper with
    code exists for the ring; this is the format applied as TT-LoRA applies the train. The last core
    starts at zero. Parameters: ``r² Σₖ nₖ``.
    """
    check_positive_int("tensor_ring", "r", r)
    ins = _sizes("tensor_ring", "in_factors", in_features, in_cores, in_factors)
    outs = _sizes("tensor_ring", "out_factors", out_features, out_cores, out_factors)
    legs = _legs("i", ins) + _legs("o", outs)
    return Graph(tt_chain("G", legs, r, "a", ring=True), in_index=tuple(n for n, _ in legs[:len(ins)]),
                 out_index=tuple(n for n, _ in legs[len(ins):]), scale=alpha, name="tensor_ring")


def quanta_gates(axes: tuple[int, ...]) -> list[tuple[int, int]]:
    """QuanTA's gate order: every pair of axes ``(a, b)``, ``a`` nearer the end, as
    ``itertools.combinations(range(−1, −d−1, −1), 2)`` lists them (0-based, from the front)."""
    d = len(axes)
    return [(d + a, d + b) for a, b in itertools.combinations(range(-1, -d - 1, -1), 2)]


@register("quanta", paper="Chen et al., QuanTA, NeurIPS 2024, arXiv 2406.00132")
def quanta(in_features: int, out_features: int, axes: Any = None, n_axes: int = 3) -> Graph:
    r"""QuanTA: the hidden size read as ``d`` qudit axes ``(n₁, …, n_d)``, ``Π nₖ = N``, and a
    "circuit" of one dense gate per pair of axes, ``Δy = Q(T) x`` (no scale). The gate on axes
    ``(a, b)`` is a 4-leg tensor ``T[b′, a′, b, a]`` mapping the two axes' current indices to new
    ones; gates apply in QuanTA's order (pairs with the last axis first). High-rank: ``Q(T)`` is a
    product of full-rank local maps.

    QuanTA starts at zero by subtracting a frozen copy of the initial circuit (``Q(T) − Q(T⁰)``);
    a single graph holds one circuit, so tnpeft starts the *last* gate at zero instead (the
    reference code's ``last_layer_zero`` option). Square layers only (``N = M``; QuanTA pads
    otherwise). Parameters: ``Σ_{i<j} (nᵢ nⱼ)²``.
    """
    if in_features != out_features:
        raise ConfigError(f"quanta: the circuit maps the hidden size to itself; the layer is {in_features} → "
                          f"{out_features} (QuanTA pads non-square layers; tnpeft does not)", field="out_features")
    check_positive_int("quanta", "n_axes", n_axes)
    ax = _sizes("quanta", "axes", in_features, n_axes, axes)
    if len(ax) < 2:
        raise ConfigError("quanta: a circuit needs at least two axes", field="axes")
    gates = quanta_gates(ax)
    last = {k: max(g for g, pair in enumerate(gates) if k in pair) for k in range(len(ax))}
    cur = [f"i{k + 1}" for k in range(len(ax))]
    nodes = []
    for g, (a, b) in enumerate(gates):
        new = [f"o{k + 1}" if last[k] == g else f"x{g + 1}_{k + 1}" for k in (b, a)]
        nodes.append(Dense(f"T{a + 1}{b + 1}" if len(ax) < 10 else f"T{a + 1}_{b + 1}", (new[0], new[1], cur[b], cur[a]),
                           (ax[b], ax[a], ax[b], ax[a]), init="zeros" if g == len(gates) - 1 else "normal",
                           std=None if g == len(gates) - 1 else (ax[a] * ax[b]) ** -0.5))
        cur[b], cur[a] = new
    return Graph(nodes, in_index=tuple(f"i{k + 1}" for k in range(len(ax))),
                 out_index=tuple(f"o{k + 1}" for k in range(len(ax))), name="quanta")


@register("loretta_rep", paper="Yang et al., LoRETTA, NAACL 2024, arXiv 2402.11417 (reparameterised form)")
def loretta_rep(in_features: int, out_features: int, r: int = 8, tt_rank: int = 5, cores: int = 2,
                rank_cores: int = 1, alpha: float = 16.0) -> Graph:
    r"""LoRETTA_rep: LoRA whose two factors are tensor trains, ``y += (alpha/r) · B_TT(A_TT x)``.

    ``A_TT`` is a TT of 3-leg cores (rank ``tt_rank``) over the modes of the ``N × r`` matrix
    (``cores`` factors of ``N``, then ``rank_cores`` factors of ``r``), ``B_TT`` one over the
    ``r × M`` matrix (factors of ``r``, then of ``M``); the two trains meet on the rank legs. The
    paper's mode tables may split a mode across ``in`` and ``out``; tnpeft factors each side on its
    own. The paper starts both trains random; tnpeft zeroes ``B_TT``'s last core (zero update at
    the start). Parameters: the two trains' ``n₁ R + Σ R² nₖ + R n_d``.
    """
    for k, v in (("r", r), ("tt_rank", tt_rank), ("cores", cores), ("rank_cores", rank_cores)):
        check_positive_int("loretta_rep", k, v)
    ins, outs = factorize(in_features, cores), factorize(out_features, cores)
    mid = factorize(r, rank_cores)
    a = tt_chain("A", _legs("i", ins) + _legs("j", mid), tt_rank, "a", last_zero=False)
    b = tt_chain("B", _legs("j", mid) + _legs("o", outs), tt_rank, "b")
    return Graph(a + b, in_index=tuple(f"i{k + 1}" for k in range(len(ins))),
                 out_index=tuple(f"o{k + 1}" for k in range(len(outs))), scale=alpha / r, name="loretta_rep")


@register("loretta_adp", paper="Yang et al., LoRETTA, NAACL 2024, arXiv 2402.11417 (adapter form)",
          aliases={"r": "bottleneck"})
def loretta_adp(in_features: int, out_features: int, bottleneck: int = 64, tt_rank: int = 5, cores: int = 2,
                scale: float = 1.0) -> Graph:
    r"""LoRETTA_adp, parallel placement: ``y += scale · g(x)`` with the bottleneck adapter
    ``g(z) = U_TT(tanh(D_TT z + b_D)) + b_U``, ``D_TT`` (``N → bottleneck``) and ``U_TT``
    (``bottleneck → M``) tensor trains of 3-leg cores over their modes (rank ``tt_rank``).

    Graph: the down train, a ``bias`` node with ``then="tanh"``, the up train, a ``bias`` node on
    the output (nonlinear nodes: the biases are not multilinear), so the update depends on ``x``
    and is not merged. ``U_TT``'s last core starts at zero. The paper's other placements (inside
    the block's residual, before or after the layer) are not built. Parameters: the two trains
    plus ``bottleneck + M`` biases.
    """
    for k, v in (("bottleneck", bottleneck), ("tt_rank", tt_rank), ("cores", cores)):
        check_positive_int("loretta_adp", k, v)
    ins, outs, mid = factorize(in_features, cores), factorize(out_features, cores), factorize(bottleneck, cores)
    down = tt_chain("D", _legs("i", ins) + _legs("h", mid), tt_rank, "a", last_zero=False)
    up = tt_chain("U", _legs("g", mid) + _legs("u", outs), tt_rank, "b")
    hs = {f"h{k + 1}": s for k, s in enumerate(mid)}
    us = {f"u{k + 1}": s for k, s in enumerate(outs)}
    nodes = down + [Nonlinear("bD", tuple(hs) + tuple(f"g{k + 1}" for k in range(len(mid))), tuple(mid) * 2,
                              fn="bias", n_inputs=len(mid), options={"then": "tanh"})] + up
    nodes.append(Nonlinear("bU", tuple(us) + tuple(f"o{k + 1}" for k in range(len(outs))), tuple(outs) * 2,
                           fn="bias", n_inputs=len(outs)))
    return Graph(nodes, in_index=tuple(f"i{k + 1}" for k in range(len(ins))),
                 out_index=tuple(f"o{k + 1}" for k in range(len(outs))), scale=scale, name="loretta_adp")
