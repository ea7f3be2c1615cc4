r"""QPA with a quantum computer in the loop: its hyper-network's circuit measured on a backend.

:func:`estimate_qpa` measures the hyper-network's circuit, feeds the sampled ``p̂_i`` of the first
``n_ch`` basis states to the mapping network, and reports the effect on the generated LoRA weights
beside the error shot noise alone explains; :func:`measured_probabilities` makes the adapter itself
(forward, ``dense()``, merging) use measured probabilities — the quantum-in-the-loop path, in which
gradients still reach the mapping network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from tnpeft.circuits.circuit import probabilities, simulate
from tnpeft.errors import ConfigError, GraphError
from tnpeft.graph import Graph
from tnpeft.params.hypernetworks import QPAHyperNetwork
from tnpeft.quantum.backends import sample_probabilities
from tnpeft.quantum.compile import to_qiskit
from tnpeft.quantum.shots import ShotReport
from tnpeft.runtime import GraphModule
from tnpeft.storage import resolve_graph_module

if TYPE_CHECKING:  # pragma: no cover
    from qiskit.providers import BackendV2


def _hypernetwork(graph: Graph, hypernetwork: str | None) -> str:
    qpa = [n for n, g in graph.hypernetworks.items() if g.kind == "qpa"]
    if hypernetwork is None:
        if len(qpa) != 1:
            raise GraphError(f"the graph has qpa hyper-networks {qpa}; name one with hypernetwork=")
        return qpa[0]
    if hypernetwork not in qpa:
        raise GraphError(f"no qpa hyper-network named {hypernetwork!r}; the graph has {qpa}", node=hypernetwork)
    return hypernetwork


def _exact_qpa_probs(gen: QPAHyperNetwork) -> np.ndarray:
    with torch.no_grad():
        state = simulate(gen.circuit, gen.theta.detach().to(torch.float64))
    return probabilities(state).cpu().numpy()


@contextmanager
def measured_probabilities(source: Any, probs: Any, hypernetwork: str | None = None) -> Iterator[GraphModule]:
    """Inside the block, QPA hyper-network ``hypernetwork`` uses ``probs`` (the measured probabilities of
    its first ``n_ch`` basis states) instead of simulating its circuit: the adapter's forward pass,
    ``dense()`` and merging all see weights generated from the measurements, and gradients still
    reach the mapping network. Yields the graph module.

    A training loop that re-measures the circuit every step (with the current angles) and trains
    inside this block is quantum-in-the-loop; the circuit angles themselves get no gradient from
    sampled probabilities.
    """
    graph, module = resolve_graph_module(source)
    name = _hypernetwork(graph, hypernetwork)
    gen = cast(QPAHyperNetwork, module.get_submodule(name))
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64)).to(gen.theta.device, gen.theta.dtype)
    if p.shape != (gen.shape.n_chunks,):
        raise ConfigError(f"hyper-network {name!r} reads the probabilities of its first {gen.shape.n_chunks} basis "
                          f"states, got shape {tuple(p.shape)}", field="probs")
    previous = gen.probability_override
    gen.set_probabilities(p)
    module.clear_generated(name)
    try:
        yield module
    finally:
        gen.set_probabilities(previous)
        module.clear_generated(name)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.norm(b))
    return float(torch.linalg.norm(a - b)) / den if den > 0 else float(torch.linalg.norm(a - b))


@dataclass
class QPAEstimate(ShotReport):
    """QPA's ``p_i`` (first ``n_ch`` basis states) from shots, and the LoRA weights generated from them.

    Attributes:
        hypernetwork: the hyper-network's name.
        weights: ``{node: tensor}`` generated from the measured probabilities.
        exact_weights: the same from the exact probabilities.
        node_errors: ``{node: ‖W_measured − W_exact‖_F / ‖W_exact‖_F}``.
        value_error: the same over all generated values together.
        shot_value_error: mean and standard deviation of ``value_error`` over ``trials`` ideal
            multinomial samples of ``shots`` shots (drawn classically from the exact distribution):
            the error shot noise alone explains.
        delta_error: relative error of the materialized update ``ΔW`` (``None`` for an adapter
            that cannot be materialized).
    """

    hypernetwork: str = ""
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    exact_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    node_errors: dict[str, float] = field(default_factory=dict)
    value_error: float = 0.0
    shot_value_error: tuple[float, float] = (0.0, 0.0)
    delta_error: float | None = None

    @property
    def noise_factor(self) -> float:
        """``value_error`` over the shot-noise expectation: ≈ 1 on a noiseless backend; larger
        when device noise (gate and read-out errors) adds to shot noise."""
        return self.value_error / self.shot_value_error[0] if self.shot_value_error[0] > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"hypernetwork": self.hypernetwork, **super().to_dict(), "node_errors": self.node_errors,
                "value_error": self.value_error, "shot_value_error_mean": self.shot_value_error[0],
                "shot_value_error_std": self.shot_value_error[1], "noise_factor": self.noise_factor,
                "delta_error": self.delta_error}

    def __str__(self) -> str:
        d = self.to_dict()
        delta = "" if self.delta_error is None else f", ΔW {self.delta_error:.2%}"
        return (f"{self.hypernetwork}: {super().__str__()}\n  generated weights from measured p: relative error "
                f"{self.value_error:.2%} (shot noise alone: {d['shot_value_error_mean']:.2%} ± "
                f"{d['shot_value_error_std']:.2%}; ×{self.noise_factor:.2f}){delta}; per node "
                + ", ".join(f"{k} {v:.2%}" for k, v in self.node_errors.items()))


def estimate_qpa(source: Any, hypernetwork: str | None = None, backend: BackendV2 | None = None, *, shots: int = 4096,
                 seed: int | None = None, delta: float = 1e-3, sampler: Any = None, optimization_level: int = 1,
                 trials: int = 32) -> QPAEstimate:
    """Measure a QPA hyper-network's circuit on ``backend`` (default: noiseless Aer), generate the LoRA
    weights from the sampled probabilities and report the error against the exact ones, beside the
    error shot noise alone predicts (``trials`` classical multinomial draws, seeded by ``seed``)."""
    graph, module = resolve_graph_module(source)
    name = _hypernetwork(graph, hypernetwork)
    gen = cast(QPAHyperNetwork, module.get_submodule(name))
    n_ch = gen.shape.n_chunks
    qc = to_qiskit(module, name)
    est = sample_probabilities([qc], backend, shots=shots, seed=seed, sampler=sampler,
                               optimization_level=optimization_level)[0]
    full = _exact_qpa_probs(gen)
    exact = full[:n_ch]

    def values(p: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.as_tensor(p).to(gen.theta.device, gen.theta.dtype)
        return {k: v.detach().clone() for k, v in module.generated_values(name, probs=t).items()}

    def flat(w: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([v.reshape(-1).to(torch.float64) for v in w.values()])

    with torch.no_grad():
        measured, ideal = values(est[:n_ch]), values(exact)
        errors = {k: _rel(measured[k].double(), ideal[k].double()) for k in ideal}
        value_error = _rel(flat(measured), flat(ideal))
        rng = np.random.default_rng(seed)
        pk = full / full.sum()
        draws = [_rel(flat(values(rng.multinomial(shots, pk)[:n_ch] / shots)), flat(ideal)) for _ in range(trials)]
        delta_error = None
        if graph.is_linear:
            with measured_probabilities(module, exact, name):
                w_exact = module.dense(scaled=True).double()
            with measured_probabilities(module, est[:n_ch], name):
                w_meas = module.dense(scaled=True).double()
            delta_error = _rel(w_meas, w_exact)
    return QPAEstimate(est[:n_ch], exact, shots, delta, hypernetwork=name, weights=measured, exact_weights=ideal,
                       node_errors=errors, value_error=value_error,
                       shot_value_error=(float(np.mean(draws)), float(np.std(draws))) if draws else (0.0, 0.0),
                       delta_error=delta_error)
