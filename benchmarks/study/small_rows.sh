#!/usr/bin/env bash
# Part 5 of the classification study (docs/compare.md#the-rank-sweep): the two small classical rows
# that chose the top of their grid in the 150-step study — LoRA r=1 and MPO r=8 — at the rank
# sweep's budget (3 epochs of 8,000 tweets, validation every 125 steps, early stopping, patience 3),
# each rate chosen on validation from a grid that extends past the old top (2e-3, 6e-3, 1.8e-2;
# LoRA r=1 chose 2e-3, the grid's bottom, so 6e-4 was added below it), one seed.
#   bash benchmarks/study/small_rows.sh [OUT]          (OUT defaults to runs/small_rows; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/small_rows
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/small_rows}"
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters lora:r=1,alpha=2 mpo:r=8 \
  --lr-grid lora=6e-4,2e-3,6e-3,1.8e-2 mpo=2e-3,6e-3,1.8e-2 \
  --protocol tune-then-seeds --seeds 0 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
