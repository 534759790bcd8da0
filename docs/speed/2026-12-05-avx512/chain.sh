#!/bin/bash
# Session 30's measurements at bef3421+ (this folder's measured.txt says what each shows). Run alone, from this folder:
#   BASE=<checkout of a3c0791> bash chain.sh
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
B=${BASE:?set BASE to a checkout of a3c0791}
for b in 1 8 64; do
  dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model tiny --train-batch $b --against $B --threads 2 \
    --rounds 7 --steps $([ $b = 64 ] && echo 1 || echo 2) --no-progress --json eval-b$b-vs-a3c0791.json > eval-b$b-vs-a3c0791.txt 2>&1
done
OMP_NUM_THREADS=1 dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model tiny --train-batch 1 --against $B \
  --threads 1 --rounds 7 --no-progress --json eval-b1-1thread-vs-a3c0791.json > eval-b1-1thread-vs-a3c0791.txt 2>&1
dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 64 --threads 2 --rounds 7 --precision 0 --no-progress \
  --json dyvm-vs-vim-fp32.json > dyvm-vs-vim-fp32.txt 2>&1
for i in 1 2; do for w in $PWD/../../.. $B; do echo "== $w"; (cd $w && PYTHONPATH=src python $OLDPWD/demo_models.py); done; done \
  > demo_models.txt 2>&1
OMP_NUM_THREADS=1 dyvm bench --what peers --batch-sizes 1 8 --threads 1 --no-progress --json peers.json > peers.txt 2>&1
dyvm bench --what backbone --batch-sizes 1 8 --threads 2 --rounds 5 --precision 0 --no-progress --json backbone.json \
  > backbone.txt 2>&1
