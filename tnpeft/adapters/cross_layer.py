"""Adapters whose tensors span the model: values shared by every adapted layer (VeRA's frozen
random projections) and one tensor network over ``(layer, matrix, out, in)`` (MetaTT, LoRTA).

These builders are *model-wide*: they take a :class:`~tnpeft.adapters.site.LayerSite` (``inject``
passes one per target), declare their shared nodes with a :class:`~tnpeft.graph.Share` sized for
the widest target, and close the layer and projection indices with basis vectors
(:class:`~tnpeft.graph.Basis`). One copy of each shared tensor lives on the model, is saved once
and counted once (:func:`tnpeft.graph.count_parameters`)."""

from __future__ import annotations

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.adapters.site import LayerSite
from tnpeft.errors import ConfigError
from tnpeft.graph import Basis, Dense, Diagonal, Graph, Share


@register("vera", paper="Kopiczko et al., VeRA, ICLR 2024, arXiv 2310.11454", learning_rate=1e-2, advice=(
    "The cheapest row that kept LoRA's accuracy on tweets at 3 epochs: r=256 trains 9 % of LoRA r=8's "
    "parameters and at lr 1e-2 reached 0.778 ± 0.002 vs 0.780 (3 seeds); tnpeft's λ_d starting at 1 did better "
    "than peft's 0.1 (0.773 ± 0.006). Keep 1e-2: 3e-2 scored higher on validation but lower and less steady on "
    "test (0.770 ± 0.012, 3 seeds); 9e-2 diverged."))
def vera(in_features: int, out_features: int, r: int = 256, site: LayerSite | None = None) -> Graph:
    r"""VeRA: ``ΔW = diag(λ_b) B diag(λ_d) A`` with ``A ∈ R^{r×N_max}`` and ``B ∈ R^{M_max×r}`` frozen,
    random and **shared by every adapted layer** (each layer uses the leading block
    ``A[:, :N]``, ``B[:M]``), and trainable per-layer vectors ``λ_d ∈ R^r``, ``λ_b ∈ R^M``.

    Graph: ``A`` and ``B`` are shared nodes (``Share("vera_A", (r, N_max))``, ``("vera_B", (M_max, r))``)
    initialised as peft draws them (Kaiming-uniform, gain √2); ``λ_d`` a diagonal on the rank bond,
    ``λ_b`` a diagonal on the open ``out`` leg. ``λ_b`` starts at zero (zero update); ``λ_d`` at one
    (peft: ``d_initial = 0.1``). Parameters: ``M + r`` per layer; ``A`` and ``B`` are frozen.
    """
    check_positive_int("vera", "r", r)
    site = site or LayerSite.alone(in_features, out_features)
    return Graph([Dense("A", ("r", "in"), (r, in_features), init="kaiming_uniform_relu", trainable=False,
                        share=Share("vera_A", (r, site.in_max))),
                  Diagonal("d", ("r",), (r,), init="ones"),
                  Dense("B", ("out", "r"), (out_features, r), init="kaiming_uniform_relu", trainable=False,
                        share=Share("vera_B", (site.out_max, r))),
                  Diagonal("b", ("out",), (out_features,), init="zeros")], name="vera")


@register("metatt", paper="Lopez-Piqueres et al., MetaTT, arXiv 2506.09105 (2025)")
def metatt(in_features: int, out_features: int, r: int = 8, alpha: float = 16.0,
           site: LayerSite | None = None) -> Graph:
    r"""MetaTT: one tensor train for the whole model,
    ``ΔW_{l,μ}[o, i] = Σ G₁[i, a] G₂[a, l, b] G₃[b, μ, c] G₄[c, o]`` over the layer index ``l`` and
    the projection index ``μ`` (q, k, v, … as the targets' last path components): scale ``alpha / r``.

    Each layer's graph holds the four shared cores and two basis vectors ``e_l`` (on ``layer``)
    and ``e_μ`` (on ``matrix``) that select its slice — the tensor network spans the model and its
    count follows from one graph: ``r N + L r² + M_k r² + r M`` (``L`` layers, ``M_k`` projection
    kinds). Layers of other sizes use the leading blocks of ``G₁`` and ``G₄`` (tnpeft's extension;
    the paper has one size). ``G₄`` starts at zero; ``G₂``, ``G₃`` slices ``N(0, 1/r)``. The paper's
    initialisation text was not available; this is tnpeft's choice.
    """
    check_positive_int("metatt", "r", r)
    site = site or LayerSite.alone(in_features, out_features)
    n_l, n_m = site.num_layers, len(site.kinds)
    return Graph([Dense("G1", ("in", "a"), (in_features, r), init="normal", std=site.in_max ** -0.5,
                        share=Share("G1", (site.in_max, r))),
                  Dense("G2", ("a", "layer", "b"), (r, n_l, r), init="normal", std=r ** -0.5,
                        share=Share("G2", (r, n_l, r))),
                  Basis.at("e_layer", "layer", n_l, site.layer),
                  Dense("G3", ("b", "matrix", "c"), (r, n_m, r), init="normal", std=r ** -0.5,
                        share=Share("G3", (r, n_m, r))),
                  Basis.at("e_matrix", "matrix", n_m, site.kind_index),
                  Dense("G4", ("c", "out"), (r, out_features), init="zeros", share=Share("G4", (r, site.out_max)))],
                 scale=alpha / r, name="metatt")


@register("lortta", paper="Hounie et al., LoRTA, arXiv 2410.04060 (2024)")
def lortta(in_features: int, out_features: int, r: int = 8, heads: int = 1, alpha: float = 16.0,
           site: LayerSite | None = None) -> Graph:
    r"""LoRTA: one rank-``r`` CP tensor over ``(out, head, head_dim, matrix, layer)`` for the whole
    model, ``ΔW_{l,μ}[o, (h, d)] = Σ_ρ A[o, ρ] C_H[h, ρ] B[ρ, d] C_M[μ, ρ] C_L[l, ρ]``, the input read as
    ``(heads, head_dim)``; scale ``alpha / r``.

    Graph: five shared factors on one hyperedge ``ρ`` (a copy tensor) and basis vectors selecting
    this layer's row of ``C_L`` and this projection's row of ``C_M``. ``B`` starts at zero.
    Parameters for the model (closed form, counted once): ``r (M + d_h + H + M_k + L)``. Every
    target needs the same input size; outputs may differ (leading blocks of ``A``; the paper
    assumes square ``q, k, v, o``).
    """
    check_positive_int("lortta", "r", r)
    check_positive_int("lortta", "heads", heads)
    if in_features % heads:
        raise ConfigError(f"lortta: {heads} heads do not divide in_features {in_features}", field="heads")
    site = site or LayerSite.alone(in_features, out_features)
    if site.in_max != in_features:
        raise ConfigError(f"lortta: every target needs one input size; {site.path!r} has {in_features}, another "
                          f"{site.in_max}", field="target_modules")
    d_h, n_l, n_m = in_features // heads, site.num_layers, len(site.kinds)
    return Graph([Dense("A", ("out", "rho"), (out_features, r), init="kaiming_uniform",
                        share=Share("A", (site.out_max, r))),
                  Dense("CH", ("head", "rho"), (heads, r), init="kaiming_uniform_relu", share=Share("CH", (heads, r))),
                  Dense("B", ("rho", "dim"), (r, d_h), init="zeros", share=Share("B", (r, d_h))),
                  Dense("CM", ("matrix", "rho"), (n_m, r), init="kaiming_uniform_relu", share=Share("CM", (n_m, r))),
                  Basis.at("e_matrix", "matrix", n_m, site.kind_index),
                  Dense("CL", ("layer", "rho"), (n_l, r), init="kaiming_uniform_relu", share=Share("CL", (n_l, r))),
                  Basis.at("e_layer", "layer", n_l, site.layer)],
                 in_index=("head", "dim"), scale=alpha / r, name="lortta")
