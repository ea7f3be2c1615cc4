#!/usr/bin/env bash
# The Quantum-PEFT rank sweep of the classification study (docs/compare.md#the-rank-sweep), part 1:
# ranks 8, 32, 64, 128 (L = 1) beside LoRA r=8, one seed, each at its method's registered learning rate,
# 3 epochs of 8,000 tweets with validation every 125 steps and early stopping (patience 3).
# Resumable: run it again with the same --out and it continues from the finished cells.
#   bash benchmarks/study/rank_sweep.sh [OUT]          (OUT defaults to runs/rank_sweep)
# Then keep the cells' JSON records (not the weights) in the repository:
#   python benchmarks/study/keep_records.py OUT docs/study/rank_sweep
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/rank_sweep}"
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters lora:r=8,alpha=16 quantum_peft:rank=8,layers=1 quantum_peft:rank=32,layers=1 \
             quantum_peft:rank=64,layers=1 quantum_peft:rank=128,layers=1 \
  --lr-grid lora=2e-3 quantum_peft=2e-2 \
  --protocol tune-then-seeds --seeds 0 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
