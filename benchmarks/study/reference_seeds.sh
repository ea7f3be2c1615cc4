#!/usr/bin/env bash
# Part 9 of the classification study (docs/compare.md#the-rank-sweep): seeds 1 and 2 for the rows
# that part 1 (Quantum-PEFT ranks 8, 32 and 128) and part 6 (peft's own VeRA, LoHa and LoKr, the
# reference rows) ran with one seed, each at the rate those parts ran it at, so that every row of the
# converged table is a mean ± std over 3 seeds. Seed 0 of every row is read from the records of its
# part in docs/study (copied into OUT first; nothing is trained again for it), and this part's own
# records in docs/study/reference_seeds are copied back too, so the script resumes from the repository.
#   bash benchmarks/study/reference_seeds.sh [OUT]     (OUT defaults to runs/reference_seeds; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/reference_seeds \
#       --except docs/study/rank_sweep docs/study/zoo_rows    (only this part's cells)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/reference_seeds}"
mkdir -p "$OUT/cells"
for part in rank_sweep zoo_rows reference_seeds; do
  if [ -d "docs/study/$part/cells" ]; then cp -rn "docs/study/$part/cells/." "$OUT/cells/"; fi
done
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters quantum_peft:rank=8,layers=1 quantum_peft:rank=32,layers=1 quantum_peft:rank=128,layers=1 \
             peft_vera:r=256 peft_loha:r=4,alpha=8 peft_lokr:r=8,alpha=8 \
  --lr-grid quantum_peft=2e-2 peft_vera=1e-2 peft_loha=2e-3 peft_lokr=2e-3 \
  --protocol tune-then-seeds --seeds 0 1 2 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
