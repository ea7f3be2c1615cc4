#!/usr/bin/env bash
# QWTHN's own setting (docs/compare.md#qwthn-on-a-causal-lms-attention): causal-LM fine-tuning of the
# attention projections, QWTHN against LoRA at about equal parameters (r=2) and at about 4x (r=8, the
# same rank: the paper's "76 % fewer parameters"), judged by training loss and held-out perplexity over
# the same steps, beside the plain MPO of QWTHN's size (its tensor train without the QNN).
# SmolLM2-135M, q_proj and v_proj of its 30 layers (576 -> 576 and 576 -> 192), Hamlet in blocks of 64
# tokens, 60 validation and 60 test blocks from the end of the text, 3 epochs of the other 705 in
# batches of 8 (267 steps), validation every 45 steps, no early stopping (every row runs every step),
# one seed, every method at 2e-3 (the registered rate of LoRA and QWTHN), every adapter at scale 2
# (alpha = 2r).
# Resumable: run it again with the same OUT and it continues from the finished cells.
#   bash benchmarks/study/qwthn_causal.sh [OUT]          (OUT defaults to runs/qwthn_causal)
#   python benchmarks/study/keep_records.py OUT docs/study/qwthn_causal
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/qwthn_causal}"
exec .venv/bin/tnpeft compare --model smollm2 --data hamlet --target-modules q_proj,v_proj \
  --adapters qwthn:r=8,alpha=16 lora:r=2,alpha=4 lora:r=8,alpha=16 mpo:r=8,alpha=16 \
  --lr-grid lora=2e-3 qwthn=2e-3 mpo=2e-3 \
  --protocol tune-then-seeds --seeds 0 --epochs 3 --eval-every 45 \
  --max-length 64 --batch-size 8 --val-size 60 --test-size 60 --out "$OUT"
