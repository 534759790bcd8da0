#!/usr/bin/env bash
# Session 32 (2026-12-05): the lanes scan's exp2 of degree 5, softplus and silu in 16-lane vectors (AVX-512),
# against 5dbffe3 (the session's start, /work/base), alone on the 2-core AMD AVX-512 machine. Run from the
# repository root with the venv active.
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
OUT=docs/speed/2026-12-05e-avx512
for b in 1 8; do
  dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model tiny --train-batch $b --against /work/base \
    --threads 2 --rounds 7 --no-progress --json $OUT/tiny_b$b.json > $OUT/tiny_b$b.txt 2>&1
done
dyvm bench --what train-step --kinds vim-eval dyvm-eval --train-batch 1 --steps 300 --against /work/base \
  --threads 2 --rounds 7 --no-progress --json $OUT/demo_b1.json > $OUT/demo_b1.txt 2>&1
dyvm bench --what train-step --against /work/base --threads 2 --rounds 7 --no-progress \
  --json $OUT/train-step-vs-5dbffe3.json > $OUT/train-step-vs-5dbffe3.txt 2>&1
