"""Orthogonal fine-tuning in the style of OFT / BOFT, built from unitary nodes: ``W' = W R``."""

from __future__ import annotations

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.errors import ConfigError
from tnpeft.graph import Graph, Unitary
from tnpeft.params import UNITARY_PARAMS


@register("oft", paper="Qiu et al., NeurIPS 2023; Liu et al., ICLR 2024 (BOFT)", advice=(
    "Multiplicative (it rotates the input, so the merged weight keeps its singular values): merges exactly, but "
    "cannot run in mixed-adapter batches; block_size sets its size."))
def oft(in_features: int, out_features: int, block_size: int = 32, butterfly: bool = False,
        param: str = "cayley", r: int | None = None, terms: int = 5) -> Graph:
    r"""A multiplicative orthogonal adapter: the layer computes ``W (R x)`` with ``R`` orthogonal —
    ``W' = W R`` once merged (Qiu et al., 2023; Liu et al., 2024 for the butterfly form).

    The input of size ``N`` is read as ``b × s`` (``s = block_size``, ``b = N / s``)::

        (blk, i) ──[R₁: b rotations s×s]── (blk, o)                       block-diagonal (OFT)
        (blk, o) ──[R₂: s rotations b×b]── (B, o)                         with butterfly=True

    ``R₁`` rotates within each block; ``R₂`` (``butterfly=True``) rotates across blocks, so the
    product mixes every coordinate with every other — the job BOFT's butterfly factors do — as two
    batched small rotations: no dense permutation matrix and no ``N×N`` rotation is ever formed.
    Both start at the identity (the adapted model starts at the base model) and are exactly
    orthogonal for any parameters (``param``: ``cayley`` by default, or ``exp``, ``taylor``,
    ``householder``, ``givens``), unlike peft's default truncated Cayley–Neumann series. Unmerging
    multiplies by ``Rᵀ``: no matrix inverse.

    ``r`` (peft's OFT ``r``) gives the number of blocks instead: ``block_size = in_features / r``.

    **peft's OFT** is ``param="cayley_neumann"`` (its default ``use_cayley_neumann=True``, ``terms``
    = ``num_cayley_neumann_terms``: a truncated series, *not* orthogonal, unmerged by a matrix
    inverse) or ``param="cayley_packed"`` (``use_cayley_neumann=False``: exact). Both store the
    strict upper triangle of each block, ``s(s−1)/2`` parameters, as peft's ``oft_R`` does; with
    equal values the layer equals peft's.

    Parameters: ``b · count(param, s, s)`` (+ ``s · count(param, b, b)`` with the butterfly), where
    ``count(cayley, n, n) = n²`` (the skew factor is stored whole; its skew part is used).
    """
    if r is not None:   # peft's OFT r: the number of blocks
        check_positive_int("oft", "r", r)
        if in_features % r:
            raise ConfigError(f"oft: r={r} blocks do not divide in_features {in_features}", field="r")
        if block_size not in (32, in_features // r):
            raise ConfigError(f"oft: r={r} blocks of in_features {in_features} have size {in_features // r}, but "
                              f"block_size is {block_size}; give one of the two", field="r")
        block_size = in_features // r
    check_positive_int("oft", "block_size", block_size)
    if block_size < 2:
        raise ConfigError("oft: block_size must be at least 2 (a 1×1 rotation is ±1: nothing to train)",
                          field="block_size")
    n = in_features
    if n % block_size:
        raise ConfigError(f"oft: block_size {block_size} does not divide in_features {n}", field="block_size")
    if param not in UNITARY_PARAMS or not UNITARY_PARAMS[param].identity_init:
        ok = sorted(k for k, v in UNITARY_PARAMS.items() if v.identity_init)
        raise ConfigError(f"oft: param {param!r} cannot start at the identity; expected one of {ok}", field="param")
    b = n // block_size
    check_positive_int("oft", "terms", terms)
    opts = {"init": "identity", **({"terms": terms} if param == "cayley_neumann" else {})}
    nodes = [Unitary("R1", ("blk", "o", "i"), (b, block_size, block_size), param=param, options=opts)]
    out_index: tuple[str, ...] = ("blk", "o")
    if butterfly:
        if b < 2:
            raise ConfigError(f"oft: a butterfly needs at least two blocks; in_features {n} has {b} of size "
                              f"{block_size}", field="butterfly")
        nodes.append(Unitary("R2", ("o", "B", "blk"), (block_size, b, b), param=param, options=dict(opts)))
        out_index = ("B", "o")
    return Graph(nodes, in_index=("blk", "i"), out_index=out_index, mode="input", name="oft")
