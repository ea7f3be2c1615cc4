#!/usr/bin/env bash
# Part 12 of the classification study (docs/compare.md#the-rank-sweep): Quantum-PEFT with a second
# layer of frames (L = 2) at ranks 128, 8 and 32 — part 8 ran L = 2 at rank 64 only, parts 1 and 9
# every rank at L = 1 — at the rank sweep's budget (3 epochs of 8,000 tweets, validation every 125
# steps, early stopping, patience 3), three seeds, at the rate L = 1 and rank 64's L = 2 ran at
# (2e-2; a one-point grid). This part's records in docs/study/qp_layers are copied into OUT first,
# so the script resumes from the repository.
#   bash benchmarks/study/qp_layers.sh [OUT]          (OUT defaults to runs/qp_layers; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/qp_layers
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/qp_layers}"
mkdir -p "$OUT/cells"
if [ -d docs/study/qp_layers/cells ]; then cp -rn docs/study/qp_layers/cells/. "$OUT/cells/"; fi
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters quantum_peft:rank=128,layers=2 quantum_peft:rank=8,layers=2 quantum_peft:rank=32,layers=2 \
  --lr-grid quantum_peft=2e-2 \
  --protocol tune-then-seeds --seeds 0 1 2 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
