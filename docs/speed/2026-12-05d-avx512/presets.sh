#!/bin/bash
# The presets' latency cut against their FLOPs cut, fp32 and bf16 (issue 10 item 2), then Vim-T against its matmul
# floor (item 3) and the peers (item 6). Run alone, from this folder.
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 64 --threads 2 --rounds 7 --precision 0 --no-progress \
  --json dyvm-vs-vim-fp32.json > dyvm-vs-vim-fp32.txt 2>&1
dyvm bench --what dyvm --dtype bf16 --sizes tiny small --batch-sizes 1 8 64 --threads 2 --rounds 7 --precision 0 \
  --no-progress --json dyvm-vs-vim-bf16.json > dyvm-vs-vim-bf16.txt 2>&1
dyvm bench --what backbone --batch-sizes 1 8 --threads 2 --rounds 5 --precision 0 --no-progress \
  --json backbone.json > backbone.txt 2>&1
OMP_NUM_THREADS=1 dyvm bench --what peers --batch-sizes 1 8 --threads 1 --no-progress --json peers.json > peers.txt 2>&1
