#!/usr/bin/env bash
# Session 31 (2026-12-05): batch-1 overheads (stack plan, patch embedding as a matmul, raw-pointer SSM branches)
# against c8f8c29 (the session's start), alone on the 2-core AMD AVX-512 machine. Run from the repository root
# with /work/base a checkout of c8f8c29.
set -x
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
OUT=docs/speed/2026-12-05d-avx512
for b in 1 64; do
  dyvm bench --what train-step --kinds vim-eval dyvm-eval --train-batch $b --steps 300 --against /work/base \
    --threads 2 --rounds 7 --no-progress --json $OUT/demo_b$b.json > $OUT/demo_b$b.txt 2>&1
done
for b in 1 8; do
  dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model tiny --train-batch $b --against /work/base \
    --threads 2 --rounds 7 --no-progress --json $OUT/tiny_b$b.json > $OUT/tiny_b$b.txt 2>&1
done
