"""Adapters as Qiskit circuits: operators equal to the node tensors (checked with Qiskit's own
``Operator``/``Statevector``), exact OpenQASM 3 round trips, transpilation to a backend's target,
and shot estimates inside a closed-form binomial (Bernstein) bound."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit import qasm3
from qiskit.providers.fake_provider import GenericBackendV2
from qiskit.quantum_info import Operator, Pauli, Statevector
from qiskit.transpiler import CouplingMap

from tnpeft.adapters import lora, oft, qpa, quantum_peft, qwthn
from tnpeft.errors import AdapterFileError, ConfigError, GraphError
from tnpeft.graph import Graph, Unitary
from tnpeft.params.unitary import UNITARY_PARAMS, circuit_angle_count, pauli_count
from tnpeft.quantum import (
    aer_simulator,
    estimate_qpa,
    estimate_unitary,
    export_circuits,
    load_circuits,
    measured_probabilities,
    sample_probabilities,
    shot_noise_bound,
    to_qiskit,
    transpile_for,
)
from tnpeft.runtime import GraphModule

PARAMS = sorted(k for k, v in UNITARY_PARAMS.items() if v.exact)   # circuits exist for exact frames only


def float64(graph, seed=0) -> GraphModule:
    """A float64 module of ``graph`` with values drawn from ``seed``."""
    return GraphModule(graph, dtype=torch.float64, rng=torch.Generator().manual_seed(seed))


def bind_inputs(qc, values):
    return qc.assign_parameters({p: float(values[p.index]) for p in qc.parameters})


def bind(qc, x, theta):
    """Bind the data inputs ``x[j]`` and the angles ``theta[k]`` of a parameterized circuit."""
    return qc.assign_parameters({p: float(x[p.index] if p.vector.name == "x" else theta[p.index])
                                 for p in qc.parameters})


# ------------------------------------------------------------------------------ operators
@pytest.mark.parametrize("param", PARAMS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_operator_restricted_to_columns_is_the_node(param, data):
    n = data.draw(st.integers(1, 16), label="N")
    k = data.draw(st.integers(1, n), label="K")
    batch = data.draw(st.sampled_from([(), (2,)]), label="batch")
    opts = {}
    if param in ("pauli", "givens"):
        opts["layers"] = data.draw(st.integers(1, 3), label="layers")
        if data.draw(st.booleans(), label="quantized"):
            opts["bits"] = data.draw(st.integers(2, 5), label="bits")
    elif "intrinsic_rank" in UNITARY_PARAMS[param].options and data.draw(st.booleans(), label="use K'"):
        opts["intrinsic_rank"] = data.draw(st.integers(1, k), label="intrinsic_rank")
    legs = tuple(f"b{i}" for i in range(len(batch)))
    g = Graph([Unitary("W", (*legs, "out", "in"), (*batch, n, k), param=param, options=opts)],
              in_index=(*legs, "in"), out_index=(*legs, "out"))
    gm = float64(g, data.draw(st.integers(0, 2**16), label="seed"))
    with torch.no_grad():
        for p in gm.parameters():   # away from the initial point
            p.mul_(data.draw(st.sampled_from([1.0, 3.0]), label="scale"))
    frames = gm.tensor("W").detach().reshape(-1, n, k).numpy()
    circuits = to_qiskit(gm, "W")
    circuits = circuits if batch else [circuits]
    assert len(circuits) == len(frames)
    for qc, u in zip(circuits, frames):
        op = Operator(qc).data                    # Qiskit's own matrix, little-endian basis order
        assert qc.num_qubits == max(1, math.ceil(math.log2(n)))
        assert np.abs(op[:n, :k] - u).max() < 1e-6
        assert np.abs(op[n:, :k]).max(initial=0.0) < 1e-6     # the columns stay inside the node's rows
        # circuit-shaped frames compile from their own description at every size
        assert qc.metadata["method"] == (param if param in ("pauli", "givens") else "synthesis")


def test_pauli_node_is_exactly_its_ry_cz_circuit():
    gm = float64(quantum_peft(16, 8, rank=4, layers=2, param="pauli"), seed=3)
    qc = to_qiskit(gm, "V")
    n_q, layers = 4, 2
    assert qc.num_qubits == n_q
    assert set(qc.count_ops()) == {"ry", "cz"}
    assert qc.count_ops()["ry"] == circuit_angle_count(n_q, layers) == pauli_count(16, layers)
    assert qc.count_ops()["cz"] == layers * (n_q // 2 + (n_q - 1) // 2)
    theta = gm.V.theta.detach().numpy()
    ry = [inst for inst in qc.data if inst.operation.name == "ry"]
    # the first RY layer reads angles 0..n-1 on qubits 0..n-1, and every angle is used exactly once
    assert [qc.find_bit(i.qubits[0]).index for i in ry[:n_q]] == list(range(n_q))
    assert sorted(float(i.operation.params[0]) for i in ry) == pytest.approx(sorted(theta.tolist()), abs=0)
    # with Parameters: the same circuit, one ParameterVector element per angle, values in metadata
    pq = to_qiskit(gm, "V", parameters=True)
    assert len(pq.parameters) == pauli_count(16, layers)
    bound = pq.assign_parameters({p: pq.metadata["theta"][p.index] for p in pq.parameters})
    assert np.allclose(Operator(bound).data, Operator(qc).data, atol=1e-12)


def test_quantized_angles_are_compiled():
    gm = float64(quantum_peft(8, 8, rank=2, layers=1, param="pauli", bits=3), seed=1)
    qc = to_qiskit(gm, "U")
    step = 2 * math.pi / 8
    angles = [float(i.operation.params[0]) for i in qc.data if i.operation.name == "ry"]
    assert all(abs(a / step - round(a / step)) < 1e-9 for a in angles)
    assert np.abs(Operator(qc).data[:, :2] - gm.tensor("U").detach().numpy()).max() < 1e-12


def test_qnn_node_compiles_with_data_inputs():
    for fusion, readout, qubits in (("product", "probs", None), ("linear", "z", 4)):
        gm = float64(qwthn(16, 16, r=4, qnn_layers=2, fusion=fusion, readout=readout, qubits=qubits), seed=2)
        qnn = gm.Q
        qc = to_qiskit(gm, "Q")
        assert [p.name for p in qc.parameters] == [f"x[{j}]" for j in range(4)]
        assert qc.metadata["kind"] == "qnn" and qc.metadata["readout"] == readout
        h = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        readout_torch = qnn.readout(h).detach().numpy()
        for row, ref in zip(h, readout_torch):
            sv = Statevector(bind_inputs(qc, row))
            n = qc.num_qubits
            if readout == "probs":
                got = sv.probabilities() * 2 ** n
            else:   # ⟨Z_q⟩ from Qiskit's Pauli, qubit q = rightmost character q
                got = np.array([sv.expectation_value(Pauli("I" * (n - 1 - q) + "Z" + "I" * q)).real for q in range(n)])
            assert np.abs(got - ref).max() < 1e-10


def test_qpa_generator_compiles_to_its_circuit():
    gm = float64(qpa(16, 16, r=2, chunk_size=4, qnn_layers=3), seed=4)
    circuits = to_qiskit(gm)
    assert list(circuits) == ["G"]
    qc = circuits["G"]
    gen = gm.G
    assert qc.num_qubits == gen.shape.qubits == 4 and qc.metadata["n_chunks"] == 16
    assert qc.count_ops() == {"ry": 12, "cx": 9}
    p = Statevector(qc).probabilities()[:16]
    assert np.abs(p - gen.probabilities().detach().numpy()).max() < 1e-12


def test_batched_nodes_and_selection_errors():
    gm = float64(oft(32, 32, block_size=8, butterfly=True, param="givens"), seed=5)
    with torch.no_grad():
        for p in gm.parameters():
            p.normal_(generator=torch.Generator().manual_seed(6))
    circuits = to_qiskit(gm)
    assert list(circuits) == [f"R1[{i}]" for i in range(4)] + [f"R2[{i}]" for i in range(8)]
    r2 = gm.tensor("R2").detach().numpy()
    one = to_qiskit(gm, "R2", index=5)
    assert one.metadata["batch_index"] == [5]
    assert np.abs(Operator(one).data[:4, :4] - r2[5]).max() < 1e-10
    assert len(to_qiskit(gm, "R1")) == 4
    with pytest.raises(GraphError) as e:
        to_qiskit(gm, "R1", index=4)
    assert e.value.node == "R1"
    lg = lora(8, 8, r=2)
    assert to_qiskit(lg) == {}
    with pytest.raises(GraphError, match="dense node") as e:
        to_qiskit(lg, "A")
    assert e.value.node == "A"
    with pytest.raises(ConfigError) as e:       # 600 rows need 10 qubits: refused before any work
        to_qiskit(quantum_peft(600, 600, rank=2, param="cayley"), "V")
    assert e.value.field == "max_synthesis_qubits" and "'V'" in str(e.value)


def test_inaccurate_synthesis_is_caught_and_redone(monkeypatch):
    import qiskit.synthesis

    from tnpeft.quantum.synthesis import apply_circuit_columns

    real = qiskit.synthesis.qs_decomposition
    calls = []

    def sloppy(mat, always):
        qc = real(mat)
        if always or not calls:
            qc.rz(1e-6, 0)          # the kind of error Qiskit's two-qubit decomposer sometimes makes
        calls.append(1)
        return qc

    gm = float64(quantum_peft(8, 8, rank=3, param="cayley"), seed=2)
    u = gm.tensor("V").detach().numpy()
    monkeypatch.setattr(qiskit.synthesis, "qs_decomposition", lambda m: sloppy(m, False))
    qc = to_qiskit(gm, "V")
    assert len(calls) == 2                                   # the first result was rejected
    assert np.abs(Operator(qc).data[:, :3] - u).max() < 1e-12
    probe = np.random.default_rng(1).normal(size=(8, 2))
    assert np.abs(apply_circuit_columns(qc, probe) - Operator(qc).data @ probe).max() < 1e-12
    monkeypatch.setattr(qiskit.synthesis, "qs_decomposition", lambda m: sloppy(m, True))
    with pytest.raises(GraphError, match="no exact synthesis") as e:
        to_qiskit(gm, "V")
    assert e.value.node == "V"


# ------------------------------------------------------------------------------ OpenQASM 3
def test_qasm3_round_trip_is_exact(tmp_path):
    pytest.importorskip("qiskit_qasm3_import")
    graphs = {k: float64(g, 7) for k, g in {
        "q16": quantum_peft(16, 6, rank=3, layers=2), "cay": quantum_peft(8, 5, rank=2, param="householder"),
        "qw": qwthn(16, 16, r=4), "qpa": qpa(16, 16, r=2, chunk_size=4, qnn_layers=2)}.items()}
    x = np.linspace(-1.3, 2.1, 4)
    for parameters in (False, True):
        d = tmp_path / f"p{parameters}"
        index = export_circuits(graphs, d, parameters=parameters)
        assert json.loads((d / "index.json").read_text()) == index
        loaded = load_circuits(d)
        assert set(loaded) == {e["name"] for e in index["circuits"]} == {
            "q16:V", "q16:U", "cay:V", "cay:U", "qw:Q", "qpa:G"}
        for e in index["circuits"]:
            orig = to_qiskit(graphs[e["module"]], e["node"], parameters=parameters)
            back = loaded[e["name"]]
            assert [p.name for p in back.parameters] == [p.name for p in orig.parameters]

            theta = e.get("theta")
            want = Operator(bind(orig, x, theta)).data
            assert np.abs(Operator(bind(back, x, theta)).data - want).max() < 1e-9
            # the file alone, through qiskit.qasm3.loads, carries the global phase too
            raw = qasm3.loads((d / e["file"]).read_text())
            by_name = {p.name: p for p in raw.parameters}
            raw = raw.assign_parameters({q: (x[int(n.rsplit("_", 1)[1])] if n.startswith("x_") else
                                             e["theta"][int(n.rsplit("_", 1)[1])]) for n, q in by_name.items()})
            assert np.abs(Operator(raw).data - want).max() < 1e-9
    synth = next(e for e in index["circuits"] if e["name"] == "cay:V")
    assert synth["method"] == "synthesis" and synth["rows"] == 8 and synth["cols"] == 2
    f = d / synth["file"]
    f.write_text(f.read_text().replace("cx", "cz", 1))
    with pytest.raises(AdapterFileError, match="checksum"):
        load_circuits(d)


def test_export_from_saved_adapter_and_model(tmp_path):
    pytest.importorskip("qiskit_qasm3_import")
    import tnpeft

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))
    model = tnpeft.inject(model, tnpeft.AdapterConfig("quantum_peft", ["0", "2"], rank=2, layers=2))
    tnpeft.save_adapter(model, tmp_path / "adapter")
    from_dir = export_circuits(tmp_path / "adapter", tmp_path / "from_dir")
    from_model = export_circuits(model, tmp_path / "from_model")
    names = [e["name"] for e in from_dir["circuits"]]
    assert names == [e["name"] for e in from_model["circuits"]] == ["0:V", "0:U", "2:V", "2:U"]
    loaded = load_circuits(tmp_path / "from_dir")
    layers = dict(tnpeft.nn.tn_layers(model))
    for name, qc in loaded.items():
        path, node = name.split(":")
        u = layers[path].tn_adapters["default"].tensor(node).detach().double().numpy()
        n, k = u.shape
        assert np.abs(Operator(qc).data[:n, :k] - u).max() < 1e-6   # saved float32 values
    with pytest.raises(ConfigError, match="no circuit"):
        export_circuits(lora(8, 8), tmp_path / "none")


def test_cli_export_circuits(tmp_path, capsys):
    pytest.importorskip("qiskit_qasm3_import")
    import tnpeft
    from tnpeft.cli import main

    assert main(["export-circuits", "quantum_peft", "--in-features", "16", "--out-features", "6", "rank=2",
                 "-o", str(tmp_path / "a"), "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in index["circuits"]] == ["V", "U"]
    assert set(load_circuits(tmp_path / "a")) == {"V", "U"}
    model = tnpeft.inject(torch.nn.Sequential(torch.nn.Linear(8, 8)), tnpeft.AdapterConfig("qpa", ["0"], r=2))
    tnpeft.save_adapter(model, tmp_path / "saved")
    assert main(["export-circuits", "--adapter-dir", str(tmp_path / "saved"), "-o", str(tmp_path / "b")]) == 0
    assert "0:G" in capsys.readouterr().out
    assert main(["export-circuits", "lora", "--in-features", "8", "--out-features", "8", "-o",
                 str(tmp_path / "c")]) == 2
    assert "no circuit" in capsys.readouterr().err
    assert main(["export-circuits", "-o", str(tmp_path / "d")]) == 2


# ------------------------------------------------------------------------------ transpile
def test_transpiled_circuits_fit_the_backend_and_keep_the_operator():
    g = float64(quantum_peft(16, 6, rank=3, layers=2, param="pauli"), seed=8)
    original = to_qiskit(g)                 # V: the 4-qubit Pauli circuit; U: a 3-qubit synthesis
    for name in ("V", "U"):
        qc = original[name]
        n = qc.num_qubits
        backend = GenericBackendV2(n, coupling_map=CouplingMap.from_line(n).get_edges(), seed=3)
        allowed = set(backend.operation_names)
        edges = set(backend.coupling_map.get_edges())
        t = transpile_for({name: qc}, backend, optimization_level=1, seed=11)[name]
        assert set(t.count_ops()) <= allowed
        two = [tuple(t.find_bit(q).index for q in inst.qubits) for inst in t.data if inst.operation.num_qubits == 2]
        assert two and all(pair in edges for pair in two)
        assert np.abs(Operator.from_circuit(t).data - Operator(qc).data).max() < 1e-9


# ------------------------------------------------------------------------------ shots
def test_bound_matches_closed_form_and_covers():
    p = np.array([0.0, 0.01, 0.2, 0.5, 0.9])
    shots, delta = 1000, 0.01
    big_l = math.log(2 * p.size / delta)
    ref = (big_l / 3 + np.sqrt(big_l ** 2 / 9 + 2 * shots * big_l * p * (1 - p))) / shots
    assert np.allclose(shot_noise_bound(p, shots, delta=delta), ref, rtol=1e-12)
    # classical multinomial draws: the simultaneous bound fails in at most a fraction δ of them
    rng = np.random.default_rng(0)
    q = np.array([0.02, 0.18, 0.3, 0.5])
    t = shot_noise_bound(q, shots, delta=0.05)
    draws = rng.multinomial(shots, q, size=4000) / shots
    assert np.mean(np.any(np.abs(draws - q) > t, axis=1)) <= 0.05
    # and it is not vacuous: a bound half as wide fails far more often
    assert np.mean(np.any(np.abs(draws - q) > t / 2, axis=1)) > 0.05


@pytest.fixture(scope="module")
def noiseless():
    return aer_simulator()


def test_unitary_column_probabilities_from_shots(noiseless):
    shots = 4096
    gm = float64(quantum_peft(8, 6, rank=3, layers=2, param="pauli"), seed=9)
    for node in ("V", "U"):     # a Pauli circuit and a synthesized frame (6 rows on 3 qubits)
        r = estimate_unitary(gm, node, noiseless, shots=shots, seed=21)
        u = gm.tensor(node).detach().numpy()
        exact = u ** 2
        assert np.allclose(r.exact, exact, atol=1e-14)
        err = np.abs(r.estimate - exact)
        big_l = math.log(2 * exact.size / 1e-3)
        bound = (big_l / 3 + np.sqrt(big_l ** 2 / 9 + 2 * shots * big_l * exact * (1 - exact))) / shots
        assert np.all(err <= bound) and r.within_bound
        assert err.max() > 0                                    # really sampled
        assert 0.5 < r.rms_error / r.predicted_rms < 2.0        # errors of the size shot noise predicts
        assert np.allclose(r.estimate.sum(axis=0), 1.0) and np.all(r.leakage < 1e-12)
        assert r.estimate.shape == (u.shape[0], 3) and np.all(r.estimate * shots == np.round(r.estimate * shots))


def test_qpa_weights_from_sampled_probabilities(noiseless):
    gm = float64(qpa(16, 16, r=2, chunk_size=4, qnn_layers=4), seed=10)
    gen = gm.G
    r = estimate_qpa(gm, backend=noiseless, shots=4096, seed=5)
    assert np.allclose(r.exact, gen.probabilities().detach().numpy(), atol=1e-12)
    assert r.within_bound and r.max_error > 0
    with torch.no_grad():
        ref = gm.generated_values("G", probs=torch.as_tensor(r.estimate))
        for k in ("A", "B"):
            assert torch.allclose(r.weights[k], ref[k], atol=1e-12)
        exact_dw = gm.dense(scaled=True).clone()
        with measured_probabilities(gm, r.estimate):
            sampled_dw = gm.dense(scaled=True).clone()
            assert torch.allclose(sampled_dw, gm.graph.scale * ref["B"] @ ref["A"], atol=1e-12)
            x = torch.randn(3, 16, dtype=torch.float64)
            assert torch.allclose(gm(x), x @ sampled_dw.T, atol=1e-12)
        assert torch.equal(gm.dense(scaled=True), exact_dw)      # restored, cache included
    rel = float(torch.linalg.norm(sampled_dw - exact_dw) / torch.linalg.norm(exact_dw))
    assert r.delta_error == pytest.approx(rel, rel=1e-9) and 0 < rel < 0.1
    assert r.noise_factor < 2.0                                 # a noiseless backend: shot noise only
    with measured_probabilities(gm, r.estimate):                  # gradients reach the mapping network
        gen.zero_grad()
        gm(torch.randn(2, 16, dtype=torch.float64)).sum().backward()
        assert gen.mlp[0].weight.grad is not None and gen.theta.grad is None
    with pytest.raises(ConfigError):
        with measured_probabilities(gm, r.estimate[:3]):
            pass


def test_noisy_backend_report_quantifies_the_noise(noiseless):
    g = float64(qpa(16, 16, r=2, chunk_size=4, qnn_layers=4), seed=10)
    noisy = aer_simulator(GenericBackendV2(4, seed=2))
    clean = estimate_qpa(g, backend=noiseless, shots=4096, seed=5)
    dirty = estimate_qpa(g, backend=noisy, shots=4096, seed=5)
    assert clean.within_bound and not dirty.within_bound
    assert dirty.rms_error > 1.5 * dirty.predicted_rms
    assert dirty.value_error > clean.value_error and dirty.noise_factor > 1.5 > clean.noise_factor
    assert dirty.shot_value_error == clean.shot_value_error     # same classical baseline
    d = dirty.to_dict()
    assert d["within_bound"] is False and set(d["node_errors"]) == {"A", "B"}
    assert "shot noise alone" in str(dirty)
    unitary = estimate_unitary(float64(quantum_peft(8, 6, rank=2), 1), "U", noisy, shots=2048, seed=3)
    assert unitary.leakage.max() > 0                           # noise leaves the node's 6 rows


def test_sampling_needs_bound_parameters():
    qc = to_qiskit(qwthn(8, 8, r=4), "Q")
    with pytest.raises(ConfigError, match="unbound"):
        sample_probabilities([qc])


# ------------------------------------------------------------------------------ every width, per module
def test_export_degrades_per_node_and_names_what_it_skipped(tmp_path):
    pytest.importorskip("qiskit_qasm3_import")
    import tnpeft

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6))
    # module 0's V is a 300-row Cayley frame: 9 qubits, over the synthesis limit; its U and module 2 compile
    model = tnpeft.inject(model, tnpeft.AdapterConfig("quantum_peft", ["0", "2"], rank=2, param="cayley"))
    index = export_circuits(model, tmp_path / "c")
    assert [s["name"] for s in index["skipped"]] == ["0:V"]
    assert "9 qubits" in index["skipped"][0]["reason"] and "'pauli' or 'givens'" in index["skipped"][0]["reason"]
    assert [e["name"] for e in index["circuits"]] == ["0:U", "2:V", "2:U"]
    assert set(load_circuits(tmp_path / "c")) == {"0:U", "2:V", "2:U"}


def test_run_path_takes_what_the_compile_path_returns(noiseless):
    from qiskit.primitives import StatevectorSampler

    gm = float64(quantum_peft(16, 8, rank=2, layers=1), seed=3)
    circuits = to_qiskit(gm)                      # {"V": …, "U": …}: 4 and 3 qubits
    probs = sample_probabilities(circuits, noiseless, shots=2000, seed=1)
    assert set(probs) == {"V", "U"} and probs["V"].shape == (16,) and probs["U"].shape == (8,)
    one = sample_probabilities(circuits["V"], noiseless, shots=2000, seed=1)
    assert one.shape == (16,) and abs(one.sum() - 1) < 1e-9
    # any V2 sampler plugs in, with or without a backend to transpile to
    exact = np.abs(Operator(circuits["V"]).data[:, 0]) ** 2
    sv = sample_probabilities(circuits["V"], sampler=StatevectorSampler(seed=2), shots=20000)
    assert np.abs(sv - exact).max() < 0.02
    est = estimate_unitary(circuits["V"], backend=noiseless, shots=4096, seed=4)
    want = gm.tensor("V").detach().numpy() ** 2
    assert np.abs(est.exact - want).max() < 1e-12 and est.within_bound
    both = estimate_unitary(circuits, backend=noiseless, shots=4096, seed=4)
    assert set(both) == {"V", "U"} and both["U"].exact.shape == (8, 2)
    with pytest.raises(ConfigError, match="one width"):
        sample_probabilities([circuits["V"], circuits["U"]], noiseless)
