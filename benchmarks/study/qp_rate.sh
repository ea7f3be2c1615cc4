#!/usr/bin/env bash
# Part 3 of the classification study (docs/compare.md#the-rank-sweep): Quantum-PEFT rank 64 (L = 1), the
# best of the rank sweep, with its learning rate tuned on validation (6.7e-3, 2e-2, 6e-2) at the rank
# sweep's budget: 3 epochs of 8,000 tweets, validation every 125 steps, early stopping (patience 3),
# one seed. The 2e-2 cell is the rank sweep's: copy it in first to reuse it.
#   mkdir -p runs/qp_rate/cells && cp -r docs/study/rank_sweep/cells/quantum_peft_rank=64,layers=1-* runs/qp_rate/cells/
#   bash benchmarks/study/qp_rate.sh [OUT]          (OUT defaults to runs/qp_rate; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/qp_rate
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/qp_rate}"
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters quantum_peft:rank=64,layers=1 \
  --lr-grid quantum_peft=6.7e-3,2e-2,6e-2 \
  --protocol tune-then-seeds --seeds 0 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
