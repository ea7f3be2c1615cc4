"""Tensor diagrams: the layout reads like the papers' figures and is checked geometrically from the
drawing's own coordinates — for a gallery of topologies and for hundreds of generated graphs, no
line crosses a shape it does not end at, no line runs through a text, no two texts overlap — and
SVG output is byte-identical from run to run."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from diagram_checks import problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tnpeft.adapters import mpo, quantum_peft, qwthn
from tnpeft.cli import main
from tnpeft.draw import draw_graph, sharing_diagram, tensor_diagram
from tnpeft.draw.geometry import BUNDLE_GAP
from tnpeft.graph import Dense, Graph, Nonlinear
from tnpeft.runtime import GraphModule
from tnpeft.testing.gallery import GALLERY, SHARING, kronecker, ttlora
from tnpeft.testing.strategies import graphs, networks


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_gallery_diagrams_are_clean(name):
    d = tensor_diagram(GALLERY[name]())
    assert problems(d) == []
    d.figure.clear()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(graphs(), networks()))
def test_generated_graphs_draw_clean(g):
    d = tensor_diagram(g)
    assert problems(d) == [], repr(g)
    # every node, every open leg and every index is drawn
    assert set(g.nodes) <= set(d.shapes)
    ends = {e for s in d.segments for e in s.ends}
    assert {f"in:{i}" for i in g.in_inds} | {f"out:{i}" for i in g.out_inds} <= ends
    assert set(g.size_dict) <= {i for s in d.segments for i in s.inds}
    texts = " | ".join(t.text for t in d.texts)
    assert all(f"{i}={n}" in texts for i, n in g.size_dict.items())
    assert all(n in texts for n in g.nodes)


def test_the_checks_catch_what_they_check():
    from tnpeft.draw.tensor_diagram import Segment, TextBox

    d = tensor_diagram(GALLERY["lora"]())
    a, b = d.shapes["A"], d.shapes["B"]
    d.segments.append(Segment(((a.x - 1, a.y), (b.x + 1, b.y)), ("in:in", "out:out"), ("x",)))
    lab = next(t for t in d.texts if t.text == "r=8")
    d.texts.append(TextBox("clash", "index", lab.box))
    cx = (lab.box[0] + lab.box[2]) / 2
    d.segments.append(Segment(((cx, lab.box[1] - 0.3), (cx, lab.box[3] + 0.3)), ("A", "B"), ("y",)))
    found = problems(d)
    assert any("crosses A" in p for p in found) and any("crosses B" in p for p in found)
    assert any("overlap" in p and "clash" in p for p in found)
    assert any("runs through text 'clash'" in p for p in found)


def centre(d, name):
    return d.shapes[name].x, d.shapes[name].y


def leg(d, index, side):
    return next(s for s in d.segments if f"{side}:{index}" in s.ends)


def test_a_tensor_train_is_one_chain_with_inputs_below_and_outputs_above():
    g = ttlora()
    d = tensor_diagram(g)
    ys = {centre(d, n)[1] for n in g.nodes}
    assert len(ys) == 1
    xs = [centre(d, f"G{t}")[0] for t in range(1, 7)]
    assert xs == sorted(xs)
    y = ys.pop()
    for side, legs, sign in (("in", g.in_inds, -1), ("out", g.out_inds, 1)):
        for i in legs:
            (x0, y0), (x1, y1) = leg(d, i, side).points[0], leg(d, i, side).points[-1]
            assert x0 == pytest.approx(x1)                     # perpendicular to the chain
            assert sign * (max(y0, y1) if sign > 0 else min(y0, y1)) > sign * y


@pytest.mark.parametrize("cores", [2, 3, 4])
def test_an_mpo_is_a_ladder(cores):
    g = mpo(768, 2304, r=16, cores=cores)
    d = tensor_diagram(g)
    down = [centre(d, f"D{t}") for t in range(1, cores + 1)]
    up = [centre(d, f"U{t}") for t in range(1, cores + 1)]
    assert len({y for _, y in down}) == 1 and len({y for _, y in up}) == 1 and up[0][1] > down[0][1]
    for (xd, _), (xu, _) in zip(down, up):   # the rungs j_t are vertical
        assert xd == pytest.approx(xu)


def test_qwthn_reads_bottom_to_top():
    d = tensor_diagram(qwthn(768, 2304, r=8))
    assert centre(d, "D1")[1] < centre(d, "Q")[1] < centre(d, "U1")[1]


def test_parallel_bonds_are_drawn_apart_and_labelled_together():
    g = Graph([Dense("A", ("in", "r", "s"), (6, 2, 3)), Dense("B", ("r", "s", "out"), (2, 3, 5))])
    d = tensor_diagram(g)
    lines = [s for s in d.segments if set(s.ends) == {"A", "B"}]
    assert len(lines) == 2
    (p1, q1), (p2, q2) = lines[0].points[:2], lines[1].points[:2]
    for t in (0.25, 0.5, 0.75):
        x1, y1 = p1[0] + t * (q1[0] - p1[0]), p1[1] + t * (q1[1] - p1[1])
        x2, y2 = p2[0] + t * (q2[0] - p2[0]), p2[1] + t * (q2[1] - p2[1])
        assert math.hypot(x1 - x2, y1 - y2) == pytest.approx(BUNDLE_GAP)
    assert any(t.text == "r=2, s=3" for t in d.texts)


def test_shared_open_legs_and_hyperedges_meet_at_copy_dots():
    d = tensor_diagram(GALLERY["hyperedges"]())
    for ind, ends in (("r", {"A", "B", "C"}), ("out", {"C", "D", "out:out"}), ("i1", {"A", "E", "in:i1"})):
        spokes = [s for s in d.segments if f"dot:{ind}" in s.ends]
        assert {e for s in spokes for e in s.ends} - {f"dot:{ind}"} == ends
    assert not [s for s in d.segments if set(s.ends) == {"C", "D"}]   # no fake bond between them


def test_kronecker_factors_stand_side_by_side():
    d = tensor_diagram(kronecker())
    (xa, ya), (xb, yb) = centre(d, "A"), centre(d, "B")
    assert ya == yb and xb > xa
    assert not [s for s in d.segments if set(s.ends) == {"A", "B"}]


GRAPHS = {
    "lora": GALLERY["lora"], "oft": GALLERY["oft_butterfly"], "qpa": GALLERY["qpa"],
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
        assert node in svg
    assert f"{g.num_parameters():,} trainable parameters" in svg
    for ind, size in g.size_dict.items():
        assert f"{ind}={size}" in svg


def test_svg_is_byte_identical_across_processes(tmp_path):
    code = ("import sys; from tnpeft.draw import draw_graph; from tnpeft.testing.gallery import GALLERY; "
            "[draw_graph(GALLERY[n](), f'{sys.argv[1]}/{n}.svg') for n in ('hyperedges', 'quanta', 'qwthn')]")
    procs = []
    for seed in ("1", "2"):                       # two processes side by side, each with its own hash seed
        (tmp_path / seed).mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(tmp_path / seed)],
                                      env={**os.environ, "PYTHONHASHSEED": seed}))
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for n in ("hyperedges", "quanta", "qwthn"):
        assert (tmp_path / "1" / f"{n}.svg").read_bytes() == (tmp_path / "2" / f"{n}.svg").read_bytes()
    draw_graph(GALLERY["hyperedges"](), tmp_path / "here.svg")
    assert (tmp_path / "here.svg").read_bytes() == (tmp_path / "1" / "hyperedges.svg").read_bytes()


def test_every_gallery_diagram_is_in_the_docs():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "diagrams"
    assert all((folder / f"{name}.svg").exists() for name in GALLERY)


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
    gm = GraphModule(g)
    theta = gm.U.theta.detach().double()
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
    torch.testing.assert_close(gm.tensor("U").detach().double(), u, atol=1e-6, rtol=0)


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


@pytest.mark.parametrize("name", sorted(SHARING))
def test_sharing_diagrams_draw_each_shared_tensor_once_and_join_it_to_every_layer_using_it(name):
    graphs = SHARING[name]()
    d = sharing_diagram(graphs)
    assert problems(d) == []
    keys = {n.share.key for g in graphs.values() for n in g.nodes.values() if n.share is not None}
    assert {s for s in d.shapes if s.startswith("shared:")} == {f"shared:{k}" for k in keys}
    joined = {(s.ends[0][7:], s.ends[1][6:]) for s in d.segments}
    assert joined == {(n.share.key, p) for p, g in graphs.items() for n in g.nodes.values() if n.share is not None}
    assert (Path(__file__).resolve().parents[1] / "docs" / "diagrams" / f"{name}.svg").exists()
    d.figure.clear()
