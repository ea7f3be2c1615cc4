"""Quantum hardware in the loop: a QPA fine-tune trains with its QNN on a noisy fake device (finite loss,
the adapter moves, the circuits and shots are the documented budget); frames are estimated with their
signs from shallow circuits (exact with exact probabilities); an adapter with Λ = 0 is reported by
its frame errors, never as "0.00 %"; and `hardware-eval` on a trained MiniLM Quantum-PEFT adapter
reports the exact and the device accuracy, equal on an exact ideal device and within the binomial
error with many shots."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.adapters import quantum_peft, qwthn
from tnpeft.circuits.circuit import unitary_matrix
from tnpeft.circuits.frames import pauli_frame_circuit
from tnpeft.circuits.parameter_shift import shift_cost
from tnpeft.cli import main

pytest.importorskip("qiskit_aer")
from tnpeft.quantum import Device, device_budget, estimate_adapter, on_device  # noqa: E402
from tnpeft.quantum.hardware import estimate_quantum_parts  # noqa: E402
from tnpeft.quantum.relative_signs import phase_circuit, phase_inputs, reconstruct_frame  # noqa: E402


def test_qpa_fine_tune_on_a_noisy_fake_device_keeps_its_budget():
    pytest.importorskip("qiskit_ibm_runtime")
    model = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("qpa", ["c_attn"], r=2, chunk_size=64, qnn_layers=2))
    ids = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))
    dev = Device("fake_torino", shots=512, seed=0)
    budget = device_budget(model, dev)
    nets = [m for n, m in model.named_modules() if type(m).__name__ == "QPAHyperNetwork"]
    assert len(nets) == 2                                             # c_attn of the two blocks
    per_step = sum(1 + shift_cost(m.circuit) for m in nets)            # one forward + 2 per angle, per hyper-network
    assert budget.circuits == per_step and budget.shots_total == per_step * 512
    assert all(shift_cost(m.circuit) == 2 * m.theta.numel() for m in nets)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    steps = 3
    with on_device(model, device=dev):
        for _ in range(steps):
            loss = model(ids, labels=ids).loss
            assert torch.isfinite(loss)
            loss.backward()
            assert all(m.theta.grad is not None and torch.isfinite(m.theta.grad).all() for m in nets)
            opt.step()
            opt.zero_grad()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters() if p.requires_grad}
    assert all(v > 0 for n, v in moved.items() if n.endswith("theta"))
    assert dev.stats.circuits == steps * budget.circuits and dev.stats.shots == steps * budget.shots_total
    assert dev.stats.by_purpose == {"forward": steps * len(nets), "shift": steps * (per_step - len(nets))}
    assert dev.stats.qpu_seconds == pytest.approx(steps * budget.qpu_seconds)
    # outside the block the adapter is exact again
    with torch.no_grad():
        exact = model(ids, labels=ids).loss
        again = model(ids, labels=ids).loss
    assert exact == again


@pytest.mark.parametrize("n,k", [(8, 3), (12, 4), (13, 2), (16, 5)])
def test_frames_from_shallow_circuits_are_exact_with_exact_probabilities(n, k):
    c = pauli_frame_circuit(n, 1, k)
    th = torch.rand(c.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * 6 - 3
    u = unitary_matrix(c, th).numpy()[:, :k]
    inputs = torch.as_tensor(phase_inputs(c.n_qubits, k))
    from tnpeft.circuits.circuit import probabilities, simulate

    probs = probabilities(simulate(phase_circuit(c), th, inputs)).numpy()
    est = reconstruct_frame(probs, c.n_qubits, k, reference=u)
    np.testing.assert_allclose(est, u, atol=1e-7)
    assert len(probs) == k + k * c.n_qubits + k - 1


def test_an_adapter_with_zero_lambda_is_reported_by_its_frame_errors():
    gm = tnpeft.GraphModule(quantum_peft(12, 8, rank=2), dtype=torch.float64, rng=torch.Generator().manual_seed(5))
    assert torch.count_nonzero(gm.tensor("L")) == 0
    rep = estimate_adapter(gm, "ideal", shots=256, seed=0)
    assert rep.delta_error is None and rep.output_error is None and rep.delta_norm == 0.0
    assert all(e > 0 for e in rep.frame_errors.values())
    text = str(rep)
    assert "0.00 %" not in text and "0.00%" not in text and "ΔW = 0 (Λ = 0)" in text
    assert all(f"{name} {err:.2%}" in text for name, err in rep.frame_errors.items())
    rows = estimate_quantum_parts(gm, Device("ideal", shots=256, seed=0)).report()
    assert rows[0]["delta_error"] is None and rows[0]["delta_norm"] == 0.0 and all(rows[0]["parts"].values())


def test_qwthn_runs_per_token_on_the_device_inside_apply():
    gm = tnpeft.GraphModule(qwthn(16, 16, r=4), dtype=torch.float64, rng=torch.Generator().manual_seed(0))
    x = torch.randn(6, 16, dtype=torch.float64)
    dev = Device("ideal", shots=None)
    est = estimate_quantum_parts(gm, dev)
    assert est.parts == []                        # a QNN reads the data: nothing to measure ahead
    with torch.no_grad(), est.apply():
        y = gm(x)
    assert dev.stats.circuits == 6                # one circuit per token
    torch.testing.assert_close(y, gm(x).detach(), atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def trained_minilm(tmp_path_factory, minilm_dir):
    from tnpeft.train.loop import TrainConfig
    from tnpeft.train.pipeline import run_training

    out = tmp_path_factory.mktemp("qpeft")
    cfg = TrainConfig(max_steps=8, batch_size=8, lr=5e-2, max_length=24, checkpoint_every=0, warmup_steps=0)
    run_training("minilm", "tweets", "quantum_peft", {"rank": 2}, out, target_modules=["query"],
                 train_size=64, test_size=64, config=cfg, progress=False)
    return out / "adapter"


def test_hardware_eval_on_an_ideal_device(trained_minilm, tmp_path, capsys):
    from tnpeft.cli.hardware_eval import hardware_eval

    shots = 1 << 15
    r = hardware_eval(trained_minilm, test_size=64, backend="ideal", shots=shots, max_length=24, seed=1,
                      sweep=[1024], plot=str(tmp_path / "sweep.png"))
    acc = r["exact"]["metrics"]["accuracy"]
    std = r["exact"]["binomial_std"]
    assert std == pytest.approx(np.sqrt(acc * (1 - acc) / 64))
    assert abs(r["device"]["metrics"]["accuracy"] - acc) <= 2 * std          # many shots: within the binomial error
    part = r["device"]["summary"]["part_error"]
    assert 0 < part["median"] < 0.2
    cost = r["device"]["cost"]
    frames = 2 * 6                                                           # U and V of query in 6 layers
    assert cost["circuits"] == frames * (2 + 2 * 9 + 1)                     # K + K·n + K − 1 per 384-row frame
    assert cost["shots"] == cost["circuits"] * shots and cost["qpu_seconds"] > 0
    # the sweep: exact distributions give the exact model; every point is charged its circuits
    assert {(x["curve"], x["shots"]) for x in r["sweep"]} == {("ideal", 1024), ("ideal", None)}
    assert all(x["metrics"]["accuracy"] == acc for x in r["sweep"] if x["shots"] is None)
    assert all(x["cost"]["shots"] == x["cost"]["circuits"] * (x["shots"] or 0) for x in r["sweep"])
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    # what ran on the device is named from the adapter: frames and how they were estimated (a QPA adapter
    # has no frames, and its report does not speak of them)
    from tnpeft.cli.hardware_eval import _parts, format_report

    assert r["quantum_parts"] == ["frame"] and r["frames"] == "hadamard"
    assert "frames (hadamard) on the device" in format_report(r)
    assert _parts({"quantum_parts": ["qpa"], "frames": None}) == "QPA generator circuits on the device"
    # the command line, with exact distributions: the device's accuracy is the exact one
    assert main(["hardware-eval", "--adapter-dir", str(trained_minilm), "--backend", "ideal", "--shots", "0",
                 "--test-size", "32", "--max-length", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"]["metrics"]["accuracy"] == out["exact"]["metrics"]["accuracy"]
    assert out["device"]["summary"]["part_error"]["max"] < 1e-6


def test_cli_train_on_a_device_prints_its_budget_and_counts_what_ran(tmp_path, capsys, minilm_dir):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tnpeft.train.offline_assets import hamlet

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=tok.vocab_size, n_positions=64)
                    ).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text(hamlet()[:2000])
    common = ["train", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "text.txt"), "--adapter", "qpa",
              "r=2", "chunk_size=32", "qnn_layers=1", "--max-length", "16", "--batch-size", "2", "--max-steps", "2",
              "--quantum-backend", "ideal", "--shots", "256", "--out", str(tmp_path / "run"), "--json"]
    assert main(common + ["--dry-run"]) == 0
    budget = json.loads(capsys.readouterr().out)
    assert budget["device"] == "ideal" and budget["shots"] == 256
    assert budget["shots_per_step"] == budget["circuits_per_step"] * 256 and not (tmp_path / "run").exists()
    assert main(common) == 0
    metrics = json.loads(capsys.readouterr().out)
    ran = metrics["quantum_device"]["ran"]
    backward = sum(s["backward"] for s in budget["shapes"])
    assert ran["circuits_by_purpose"]["shift"] == 2 * backward          # two steps, every shift of each
    assert ran["shots"] == ran["circuits"] * 256
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["quantum_device"]["ran"] == ran and np.isfinite(saved["final"]["loss"])
