"""QWTHN — the quantum weighted tensor hybrid network (Kong et al., arXiv 2503.12790; its second
version is called QTHA): an MPO low-rank path with a quantum neural network on its bottleneck."""

from __future__ import annotations

from typing import Any

from tnpeft.adapters.methods import check_positive_int, register
from tnpeft.adapters.tensor_train import tt_graph
from tnpeft.errors import ConfigError
from tnpeft.graph import Graph
from tnpeft.params.qnn import FUSIONS, READOUTS, default_qubits


@register("qwthn", paper="Kong et al., arXiv 2503.12790", advice=(
    "MPO with a QNN on each token. On a causal LM's attention (SmolLM2) it matched LoRA r=2 at equal parameters "
    "(test perplexity 43.30 vs 43.14) and plain mpo (43.53), and trailed same-rank LoRA (42.30); on tweets at 3 epochs "
    "(3 seeds) it was level with mpo and 0.6 points below LoRA r=8 (0.774 vs 0.770 and 0.780; 0.736 at 150 steps), with "
    "a higher training loss than LoRA's. Its QNN adds 20-35 % step time on a CPU, makes a step about 8x peft LoRA's on a GPU "
    "(an H200: thousands of small kernels) and is a circuit per token on a device — try mpo or a small-r LoRA first."))
def qwthn(in_features: int, out_features: int, r: int = 8, cores: int = 2, bond: int | None = None,
          alpha: float = 16.0, fusion: str = "product", qnn_layers: int = 2, qubits: int | None = None,
          readout: str = "probs", entangler: str = "cz", in_factors: Any = None, out_factors: Any = None,
          rank_factors: Any = None) -> Graph:
    r"""QWTHN / QTHA: an MPO low-rank path whose ``r`` hidden features are weighted by a quantum
    neural network.

    ``x → A_MPO → h (r features) → QNN → q → fuse(h, q) → B_MPO → s · (…)``, with
    ``fusion="product"`` (v1, "quantum weighted": ``h ⊙ q``) or ``"linear"`` (v2: ``a ⊙ h + b ⊙ q``,
    trainable ``a = 1``, ``b = 0`` at the start). The QNN (:mod:`tnpeft.params.qnn`) runs on
    ``⌈log₂ r⌉`` qubits: it angle-encodes the ``r`` features (re-uploading them in rounds when there
    are more features than qubits), applies ``qnn_layers`` blocks of trainable RY + an entangling
    ladder (``entangler`` ``"cz"`` or ``"cx"``), and reads out ``q = 2ⁿ·p`` (the first ``r``
    probabilities, scaled to mean 1) or ``⟨Z⟩`` per qubit (``readout="z"`` needs ``n ≥ r``).

    What the paper leaves open and tnpeft chose (the paper body was not available): the MPO sits on
    both sides of the QNN (down- and up-projection, as a LoRA's ``A`` and ``B``); the QNN acts on
    the ``r``-dimensional bottleneck; angle encoding uses the features as radians without
    squashing; the last up core starts at zero so training starts from the base model; ``q`` is
    computed per token; the scale is ``alpha / r`` as in LoRA. The update depends on the input, so
    QWTHN cannot be merged into the weight.

    Parameters (closed form): the MPO cores (see :func:`mpo`) plus the QNN's
    ``n · max(qnn_layers, ⌈r/n⌉)`` angles (plus ``2r`` for linear fusion).
    """
    check_positive_int("qwthn", "qnn_layers", qnn_layers)
    if fusion not in FUSIONS[:2]:
        raise ConfigError(f"qwthn: fusion must be 'product' (v1) or 'linear' (v2), got {fusion!r}", field="fusion")
    if readout not in READOUTS:
        raise ConfigError(f"qwthn: readout must be one of {READOUTS}, got {readout!r}", field="readout")
    if qubits is not None:
        check_positive_int("qwthn", "qubits", qubits)
    n_q = qubits or default_qubits(r)
    qnn = {"qubits": n_q, "layers": qnn_layers, "entangler": entangler, "readout": readout, "fusion": fusion}
    return tt_graph("qwthn", in_features, out_features, r, cores, bond, in_factors, out_factors, rank_factors, alpha,
                    qnn)
