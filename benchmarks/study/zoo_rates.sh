#!/usr/bin/env bash
# Part 10 of the classification study (docs/compare.md#the-rank-sweep): rate grids for tnpeft's LoHa
# r=4, LoKr r=8 and VeRA r=256, which parts 6 and 7 ran at their methods' registered rates only
# (LoHa, LoKr 2e-3; VeRA 1e-2). One rate a factor of about 3 below and one above each (and a second
# above for LoKr and VeRA, which chose the top of the first grid), at the rank sweep's budget (3 epochs of
# 8,000 tweets, validation every 125 steps, early stopping, patience 3), seed 0, the rate chosen on
# validation. The registered rate's seed-0 cell is read from part 6's
# records (copied into OUT first; nothing is trained again for it), and this part's own records in
# docs/study/zoo_rates are copied back too, so the script resumes from the repository.
#   bash benchmarks/study/zoo_rates.sh [OUT]          (OUT defaults to runs/zoo_rates; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/zoo_rates --except docs/study/zoo_rows
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/zoo_rates}"
mkdir -p "$OUT/cells"
for part in zoo_rows zoo_rates; do
  if [ -d "docs/study/$part/cells" ]; then cp -rn "docs/study/$part/cells/." "$OUT/cells/"; fi
done
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters loha:r=4,alpha=8 lokr:r=8,alpha=8 vera:r=256 \
  --lr-grid loha=6e-4,2e-3,6e-3 lokr=6e-4,2e-3,6e-3,1.8e-2 vera=3e-3,1e-2,3e-2,9e-2 \
  --protocol tune-then-seeds --seeds 0 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
