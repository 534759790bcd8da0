#!/bin/bash
# Issue 10 items 2, 3, 6 and issue 8 item 4 at this build. Run alone, from this folder, with /work/wt-7829 a
# checkout of 7829ac8.
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
OMP_NUM_THREADS=1 dyvm bench --what peers --batch-sizes 1 8 --threads 1 --no-progress --json peers.json > peers.txt 2>&1
dyvm bench --what backbone --batch-sizes 1 8 --threads 2 --rounds 5 --precision 0 --no-progress \
  --json backbone.json > backbone.txt 2>&1
dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 64 --threads 2 --rounds 7 --precision 0 --no-progress \
  --json dyvm-vs-vim-fp32.json > dyvm-vs-vim-fp32.txt 2>&1
dyvm bench --what dyvm --dtype bf16 --sizes tiny small --batch-sizes 1 8 64 --threads 2 --rounds 7 --precision 0 \
  --no-progress --json dyvm-vs-vim-bf16.json > dyvm-vs-vim-bf16.txt 2>&1
dyvm bench --what train-step --against /work/wt-7829 --threads 2 --rounds 7 --no-progress \
  --json train-step-vs-7829ac8.json > train-step-vs-7829ac8.txt 2>&1
