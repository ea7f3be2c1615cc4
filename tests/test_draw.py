"""Tensor diagrams: every built-in adapter renders, with its node names, index labels and count;
SVG output is deterministic."""

import pytest

from tnpeft.adapters import adalora, lora, oft, quantum_peft
from tnpeft.cli import main
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
    g.draw(tmp_path / "d.svg")
    g.draw(tmp_path / "d.png")
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
    g.draw(tmp_path / "a.svg")
    g.draw(tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_cli_draw(tmp_path, capsys):
    out = tmp_path / "q.svg"
    assert main(["draw", "quantum_peft", "--in-features", "64", "--out-features", "32", "rank=4", "-o", str(out)]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert main(["draw", "lora", "--in-features", "8", "--out-features", "8", "-o", str(tmp_path / "x.txt")]) == 2
