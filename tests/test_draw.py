"""Tensor diagrams: every built-in adapter renders, with its node names, index labels and count;
SVG output is deterministic."""

import pytest

from tnpeft.adapters import adalora, lora, oft, quantum_peft
from tnpeft.cli import main
from tnpeft.draw import draw_graph
from tnpeft.graph import Dense, Graph, Nonlinear

GRAPHS = {
    "lora": lambda: lora(768, 768, r=8),
    "adalora": lambda: adalora(768, 768, r=12, target_r=8),
    "quantum_peft": lambda: quantum_peft(768, 768, rank=8),
    "oft": lambda: oft(768, 768, block_size=32, butterfly=True),
    "two_stage": lambda: Graph([Dense("A", ("r", "in"), (4, 16)),
                                Nonlinear.elementwise("f", {"r": 4}, ("s",), fn="tanh"),
                                Dense("B", ("out", "s"), (8, 4))], name="two_stage"),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_renders_svg_and_png(tmp_path, name):
    g = GRAPHS[name]()
    draw_graph(g, tmp_path / "d.svg")
    draw_graph(g, tmp_path / "d.png")
    svg = (tmp_path / "d.svg").read_text()
    png = (tmp_path / "d.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for node in g.nodes:
        assert f">{node}<" in svg or node in svg
    assert f"{g.num_parameters():,} trainable parameters" in svg
    for ind, size in g.size_dict.items():
        assert f"{ind}={size}" in svg


def test_svg_is_deterministic(tmp_path):
    g = quantum_peft(64, 64, rank=4)
    draw_graph(g, tmp_path / "a.svg")
    draw_graph(g, tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_cli_draw(tmp_path, capsys):
    out = tmp_path / "q.svg"
    assert main(["draw", "quantum_peft", "--in-features", "64", "--out-features", "32", "rank=4", "-o", str(out)]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert main(["draw", "lora", "--in-features", "8", "--out-features", "8", "-o", str(tmp_path / "x.txt")]) == 2


@pytest.mark.parametrize("n_qubits,layers", [(1, 1), (2, 1), (5, 2), (6, 3)])
def test_circuit_moments_use_every_angle_once_in_order(n_qubits, layers):
    from tnpeft.draw import circuit_moments
    from tnpeft.params.unitary import circuit_angle_count

    idx = [g[2] for col in circuit_moments(n_qubits, layers) for g in col if g[0] == "ry"]
    assert idx == list(range(circuit_angle_count(n_qubits, layers)))
    for col in circuit_moments(n_qubits, layers):  # gates in one moment act on distinct qubits
        wires = [w for g in col for w in ((g[1],) if g[0] == "ry" else g[1:])]
        assert len(wires) == len(set(wires))


def test_circuit_moments_reproduce_the_frame():
    import math

    import torch

    from tnpeft.draw import circuit_moments

    g = quantum_peft(16, 16, rank=16, layers=2)
    theta = g.module.U.theta.detach().double()
    u = torch.eye(16, dtype=torch.float64)
    for col in circuit_moments(4, 2):
        for gate in col:
            if gate[0] == "ry":
                _, q, a = gate
                c, s = math.cos(theta[a] / 2), math.sin(theta[a] / 2)
                m = torch.eye(16, dtype=torch.float64)
                for i in range(16):
                    if not (i >> q) & 1:
                        j = i | (1 << q)
                        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
                u = m @ u
            else:
                _, a, b = gate
                d = torch.tensor([-1.0 if (i >> a) & 1 and (i >> b) & 1 else 1.0 for i in range(16)], dtype=torch.float64)
                u = torch.diag(d) @ u
    torch.testing.assert_close(g.tensor("U").detach().double(), u, atol=1e-6, rtol=0)


def test_circuit_view(tmp_path):
    from tnpeft.draw import draw_circuit
    from tnpeft.errors import GraphError

    g = quantum_peft(96, 64, rank=4, layers=2)
    draw_circuit(g, "V", tmp_path / "v.svg")
    svg = (tmp_path / "v.svg").read_text()
    assert "cosine–sine split" in svg and "RY" in svg
    with pytest.raises(GraphError, match="param 'pauli'"):
        draw_circuit(quantum_peft(8, 8, rank=2, param="cayley"), "U")
    assert main(["draw", "quantum_peft", "--in-features", "16", "--out-features", "16", "rank=2", "--circuit", "U",
                 "-o", str(tmp_path / "c.png")]) == 0
