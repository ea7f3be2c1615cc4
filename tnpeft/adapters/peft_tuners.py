"""peft's tensor-network tuners as graphs: LoHa, LoKr, IA³, BOFT, HRA, FourierFT (and, in
:mod:`tnpeft.adapters.cross_layer`, VeRA; OFT is :func:`tnpeft.adapters.oft` with
``param="cayley_neumann"``). Each equals peft's layer for equal values — outputs, gradients, merge
and parameter count — and moves to and from peft's checkpoint format
(:mod:`tnpeft.adapters.peft_formats`)."""

from __future__ import annotations

import math
import re
from typing import Any

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.adapters.products import hadamard, kronecker
from tnpeft.adapters.site import LayerSite
from tnpeft.errors import ConfigError
from tnpeft.graph import Dense, Diagonal, Fourier, Graph, Unitary


def _alpha(method: str, alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ConfigError(f"{method}: hyper-parameter 'alpha' must be a finite number, got {alpha!r}", field="alpha")
    return float(alpha)


def _pair(n: int, m: int, r: int, init_a: str, init_b: str) -> Graph:
    # one low-rank factor pair B A (out × r · r × in), a part of LoHa's product
    return Graph([Dense("A", ("r", "in"), (r, n), init=init_a), Dense("B", ("out", "r"), (m, r), init=init_b)])


@register("loha", paper="Hyeon-Woo et al., FedPara, ICLR 2022 (arXiv 2108.06098); LyCORIS, arXiv 2309.14859", advice=(
    "r=4 has LoRA r=8's count with rank up to 16, but on tweets at 3 epochs it did not beat LoRA r=8 (test 0.775 "
    "± 0.004 vs 0.780 ± 0.003, 3 seeds each): reach for it when the update needs rank, not to save parameters; "
    "lr 2e-3."))
def loha(in_features: int, out_features: int, r: int = 8, alpha: float = 8.0) -> Graph:
    r"""LoHa: ``ΔW = (alpha / r) · (B₁ A₁) ⊙ (B₂ A₂)`` — the Hadamard product of two rank-``r``
    factorisations (:func:`tnpeft.adapters.hadamard`), of rank up to ``r²``.

    Graph: ``A₁[r1, in] B₁[out, r1]`` and ``A₂[r2, in] B₂[out, r2]`` sharing the open legs, so
    ``in`` and ``out`` are copy tensors; the forward contracts ``x`` with both ``A``s, then the two
    ``B``s, never forming ``ΔW``. peft's ``hada_w1_a = B₁``, ``hada_w1_b = A₁``, ``hada_w2_a = B₂``,
    ``hada_w2_b = A₂``. Init as peft: Kaiming-uniform, ``A₂ = 0``. Parameters: ``2r(N + M)``.
    """
    check_positive_int("loha", "r", r)
    a = _alpha("loha", alpha)
    g = hadamard(_pair(in_features, out_features, r, "kaiming_uniform", "kaiming_uniform"),
                 _pair(in_features, out_features, r, "zeros", "kaiming_uniform"), name="loha")
    return g.replace(scale=a / r)


def lokr_factors(d: int, factor: int = -1) -> tuple[int, int]:
    """``(a, b)`` with ``a·b = d`` as LyCORIS / peft factor a dimension: ``(factor, d / factor)`` when
    ``factor`` divides ``d``; else ``a`` grows through the divisors of ``d`` while ``a + b``
    shrinks (and ``a ≤ factor`` when one is given), smaller first."""
    if factor > 0 and d % factor == 0:
        return factor, d // factor
    cap = d if factor == -1 else factor
    a, b = 1, d
    while a < b:
        nxt = next(k for k in range(a + 1, d + 1) if d % k == 0)
        if nxt + d // nxt > a + b or nxt > cap:
            break
        a, b = nxt, d // nxt
    return (a, b) if a <= b else (b, a)


def _factor(out_f: int, in_f: int, r: int, low_rank: bool, init: tuple[str, str]) -> Graph:
    if not low_rank:
        return Graph([Dense("W", ("out", "in"), (out_f, in_f), init=init[0])])
    return Graph([Dense("Wa", ("out", "r"), (out_f, r), init=init[0]), Dense("Wb", ("r", "in"), (r, in_f), init=init[1])])


@register("lokr", paper="Yeh et al., LyCORIS, arXiv 2309.14859 (LoKr)", advice=(
    "Small: r=8 on MiniLM is 8.6 % of LoRA r=8's parameters; on tweets at 3 epochs (3 seeds) it reached 0.777 ± "
    "0.006 at lr 6e-3 against LoRA r=8's 0.780 ± 0.003, above its registered 2e-3 on validation and "
    "test (0.772 ± 0.006; peft's own 0.770 ± 0.005): use about 3× LoRA's rate, 6e-3 (1.8e-2 collapsed)."))
def lokr(in_features: int, out_features: int, r: int = 8, alpha: float = 8.0, decompose_both: bool = False,
         decompose_factor: int = -1) -> Graph:
    r"""LoKr: ``ΔW = (alpha / r) · W₁ ⊗ W₂`` (:func:`tnpeft.adapters.kronecker`): ``W₁`` of shape
    ``(out_l, in_m)``, ``W₂`` of ``(out_k, in_n)`` with ``(out_l, out_k)``, ``(in_m, in_n)`` the
    factor pairs of ``M`` and ``N`` (:func:`lokr_factors`, ``decompose_factor``).

    ``W₂`` is the low-rank ``W₂a W₂b`` when ``r < max(out_k, in_n) / 2``; ``W₁`` is ``W₁a W₁b`` when
    also ``decompose_both`` and ``r < max(out_l, in_m) / 2`` (peft's rule). Graph: two components that
    share no index — the input read row-major as ``(in1, in2)``, the output as ``(out1, out2)``.
    Init as peft: ``W₁`` (or ``W₁a``) zero, the rest Kaiming-uniform. Parameters: ``|W₁| + |W₂|``.
    """
    check_positive_int("lokr", "r", r)
    a = _alpha("lokr", alpha)
    if isinstance(decompose_factor, bool) or not isinstance(decompose_factor, int) or decompose_factor == 0 \
            or decompose_factor < -1:
        raise ConfigError(f"lokr: decompose_factor must be -1 or a positive integer, got {decompose_factor!r}",
                          field="decompose_factor")
    in_m, in_n = lokr_factors(in_features, decompose_factor)
    out_l, out_k = lokr_factors(out_features, decompose_factor)
    w1 = _factor(out_l, in_m, r, bool(decompose_both) and r < max(out_l, in_m) / 2, ("zeros", "kaiming_uniform"))
    w2 = _factor(out_k, in_n, r, r < max(out_k, in_n) / 2, ("kaiming_uniform", "kaiming_uniform"))
    return kronecker(w1, w2, scale=a / r, name="lokr")


def is_feedforward(rule: Any, path: str) -> bool:
    """Whether peft IA³ treats module ``path`` as feed-forward under ``feedforward_modules`` ``rule``."""
    # peft IA³ rules: a string is a regular expression on the whole path, a list path suffixes
    if isinstance(rule, str):
        return re.fullmatch(rule, path) is not None
    return any(path.endswith(t) for t in rule)


@register("ia3", paper="Liu et al., NeurIPS 2022, arXiv 2205.05638 (IA³)", learning_rate=3e-2)
def ia3(in_features: int, out_features: int, feedforward: bool = False, feedforward_modules: Any = None,
        site: LayerSite | None = None) -> Graph:
    r"""IA³: a learned vector ``l`` that rescales a layer — its output ``y = l ⊙ (W x + b)``
    (output mode; merged ``W' = diag(l) W``, ``b' = l ⊙ b``) or, on feed-forward layers, its input
    ``y = W (l ⊙ x) + b`` (input mode; ``W' = W diag(l)``). ``l`` starts at ones.

    Graph: one diagonal node on a pass-through leg. ``feedforward_modules`` (peft's rule: a regular
    expression on the module path, or a list of names / path suffixes) picks the feed-forward
    layers when injected; ``feedforward`` decides for a layer alone. Parameters: ``M`` (``N`` on
    feed-forward layers).
    """
    if feedforward_modules is not None and site is not None:
        feedforward = is_feedforward(feedforward_modules, site.path)
    if feedforward:
        return Graph([Diagonal("l", ("in",), (in_features,), init="ones")], in_index="in", out_index="in",
                     mode="input", name="ia3")
    return Graph([Diagonal("l", ("out",), (out_features,), init="ones")], in_index="out", out_index="out",
                 mode="output", name="ia3")


def _blocks(method: str, n: int, block_size: int, block_num: int) -> tuple[int, int]:
    if (block_size == 0) == (block_num == 0):
        raise ConfigError(f"{method}: give exactly one of block_size and block_num (the other 0)", field="block_size")
    size = block_size or (n // block_num if block_num > 0 and n % block_num == 0 else 0)
    if size <= 0 or n % size:
        raise ConfigError(f"{method}: blocks ({block_size=}, {block_num=}) do not divide in_features {n}",
                          field="block_size")
    return size, n // size


@register("boft", paper="Liu et al., ICLR 2024, arXiv 2311.06243 (BOFT)", learning_rate=1e-2)
def boft(in_features: int, out_features: int, block_size: int = 4, block_num: int = 0,
         butterfly_factor: int = 1) -> Graph:
    r"""BOFT (peft's layer): ``y = s ⊙ (W Rᵀ x) + b`` with ``R = BD(C₁ … C_D)`` block-diagonal,
    ``C = (I − S)(I + S)⁻¹`` the exact Cayley transform of the skew part ``S`` of each stored
    ``H×H`` block, and a learned output scale ``s`` that leaves the bias out.

    Graph: an input-mode unitary node ``R[blk, i, o]`` (param ``cayley``, the skew factor stored
    whole: ``H²`` per block) and a ``post`` map, the diagonal ``s`` on the output (``bias=False``).
    Merged ``W' = diag(s) W Rᵀ``; unmerged with ``R`` and ``1/s``: exact. Both start at the identity.
    Parameters: ``D·H² + M`` (``N·H + M``). peft runs butterfly factors > 1 only with its CUDA
    kernel; tnpeft builds ``butterfly_factor=1`` (tnpeft's own butterfly: :func:`tnpeft.adapters.oft`
    with ``butterfly=True``).
    """
    size, num = _blocks("boft", in_features, block_size, block_num)
    if butterfly_factor != 1:
        raise ConfigError(f"boft: butterfly_factor={butterfly_factor!r}: only 1 is built (peft itself uses 1 "
                          "without its CUDA kernel)", field="butterfly_factor")
    post = Graph([Diagonal("s", ("y",), (out_features,), init="ones")], in_index="y", out_index="y", mode="output",
                 bias=False, name="boft-scale")
    return Graph([Unitary("R", ("blk", "i", "o"), (num, size, size), param="cayley", options={"init": "identity"})],
                 in_index=("blk", "i"), out_index=("blk", "o"), mode="input", post=post, name="boft")


@register("hra", paper="Yuan et al., NeurIPS 2024, arXiv 2405.17484 (HRA)", learning_rate=1e-2)
def hra(in_features: int, out_features: int, r: int = 8) -> Graph:
    r"""HRA: ``y = W H x + b`` with ``H = H₁ ⋯ H_r``, ``Hⱼ = I − 2ûⱼûⱼᵀ`` (``û = u/‖u‖``), an
    orthogonal chain of ``r`` Householder reflections (peft's ``hra_u[:, j] = uⱼ``).

    Graph: one input-mode unitary node (param ``householder``, intrinsic rank ``r``, init
    ``paired``: ``u₂ = u₁``, … so ``H`` starts at ``I`` with live gradients, peft's symmetric
    initialisation). Merged ``W' = W H``, unmerged with ``Hᵀ``. Parameters: ``N·r``.
    """
    check_positive_int("hra", "r", r)
    if r > in_features:
        raise ConfigError(f"hra: r={r} reflections exceed in_features {in_features}", field="r")
    return Graph([Unitary("H", ("o", "i"), (in_features, in_features), param="householder",
                          options={"intrinsic_rank": r, "init": "paired"})],
                 in_index="i", out_index="o", mode="input", name="hra")


@register("fourierft", paper="Gao et al., ICML 2024, arXiv 2405.03003 (FourierFT)", learning_rate=5e-2)
def fourierft(in_features: int, out_features: int, n_frequency: int = 1000, scaling: float = 150.0,
              random_loc_seed: int = 777) -> Graph:
    r"""FourierFT: ``ΔW = scaling · Re(IDFT₂(S))`` for a sparse ``M×N`` spectrum ``S`` holding the
    ``K = n_frequency`` trainable coefficients ``c`` at random positions ``(jₖ, lₖ)`` (seeded by
    ``random_loc_seed``, as peft draws them):

        ``ΔW[p, q] = scaling / (M N) · Σₖ cₖ cos(2π (p jₖ / M + q lₖ / N))``.

    Graph: frozen Fourier nodes ``U[out, k, t]`` and ``V[in, k, t]`` (cos and sin of each
    frequency; computed from the seed, never stored) and the trainable diagonal ``c[k]``; ``k`` is a
    hyperedge of the three, ``t`` a bond of size 2 — rank at most ``2K``. ``c ~ N(0, 1)`` (peft's
    default). Parameters: ``K``.
    """
    check_positive_int("fourierft", "n_frequency", n_frequency)
    if n_frequency > in_features * out_features:
        raise ConfigError(f"fourierft: n_frequency {n_frequency} exceeds the {in_features * out_features} spectrum "
                          "positions", field="n_frequency")
    shape = (out_features, in_features)
    return Graph([Fourier("U", ("out", "k", "t"), (out_features, n_frequency, 2), trainable=False,
                          seed=random_loc_seed, spectrum=shape, side="out"),
                  Diagonal("c", ("k",), (n_frequency,), init="normal"),
                  Fourier("V", ("in", "k", "t"), (in_features, n_frequency, 2), trainable=False,
                          seed=random_loc_seed, spectrum=shape, side="in")],
                 scale=_alpha("fourierft", scaling) / (in_features * out_features), name="fourierft")
