#!/usr/bin/env bash
# The per-model table of bench/scale.py on a GPU machine, as one prepared run (about 10 minutes on one
# H100: one epoch per model on a fifth of ML-25M, test on a seeded 10,000-user sample; the data is
# generated on the machine). Writes docs/scaling-gpu.md; its CPU twin is docs/scaling-fifth.md.
#   bash bench/gpu.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
folder="${1:-${TMPDIR:-/tmp}/recsys-gpu-fifth}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'"
exec python bench/scale.py --ratings 5000000 --users 32500 --items 25000 --folder "$folder" \
  --models popularity,mf,ncf,fm,wide_deep,dcn,dcnv2,autoint,sasrec,gru4rec,itemknn,als \
  --no-references --accelerator gpu --precision bf16-mixed --threads 4 --implicit-threads 16 \
  --epochs 1 --sequence-epochs 1 --doc docs/scaling-gpu.md
