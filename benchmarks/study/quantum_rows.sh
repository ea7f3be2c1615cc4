#!/usr/bin/env bash
# Part 8 of the classification study (docs/compare.md#the-rank-sweep): the quantum adapters the rank
# sweep had not trained to its budget — QWTHN r=8, QPA (tnpeft preset) and Quantum-PEFT with two
# layers of frames (L = 2, rank 64, the best rank at L = 1) — at 3 epochs of 8,000 tweets, validation
# every 125 steps, early stopping with patience 3, seeds 0, 1 and 2 (seed 0 first ran alone; the
# script resumes with seeds 1 and 2), each at the rate it was selected at in the 150-step study
# (QWTHN, QPA 2e-3; Quantum-PEFT 2e-2, part 3). This part's records in
# docs/study/quantum_rows are copied into OUT first, so the script resumes from the repository.
#   bash benchmarks/study/quantum_rows.sh [OUT]          (OUT defaults to runs/quantum_rows; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/quantum_rows
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/quantum_rows}"
mkdir -p "$OUT/cells"
if [ -d docs/study/quantum_rows/cells ]; then cp -rn docs/study/quantum_rows/cells/. "$OUT/cells/"; fi
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters qwthn:r=8 'qpa:preset=tnpeft,r=4,chunk_size=32,hidden=[16,16],qnn_layers=4' \
             quantum_peft:rank=64,layers=2 \
  --lr-grid qwthn=2e-3 qpa=2e-3 quantum_peft=2e-2 \
  --protocol tune-then-seeds --seeds 0 1 2 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
