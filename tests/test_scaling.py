"""Work that must grow (near) linearly with the input: the diagram layout and its label placement,
the data loader's label indexing, and ``verify`` on layers too large for a dense check.

Growth is measured by counting Python function calls (deterministic, unlike wall time on a shared
machine): a quadratic step shows as a call count that grows 16× when the input grows 4×."""

from __future__ import annotations

import csv
import sys
import time

import torch
from hypothesis import given
from hypothesis import strategies as st

import tnpeft
from tnpeft import Dense, Graph
from tnpeft.draw.geometry import segment_meets_box
from tnpeft.draw.labels import PAD, Label, Scene, place_labels
from tnpeft.draw.layout import build_layout
from tnpeft.draw.placement import _crossings, _inversions
from tnpeft.params import limits
from tnpeft.runtime import GraphModule
from tnpeft.testing.strategies import networks
from tnpeft.train.datasets import load_classification
from tnpeft.verification import verify
from tnpeft.verification.checks import _dense_block, _flat, _picks


def chain(n: int) -> Graph:
    """A tensor train of ``n`` dense nodes: in → N0 → N1 → … → N(n−1) → out."""
    nodes = []
    for k in range(n):
        a = "in" if k == 0 else f"b{k - 1}"
        b = "out" if k == n - 1 else f"b{k}"
        nodes.append(Dense(f"N{k}", (a, b), (4 if k == 0 else 2, 4 if k == n - 1 else 2)))
    return Graph(nodes, name="chain")


def _measure(text: str, role: str) -> tuple[float, float]:
    return 0.12 * len(text.split("\n")[0]), 0.25


def count_calls(fn) -> int:
    """How many Python function calls (and generator resumptions) ``fn()`` makes."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_diagram_layout_and_labels_grow_linearly_with_a_chain():
    def run(n):
        g = chain(n)
        return count_calls(lambda: place_labels(build_layout(g, _measure), _measure))

    small, large = run(256), run(1024)
    assert large / small < 5, f"4× the nodes took {large / small:.1f}× the calls (quadratic: ~16×)"


@given(st.lists(st.integers(0, 6), max_size=40))
def test_inversions_count_the_pairs_out_of_order(seq):
    brute = sum(1 for i in range(len(seq)) for j in range(i + 1, len(seq)) if seq[i] > seq[j])
    assert _inversions(seq) == brute


@given(st.integers(1, 7), st.integers(1, 7), st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25))
def test_crossings_between_two_layers_match_the_pairwise_count(na, nb, pairs):
    lower, upper = [f"a{i}" for i in range(na)], [f"b{i}" for i in range(nb)]
    nbrs: dict[str, list] = {u: [] for u in lower + upper}
    edges = []
    for i, j in pairs:
        if i < na and j < nb:
            nbrs[lower[i]].append((upper[j], 1.0))
            edges.append((i, j))
    brute = sum(1 for k, (a1, b1) in enumerate(edges) for a2, b2 in edges[k + 1:] if (a1 - a2) * (b1 - b2) < 0)
    assert _crossings([lower, upper], nbrs) == brute


class _Layout:
    def __init__(self, segments, disks):
        self.links = [type("L", (), {"lines": [[p, q]]})() for p, q in segments]
        self.vertices = {f"v{k}": type("V", (), {"x": x, "y": y, "half_w": r, "half_h": r, "is_obstacle": True,
                                                "kind": "dense"})() for k, (x, y, r) in enumerate(disks)}


coord = st.floats(-12, 12, allow_nan=False)


@given(st.lists(st.tuples(st.tuples(coord, coord), st.tuples(coord, coord)), max_size=12),
       st.lists(st.tuples(coord, coord, st.floats(0.05, 1.5)), max_size=8),
       st.lists(st.tuples(coord, coord, st.floats(0.05, 3), st.floats(0.05, 3)), min_size=1, max_size=12))
def test_the_label_grid_answers_as_a_scan_of_everything(segments, disks, boxes):
    """The scene's grid prunes nothing that could touch a box: it answers as a plain scan does."""
    scene = Scene(_Layout(segments, disks))
    placed = []
    for x, y, w, h in boxes:
        box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        x0, y0, x1, y1 = box[0] - PAD, box[1] - PAD, box[2] + PAD, box[3] + PAD
        want = not any(x0 < a[2] and a[0] < x1 and y0 < a[3] and a[1] < y1 for a in placed)
        for cx, cy, r in disks:
            dx, dy = max(x0 - cx, 0.0, cx - x1), max(y0 - cy, 0.0, cy - y1)
            want = want and (dx * dx + dy * dy) ** 0.5 >= r
        want = want and not any(segment_meets_box(p, q, (x0, y0, x1, y1)) for p, q in segments)
        assert scene.free(box) == want
        if want:
            scene.add(Label("t", "index", x, y, w, h))
            placed.append(box)


# ------------------------------------------------------------------ verify above the dense-check budget
def test_verify_of_a_huge_layer_samples_instead_of_building_the_dense_update(monkeypatch):
    """65,537 × 65,537 (ΔW of 34 GB in float64): the forward is checked on a sampled block, the
    merge is skipped, and the report says so — ``dense()`` is never called."""

    def no_dense(self, scaled=False):
        raise AssertionError(f"dense() of a {self.graph.out_features} × {self.graph.in_features} update")

    monkeypatch.setattr(GraphModule, "dense", no_dense)
    report = verify(tnpeft.adapters.quantum_peft(65537, 65537, rank=1))
    assert report.ok, str(report)
    fwd = [c for c in report.checks if c.name == "forward_vs_dense"]
    assert fwd and all(c.passed and "sampled" in c.quantity for c in fwd)
    merge = [c for c in report.checks if c.name == "merge_roundtrip"]
    assert merge and all(c.skipped and "MAX_DENSE_CHECK_ELEMENTS" in c.message for c in merge)
    assert "sampled 64×64 block" in str(report) and "the merge is not checked" in str(report)


@given(networks(max_leg=9))
def test_a_sampled_block_of_the_update_is_that_block_of_the_dense_update(g):

    m = GraphModule(g, dtype=torch.float64, rng=torch.Generator().manual_seed(0))
    picks = _picks(g, torch.Generator().manual_seed(1), target=4)
    rows, cols = _flat(g.out_inds, g.size_dict, picks), _flat(g.in_inds, g.size_dict, picks)
    with torch.no_grad():
        want = m.dense(scaled=True)[rows][:, cols]
        got = _dense_block(g, m, picks)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_above_the_budget_a_wrong_forward_is_still_caught(monkeypatch):

    monkeypatch.setattr(limits, "MAX_DENSE_CHECK_ELEMENTS", 100)
    g = tnpeft.adapters.mpo(48, 40, r=4)
    assert verify(g).ok
    real = GraphModule.forward
    monkeypatch.setattr(GraphModule, "forward", lambda self, x: real(self, x) * 1.01)
    bad = [c for c in verify(g).failures if c.name == "forward_vs_dense"]
    assert bad and "sampled" in bad[0].quantity


# ------------------------------------------------------------------ the data loader's labels
def test_forty_thousand_distinct_labels_index_in_well_under_a_second_each_thousand(tmp_path):
    """Label indexing is one dictionary look-up per row (a list search per row took 36 s here)."""
    n = 40_000
    path = tmp_path / "many.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([f"text {i}", f"L{i:05d}"] for i in range(n))
    t0 = time.perf_counter()
    tr, te = load_classification(str(path), test_size=100)
    took = time.perf_counter() - t0
    assert len(tr.label_names) == n
    for data in (tr, te):    # each text keeps its own label
        assert all(data.label_names[y] == f"L{int(t.split()[1]):05d}" for t, y in zip(data.texts, data.labels))
    assert took < 8, f"{n:,} labels took {took:.1f} s"


def test_labels_that_look_like_numbers_sort_numerically_and_odd_ones_do_not_crash(tmp_path):
    path = tmp_path / "odd.csv"
    odd = ["10", "2", "-3", "--5", "²", "x", "9" * 5000]
    path.write_text("text,label\n" + "".join(f"t{i},{y}\n" for i, y in enumerate(odd * 3)))
    tr, _ = load_classification(str(path), test_size=2)
    assert tr.label_names[:3] == ["-3", "2", "10"]
    assert set(tr.label_names) == set(odd)
