#!/bin/bash
# Session 30's second chain: the one-pass residual add + RMSNorm (this build) against 17012db (the build before it).
# Run alone, from this folder:  BASE=<checkout of 17012db> CKPT=<a default demo's checkpoints/dyvm/checkpoint.pth> bash chain.sh
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
B=${BASE:?set BASE to a checkout of 17012db}
C=${CKPT:?set CKPT to a demo DyVM checkpoint}
for m in demo tiny; do
  dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model $m --train-batch 1 --against $B --threads 2 \
    --rounds 7 --no-progress --json eval-$m-b1-vs-17012db.json > eval-$m-b1-vs-17012db.txt 2>&1
done
for i in 1 2; do for w in $PWD/../../.. $B; do echo "== $w"; (cd $w && PYTHONPATH=src python $OLDPWD/../2026-12-05-avx512/demo_models.py $C); done; done \
  > demo_models.txt 2>&1
# added after the commit that let --train-batch set the demo configuration's batch (run alone, the same BASE):
#   dyvm bench --what train-step --kinds vim-eval dyvm-eval --train-batch 1 --steps 300 --against $BASE --threads 2 --rounds 7 \
#     --no-progress --json eval-demo-b1-vs-17012db.json > eval-demo-b1-vs-17012db.txt
