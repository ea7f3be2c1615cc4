#!/usr/bin/env bash
# QPA's own setting (docs/compare.md#qpa-on-a-causal-lms-lm_head): the lm_head of a causal LM, QPA
# generating a rank-4 LoRA against that LoRA trained directly, judged by held-out perplexity.
# SmolLM2-135M (576 → 49,152 head, tied to the input embeddings: the adapters leave the shared weight
# untouched) on Hamlet in blocks of 64 tokens, 60 validation and 60 test blocks from the end of the
# text (825 blocks in all), 3 epochs of the other 705 in batches of 8 (267 steps), validation every 45
# steps, early stopping (patience 3), each method's rate chosen on validation (seed 0) from a grid
# (LoRA 6.7e-4 … 1.8e-2, QPA 2e-3 … 1.8e-2), then seeds 1 and 2 at that rate. LoRA at scale 2
# (alpha = 2r), the scale of QPA's reference preset.
# Resumable: run it again with the same OUT and it continues from the finished cells.
#   bash benchmarks/study/lm_head.sh [OUT]          (OUT defaults to runs/lm_head)
#   python benchmarks/study/keep_records.py OUT docs/study/lm_head
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/lm_head}"
exec .venv/bin/tnpeft compare --model smollm2 --data hamlet --target-modules lm_head \
  --adapters lora:r=4,alpha=8 qpa:r=4 qpa:r=4,preset=reference \
  --lr-grid lora=6.7e-4,2e-3,6e-3,1.8e-2 qpa=2e-3,6e-3,1.8e-2 \
  --protocol tune-then-seeds --seeds 0 1 2 --epochs 3 --eval-every 45 --patience 3 \
  --max-length 64 --batch-size 8 --val-size 60 --test-size 60 --out "$OUT"
