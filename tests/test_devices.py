"""Devices by name and the Device that runs tnpeft's circuits: the calibrated fake IBM devices resolve
offline; the simulation of only the qubits a circuit touches is the full-width simulation (exact
probabilities, and sampled counts against Aer's own noisy sampler); the ideal device equals the torch
simulator (exactly, and within the shot-noise bound when it samples); the QPU time is
shots × (duration + repetition delay) from the device's own durations; the CLI lists devices."""

import json

import numpy as np
import pytest
import torch

from tnpeft.circuits.circuit import probabilities, qnn_circuit, qpa_circuit, simulate
from tnpeft.circuits.parameter_shift import group_values, grouped_circuit
from tnpeft.cli import main
from tnpeft.errors import ConfigError

pytest.importorskip("qiskit_aer")
runtime = pytest.importorskip("qiskit_ibm_runtime")

from tnpeft.quantum import Device, device_info, list_devices, resolve_backend  # noqa: E402
from tnpeft.quantum.local_sim import reduce_circuit, simulate_probabilities  # noqa: E402
from tnpeft.quantum.shots import shot_noise_bound  # noqa: E402


def circuit_and_values(seed=0, rows=3):
    c = qpa_circuit(3, 2)
    th = torch.rand(rows, c.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 6 - 3
    return c, th, group_values(c, th).numpy()


def test_names_resolve_offline():
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit_aer import AerSimulator

    assert isinstance(resolve_backend("ideal"), AerSimulator) and resolve_backend(None).options.noise_model is None
    assert isinstance(resolve_backend("generic"), GenericBackendV2)
    torino = resolve_backend("fake_torino")
    assert torino.num_qubits == 133 and "cz" in torino.target.operation_names
    assert resolve_backend(torino) is torino
    with pytest.raises(ConfigError, match="no fake device named 'fake_torin'.*fake_torino"):
        resolve_backend("fake_torin")
    with pytest.raises(ConfigError, match="unknown backend"):
        resolve_backend("torino")
    with pytest.raises(ConfigError, match="BackendV2"):
        resolve_backend(3)


@pytest.fixture
def few_devices(monkeypatch):
    """Three fake devices instead of all 68 (building every target takes tens of seconds)."""
    import tnpeft.quantum.devices as devices

    every = devices.fake_device_classes()
    few = {k: every[k] for k in ("fake_kyoto", "fake_sherbrooke", "fake_torino")}
    monkeypatch.setattr(devices, "fake_device_classes", lambda: few)
    return few


def test_device_info_and_unusable_devices(few_devices):
    info = device_info("fake_sherbrooke")
    assert (info.qubits, info.two_qubit_gate) == (127, "ecr") and 0 < info.median_two_qubit_error < 0.05
    errs = [p.error for p in resolve_backend("fake_sherbrooke").target["ecr"].values()]
    assert info.median_two_qubit_error == pytest.approx(float(np.median(errs)))
    assert not device_info("fake_kyoto").usable
    names = [i.name for i in list_devices()[0]]
    assert names[:2] == ["ideal", "generic"] and "fake_torino" in names


def test_reduced_simulation_is_the_full_width_simulation():
    from qiskit import transpile
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel

    from tnpeft.quantum.compile import circuit_to_qiskit

    c, th, _ = circuit_and_values()
    backend = resolve_backend("fake_manila")
    qc = circuit_to_qiskit(c, th[0])
    qc.measure_all()
    isa = transpile(qc, backend, optimization_level=1, seed_transpiler=3)
    dev = Device(backend, shots=None)
    red = reduce_circuit(isa)
    ours = dev.distribution(dev.compile(qc.remove_final_measurements(inplace=False), []), 0, None)[0]
    # pre-read-out probabilities: the full device's noise model on the full register, same circuit
    full = isa.remove_final_measurements(inplace=False)
    full.save_probabilities(list(red.physical))
    nm = NoiseModel.from_backend(backend, readout_error=False)
    p_full = AerSimulator(method="density_matrix", noise_model=nm).run(full).result().data()["probabilities"]
    p_red = simulate_probabilities(red, None, [], noise_model=dev._noise_model(red.active))[0]
    np.testing.assert_allclose(p_red, p_full, atol=1e-12)
    # with read-out errors: Aer's own noisy sampler on the full device against our distribution
    shots = 100_000
    counts = AerSimulator.from_backend(backend, seed_simulator=5).run(isa, shots=shots).result().get_counts()
    freq = np.zeros(8)
    for key, v in counts.items():
        freq[int(key, 2)] = v / shots
    assert np.all(np.abs(freq - ours) <= shot_noise_bound(ours, shots, delta=1e-4))


def test_ideal_device_equals_the_simulator_exactly_and_in_expectation():
    c, th, vals = circuit_and_values(rows=4)
    exact = probabilities(simulate(c, th)).numpy()
    np.testing.assert_allclose(Device("ideal", shots=None).probabilities(grouped_circuit(c), vals), exact, atol=1e-12)
    shots = 50_000
    dev = Device("ideal", shots=shots, seed=2)
    est = dev.probabilities(grouped_circuit(c), vals)
    assert np.all(np.abs(est - exact) <= shot_noise_bound(exact, shots, delta=1e-4))
    assert not np.allclose(est, exact)
    assert dev.stats.shots == 4 * shots and dev.stats.circuits == 4 and dev.stats.pubs == 1


def test_qpu_time_is_shots_times_duration_plus_repetition_delay():
    c, th, vals = circuit_and_values(rows=5)
    dev = Device("fake_torino", shots=1000, seed=0)
    compiled = dev.compile_circuit(grouped_circuit(c))
    backend = dev.backend
    duration = compiled.isa[0].estimate_duration(backend.target, unit="s")
    assert duration > 0 and dev.rep_delay == backend.configuration().default_rep_delay == 250e-6
    dev.probabilities(grouped_circuit(c), vals)
    assert dev.stats.qpu_seconds == pytest.approx(5 * 1000 * (duration + 250e-6))


def test_the_device_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="shots"):
        Device("ideal", shots=0)
    with pytest.raises(ConfigError, match="sampler"):
        Device("fake_torino", shots=None, sampler=object())
    dev = Device("fake_torino", shots=100, mitigation="readout")
    with pytest.raises(ConfigError, match="without ZNE"):
        dev.configure(mitigation="zne")


def test_a_sampler_runs_one_pub_per_shape():
    from qiskit.primitives import StatevectorSampler

    c, th, vals = circuit_and_values(rows=6)
    exact = probabilities(simulate(c, th)).numpy()
    dev = Device("ideal", shots=20_000, sampler=StatevectorSampler(seed=3))
    assert not dev.local
    est = dev.probabilities(grouped_circuit(c), vals)
    assert est.shape == (6, 8) and np.all(np.abs(est - exact) <= shot_noise_bound(exact, 20_000, delta=1e-4))
    assert dev.stats.pubs == 1 and dev.stats.circuits == 6


def test_qnn_rows_are_bindings_of_one_circuit():
    c = qnn_circuit(2, 2, 3)
    th = torch.rand(c.n_params, dtype=torch.float64)
    x = torch.rand(7, 3, dtype=torch.float64)
    dev = Device("fake_torino", shots=None)
    p = dev.probabilities(grouped_circuit(c), group_values(c, th, x).numpy())
    assert p.shape == (7, 4) and np.allclose(p.sum(1), 1.0)
    assert dev.stats.pubs == 1 and dev.stats.circuits == 7


def test_cli_devices_and_circuits_on_a_fake_device(capsys, few_devices):
    assert main(["devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    torino = next(d for d in out["devices"] if d["name"] == "fake_torino")
    assert torino["qubits"] == 133 and "cz" in torino["basis_gates"]
    assert main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "fake_torino" in text and "not listed: fake_kyoto" in text
    assert main(["circuits", "quantum_peft", "--in-features", "12", "--out-features", "8", "rank=2",
                 "--backend", "fake_sherbrooke", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["backend"] == "fake_sherbrooke" and rep["totals"]["backend_two_qubit"] > 0
    assert main(["circuits", "quantum_peft", "--in-features", "12", "--out-features", "8",
                 "--backend", "fake_nowhere"]) == 2
    assert "no fake device named" in capsys.readouterr().err


def test_the_extras_name_the_runtime():
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in ("quantum", "test"):
        assert any(r.startswith("qiskit-ibm-runtime") for r in extras[extra])
