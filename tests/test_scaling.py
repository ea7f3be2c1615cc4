"""Work that must grow (near) linearly with the input: the diagram layout and its label placement,
the data loader's label indexing, and ``verify`` on layers too large for a dense check.

Growth is measured by counting Python function calls (deterministic, unlike wall time on a shared
machine): a quadratic step shows as a call count that grows 16× when the input grows 4×."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from tnpeft import Dense, Graph
from tnpeft.draw.geometry import segment_meets_box
from tnpeft.draw.labels import PAD, Label, Scene
from tnpeft.draw.layout import build_layout
from tnpeft.draw.placement import _crossings, _inversions


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
    from tnpeft.draw.labels import place_labels

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
