#!/usr/bin/env bash
# Part 11 of the classification study (docs/compare.md#the-rank-sweep): seeds 1 and 2 of LoKr r=8 at
# 6e-3 and of VeRA r=256 at 3e-2, the rates part 10's grids chose on validation (their registered
# 2e-3 and 1e-2 have three seeds from parts 6 and 7), at the rank sweep's budget (3 epochs of 8,000
# tweets, validation every 125 steps, early stopping, patience 3). Seed 0 is read from part 10's
# records (copied into OUT first; nothing is trained again for it), and this part's own records in
# docs/study/tuned_seeds are copied back too, so the script resumes from the repository.
#   bash benchmarks/study/tuned_seeds.sh [OUT]        (OUT defaults to runs/tuned_seeds; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/tuned_seeds --except docs/study/zoo_rates
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/tuned_seeds}"
mkdir -p "$OUT/cells"
for part in zoo_rates tuned_seeds; do
  if [ -d "docs/study/$part/cells" ]; then cp -rn "docs/study/$part/cells/." "$OUT/cells/"; fi
done
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters lokr:r=8,alpha=8 vera:r=256 \
  --lr-grid lokr=6e-3 vera=3e-2 \
  --protocol tune-then-seeds --seeds 0 1 2 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
