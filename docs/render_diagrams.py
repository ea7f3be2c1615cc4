"""Render the tensor diagrams the docs show (SVG, checked in under docs/diagrams/): the gallery of
tnpeft.testing.gallery, the circuit view and the floors of the package.

    .venv/bin/python docs/render_diagrams.py          # SVG into docs/diagrams/
    .venv/bin/python docs/render_diagrams.py --png DIR # also PNG copies into DIR (to look at)
"""

import sys
from pathlib import Path

import torch

from tnpeft.adapters import quantum_peft
from tnpeft.draw import draw_circuit, tensor_diagram
from tnpeft.testing.gallery import GALLERY

OUT = Path(__file__).parent / "diagrams"


FLOORS = [  # top to bottom, as tests/test_architecture.py checks them
    ("cli · tnpeft", "the command (verbs, tables, the demo), the public names"),
    ("train", "loop, checkpoints, data, curves, compare; calls method hooks"),
    ("nn", "TNLinear, inject, merge, save/load into models, peft interop"),
    (("draw", "quantum", "verification", "testing"), "interpreters of a graph, side by side"),
    ("adapters", "method registry + one builder per method"),
    (("storage", "algebra"), "graph and adapter folders, sources · cuts, sums, compression"),
    ("runtime", "GraphModule: a graph's values, its forward, merge arithmetic"),
    ("graph", "the definition: nodes, Graph (a value), schedule, hyper-network specs"),
    ("contract", "networks → cotengra plans → torch calls"),
    ("params", "dense, diagonal, unitary frames, QNN maps, hyper-networks"),
    ("circuits", "circuits as data: simulator, frame descriptions and kernels"),
    (("caches", "fileio"), "bounded process-wide caches · atomic writes, safe reads"),
    ("errors", "one exception hierarchy"),
]


def draw_floors(path: Path) -> None:
    """The floors of the package as stacked boxes; imports only go down."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(9.6, 0.5 * len(FLOORS) + 0.5))
    ax.axis("off")
    h, gap = 0.42, 0.1
    for i, (name, what) in enumerate(FLOORS):
        y = (len(FLOORS) - 1 - i) * (h + gap)
        names = name if isinstance(name, tuple) else (name,)
        w = 4.0 / len(names)
        for j, n in enumerate(names):
            x = j * w
            ax.add_patch(FancyBboxPatch((x + 0.03, y), w - 0.06, h, boxstyle="round,pad=0.01,rounding_size=0.05",
                                        facecolor="#DCE6F2" if len(names) == 1 else "#F4E1D2", edgecolor="#4C72B0",
                                        lw=1.2))
            ax.text(x + w / 2, y + h / 2, n, ha="center", va="center", fontsize=9.5 if len(names) == 1 else 8.5,
                    fontweight="bold")
        ax.text(4.15, y + h / 2, what, ha="left", va="center", fontsize=9, color="#333333")
    top = (len(FLOORS) - 1) * (h + gap) + h
    ax.annotate("", xy=(-0.18, 0.0), xytext=(-0.18, top), arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 1.4})
    ax.text(-0.27, top / 2, "imports go down", rotation=90, ha="center", va="center", fontsize=9, color="#555555")
    ax.set_xlim(-0.4, 9.4)
    ax.set_ylim(-0.1, top + 0.1)
    fig.tight_layout()
    plt.rcParams["svg.hashsalt"] = "tnpeft"
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None, dpi=150)
    plt.close(fig)


def main() -> None:
    png = Path(sys.argv[sys.argv.index("--png") + 1]) if "--png" in sys.argv else None
    torch.manual_seed(0)
    for name, make in GALLERY.items():
        diagram = tensor_diagram(make())
        diagram.save(OUT / f"{name}.svg")
        if png is not None:
            diagram.save(png / f"{name}.png", dpi=110)
        print(f"wrote {OUT / name}.svg")
    draw_circuit(quantum_peft(64, 64, rank=8, layers=1), "U", OUT / "quantum_peft_circuit.svg")
    print(f"wrote {OUT / 'quantum_peft_circuit'}.svg")
    draw_circuit(quantum_peft(768, 768, rank=8, layers=1), "V", OUT / "quantum_peft_768_circuit.svg")
    print(f"wrote {OUT / 'quantum_peft_768_circuit'}.svg")
    draw_floors(OUT.parent / "images" / "floors.svg")
    print(f"wrote {OUT.parent / 'images' / 'floors.svg'}")


if __name__ == "__main__":
    main()
