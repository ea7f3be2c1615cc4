#!/usr/bin/env bash
# Part 6 of the classification study (docs/compare.md#the-rank-sweep): the tensor-network tuners that
# peft also ships — LoHa r=4 (LoRA r=8's parameter count, rank up to 16), LoKr r=8 and VeRA r=256
# (both below LoRA r=1's count) — each beside peft's own implementation of the same configuration,
# at the rank sweep's budget (3 epochs of 8,000 tweets, validation every 125 steps, early stopping,
# patience 3), one seed, each at its method's registered learning rate (LoHa, LoKr 2e-3; VeRA 1e-2).
# tnpeft's LoHa and LoKr start from peft's initial values; its VeRA starts λ_d at 1 (peft: 0.1).
#   bash benchmarks/study/zoo_rows.sh [OUT]          (OUT defaults to runs/zoo_rows; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/zoo_rows
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/zoo_rows}"
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters loha:r=4,alpha=8 lokr:r=8,alpha=8 vera:r=256 peft_vera:r=256 \
             peft_loha:r=4,alpha=8 peft_lokr:r=8,alpha=8 \
  --lr-grid loha=2e-3 peft_loha=2e-3 lokr=2e-3 peft_lokr=2e-3 vera=1e-2 peft_vera=1e-2 \
  --protocol tune-then-seeds --seeds 0 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
