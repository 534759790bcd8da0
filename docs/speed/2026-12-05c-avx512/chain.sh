#!/bin/bash
# Session 30's third chain: x_proj / dt_proj weights cast to bf16 once under bf16 autocast (this build) against
# 7dd6b80 (the build before). Run alone, from this folder:  BASE=<checkout of 7dd6b80> bash chain.sh
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
B=${BASE:?set BASE to a checkout of 7dd6b80}
dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model tiny --train-batch 1 --autocast --against-autocast \
  --against $B --threads 2 --rounds 7 --no-progress --json bf16-tiny-b1-vs-7dd6b80.json > bf16-tiny-b1-vs-7dd6b80.txt 2>&1
dyvm bench --what dyvm --dtype bf16 --sizes tiny small --batch-sizes 1 8 --threads 2 --rounds 7 --precision 0 \
  --no-progress --json dyvm-vs-vim-bf16.json > dyvm-vs-vim-bf16.txt 2>&1
