"""LoRA (Hu et al., arXiv 2106.09685) as a two-node graph."""

from __future__ import annotations

import math

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.errors import ConfigError
from tnpeft.graph import Dense, Graph


@register("lora", paper="Hu et al., arXiv 2106.09685", advice=(
    "The baseline to beat. On tweets (MiniLM, 8,000 tweets, 3 epochs, 3 seeds) r=1 came within 0.6 points of r=8 "
    "(test 0.775 vs 0.780) with an eighth of the parameters: try a small r first; lr 2e-3 to 6e-3."))
def lora(in_features: int, out_features: int, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
         use_rslora: bool = False, init_b: str = "zeros") -> Graph:
    r"""LoRA: ``ΔW = B A`` with ``A ∈ R^{r×N}``, ``B ∈ R^{M×r}`` and scale ``s = alpha / r``.

    Graph::

        in ──[A: r×in]── r ──[B: out×r]── out

    ``A`` starts Kaiming-uniform (``U(±1/√N)``, as ``nn.Linear`` and peft), ``B`` at zero, so the
    adapted model starts equal to the base. The engine contracts ``(x A) B``, never forms ``B A``.

    Args:
        in_features: N, the layer's input size.
        out_features: M, the layer's output size.
        r: the rank.
        alpha: the scale numerator: ``s = alpha / r`` (``alpha / √r`` with ``use_rslora``).
        dropout: dropout on ``x`` before ``A`` in training (peft's ``lora_dropout``).
        use_rslora: rank-stabilised scaling (Kalajdzievski, 2023).
        init_b: ``"zeros"`` (default) or ``"normal"`` for tests that need a non-zero update.

    Parameters: ``r (N + M)``.
    """
    check_positive_int("lora", "r", r)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ConfigError(f"lora: hyper-parameter 'alpha' must be a number, got {alpha!r}", field="alpha")
    if init_b not in ("zeros", "normal"):
        raise ConfigError(f"lora: 'init_b' must be 'zeros' or 'normal', got {init_b!r}", field="init_b")
    scale = alpha / math.sqrt(r) if use_rslora else alpha / r
    return Graph(
        [Dense("A", ("r", "in"), (r, in_features), init="kaiming_uniform"),
         Dense("B", ("out", "r"), (out_features, r), init=init_b)],
        in_features=in_features, out_features=out_features, scale=scale, dropout=dropout, name="lora",
    )
