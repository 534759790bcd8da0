#!/bin/bash
# Does training under bf16 autocast hold the demo's accuracy? (session 40, 2026-12-06, the AMD Zen 4 AVX-512 kind,
# alone, 2 threads, one run at a time.)
# 1. The shipped teacher's recipe (its card's command, 2 threads instead of 1) under bf16 autocast, then its test top-1
#    in float32 and bf16 inference:
#      dyvm train <the card's flags> --amp bf16 --threads 2 --output /work/runs/teacher-bf16-s40 --no-progress
#      dyvm eval --checkpoint /work/runs/teacher-bf16-s40/best.pth --dataset fashion-mnist --json teacher_bf16_eval.json --latency-batch-sizes
# 2. The default demo's DyVM fine-tune in float32 and under bf16 autocast, seeds 0 and 1 (the nineteenth round's
#    finetune_point.py; each spec "RULE SEED"):
for spec in "$@"; do
  set -- $spec
  name=${1}_seed$2
  python docs/study/nineteenth/finetune_point.py $1 5,6,7 0.3 /work/runs/s40/$name $2
  cp /work/runs/s40/$name/result.json docs/study/precision/$name.json
done
