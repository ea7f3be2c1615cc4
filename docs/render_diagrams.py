"""Render the tensor diagrams the docs show (checked in under docs/diagrams/).

    .venv/bin/python docs/render_diagrams.py
"""

from pathlib import Path

import torch

from tnpeft.adapters import adalora, lora, mpo, oft, qpa, quantum_peft, qwthn
from tnpeft.draw import draw_circuit

OUT = Path(__file__).parent / "diagrams"

DIAGRAMS = {
    "lora": lambda: lora(768, 768, r=8),
    "adalora": lambda: adalora(768, 768, r=12, target_r=8),
    "quantum_peft": lambda: quantum_peft(768, 768, rank=8),
    "oft": lambda: oft(768, 768, block_size=32),
    "oft_butterfly": lambda: oft(768, 768, block_size=32, butterfly=True),
    "qpa": lambda: qpa(768, 50257, r=4, chunk_size=2048),
    "qwthn": lambda: qwthn(768, 2304, r=8),
    "mpo": lambda: mpo(768, 2304, r=8),
}


def main() -> None:
    torch.manual_seed(0)
    for name, make in DIAGRAMS.items():
        make().draw(OUT / f"{name}.svg")
        print(f"wrote {OUT / name}.svg")
    draw_circuit(quantum_peft(64, 64, rank=8, layers=1), "U", OUT / "quantum_peft_circuit.svg")
    print(f"wrote {OUT / 'quantum_peft_circuit'}.svg")


if __name__ == "__main__":
    main()
