#!/usr/bin/env bash
# Part 7 of the classification study (docs/compare.md#the-rank-sweep): seeds 1 and 2 for the rows
# that converged at 3 epochs (LoRA r=8, Quantum-PEFT rank 64, LoRA r=1, VeRA r=256, MPO r=8, then
# tnpeft's LoHa r=4 and LoKr r=8), each at the rate already selected for it (parts 1, 3, 5 and 6), so that
# their test figures become a mean ± std over 3 seeds. Seed 0 of every row is read from the records
# of its part in docs/study (copied into OUT first; nothing is trained again for it), and this part's
# own records in docs/study/seeds are copied back too, so the script resumes from the repository.
#   bash benchmarks/study/seeds.sh [OUT]          (OUT defaults to runs/seeds; resumable)
#   python benchmarks/study/keep_records.py OUT docs/study/seeds \
#       --except docs/study/rank_sweep docs/study/small_rows docs/study/zoo_rows   (only this part's cells)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/seeds}"
mkdir -p "$OUT/cells"
for part in rank_sweep small_rows zoo_rows seeds; do
  if [ -d "docs/study/$part/cells" ]; then cp -rn "docs/study/$part/cells/." "$OUT/cells/"; fi
done
exec .venv/bin/tnpeft compare --model minilm --data tweets \
  --adapters lora:r=8,alpha=16 quantum_peft:rank=64,layers=1 lora:r=1,alpha=2 vera:r=256 mpo:r=8 \
             loha:r=4,alpha=8 lokr:r=8,alpha=8 \
  --lr-grid lora=2e-3 quantum_peft=2e-2 vera=1e-2 mpo=6e-3 loha=2e-3 lokr=2e-3 \
  --protocol tune-then-seeds --seeds 0 1 2 --epochs 3 --eval-every 125 --patience 3 \
  --train-size 8000 --val-size 2000 --test-size 2000 --out "$OUT"
