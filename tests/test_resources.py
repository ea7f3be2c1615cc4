"""The circuit resource report: per circuit, per module and in total; raw, decomposed into CX
(under the closed form for Pauli frames) and transpiled to a backend; on a built adapter, a model
and a saved adapter folder; from the command line, as a table and as JSON."""

import json

import torch

import tnpeft
from tnpeft.adapters import qpa, quantum_peft, qwthn
from tnpeft.cli import main
from tnpeft.quantum.resources import pauli_two_qubit_bound, resource_report

WIDTHS = [384, 768, 1000, 2304, 3072, 4096, 11008]


def test_report_prints_model_widths_under_the_closed_form(capsys):
    graphs = {f"w{n}": quantum_peft(n, 64, rank=8) for n in WIDTHS}
    r = resource_report(graphs, backend=None)
    rows = {c.module: c for c in r.circuits if c.node == "V"}
    for n in WIDTHS:
        c = rows[f"w{n}"]
        assert c.method == "pauli" and c.bound == pauli_two_qubit_bound(n, 1, 8) and c.cx <= c.bound
        assert c.qubits == (n - 1).bit_length()
    assert r.backend is None and all(c.backend_two_qubit is None for c in r.circuits)
    t = r.totals()
    assert t["circuits"] == 2 * len(WIDTHS) and t["cx"] == sum(c.cx for c in r.circuits)
    assert t["max_qubits"] == 14
    print(r)
    out = capsys.readouterr().out
    assert "w11008:V" in out and "total:" in out


def test_report_on_a_backend_and_across_sources(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 20), torch.nn.ReLU(), torch.nn.Linear(20, 12))
    model = tnpeft.inject(model, tnpeft.AdapterConfig("quantum_peft", ["0", "2"], rank=3))
    r = resource_report(model)                       # the default: a generic heavy-hex backend
    assert r.backend.startswith("generic_backend")
    assert [c.name for c in r.circuits] == ["0:V", "0:U", "2:V", "2:U"]
    assert all(c.backend_two_qubit >= c.cx >= 0 for c in r.circuits)   # routing only adds gates
    assert set(r.by_module()) == {"0", "2"}
    tnpeft.save_adapter(model, tmp_path / "a")
    again = resource_report(tmp_path / "a")
    assert [(c.name, c.cx, c.backend_two_qubit) for c in again.circuits] == [
        (c.name, c.cx, c.backend_two_qubit) for c in r.circuits]
    mixed = resource_report({"qw": qwthn(16, 16, r=4), "qpa": qpa(16, 16, r=2, chunk_size=4),
                             "big": quantum_peft(300, 8, rank=2, param="cayley")}, backend=None)
    kinds = {c.name: c.kind for c in mixed.circuits}
    assert kinds["qw:Q"] == "qnn" and kinds["qpa:G"] == "qpa" and kinds["big:U"] == "unitary"
    assert [s["name"] for s in mixed.skipped] == ["big:V"]          # 9 qubits: not synthesized


def test_cli_circuits_table_and_json(tmp_path, capsys):
    assert main(["circuits", "quantum_peft", "--in-features", "768", "--out-features", "384", "rank=8",
                 "--backend", "none"]) == 0
    out = capsys.readouterr().out
    assert "pauli" in out and "total: 2 circuits, up to 10 qubits" in out
    model = tnpeft.inject(torch.nn.Sequential(torch.nn.Linear(24, 10)), tnpeft.AdapterConfig("quantum_peft", ["0"],
                                                                                            rank=2))
    tnpeft.save_adapter(model, tmp_path / "a")
    assert main(["circuits", "--adapter-dir", str(tmp_path / "a"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in d["circuits"]] == ["0:V", "0:U"] and d["totals"]["circuits"] == 2
    assert d["circuits"][0]["bound"] == pauli_two_qubit_bound(24, 1, 2)
