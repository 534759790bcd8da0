#!/bin/bash
# Session 35: bf16 autocast against fp32 inference at this build (issue 10, item 4), alone, 2 threads.
# DYVM_CKPT: the default demo's DyVM of docs/demo (session 34's run, /work/runs/demo-s34/checkpoints/dyvm/best.pth).
# Usage: bash bf16.sh [OUTDIR] (default: this folder; the files of the build after the change are in after/)
set -e
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
mkdir -p "$out" && cd "$out"
DYVM_CKPT=${DYVM_CKPT:-/work/runs/demo-s34/checkpoints/dyvm/best.pth}
TEACHER=$here/../../../src/dyvm/assets/fashion_mnist_vim_teacher.pth
dyvm bench --what dtype --model vim_tiny --batch-sizes 1 8 --threads 2 --rounds 7 --precision 0 --no-progress \
    --json dtype-vim-tiny.json > dtype-vim-tiny.txt 2>&1
dyvm bench --what dtype --checkpoint $TEACHER $DYVM_CKPT --batch-sizes 1 64 --threads 2 --rounds 7 --precision 0 \
    --no-progress --json dtype-demo-models.json > dtype-demo-models.txt 2>&1
for dt in fp32 bf16; do
  for ck in $TEACHER $DYVM_CKPT; do
    echo "== $ck $dt" >> top1.txt
    dyvm eval --checkpoint $ck --dtype $dt --latency-batch-sizes --batch-size 500 --threads 2 --no-progress \
        >> top1.txt 2>&1
  done
done
