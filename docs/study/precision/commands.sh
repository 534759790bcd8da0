#!/bin/bash
# Does training under bf16 autocast hold the demo's accuracy? (session 40, 2026-12-06, the AMD Zen 4 AVX-512 kind,
# alone, 2 threads, one run at a time.)
# 1. The shipped teacher's recipe (its card's command, 2 threads instead of 1) under bf16 autocast, then its test top-1
#    in float32 and bf16 inference:
#      dyvm train --model vim_tiny --img-size 28 --patch-size 4 --in-chans 1 --depth 8 --embed-dim 64 \
#        --dataset fashion-mnist --batch-size 128 --epochs 10 --lr 8e-3 --min-lr 1e-5 --warmup-epochs 1 \
#        --warmup-lr 1e-5 --weight-decay 0.05 --mixup 0 --cutmix 0 --smoothing 0 --aa none --reprob 0 \
#        --repeated-aug 1 --drop-path 0 --scale-min 0.8 --hflip 0.5 --val-size 5000 --eval-batch-size 500 --seed 0 \
#        --amp bf16 --threads 2 --output /work/runs/teacher-bf16-flip-s40 --no-progress
#      dyvm eval --checkpoint /work/runs/teacher-bf16-flip-s40/best.pth --dataset fashion-mnist \
#        --json teacher_bf16_eval.json --latency-batch-sizes
#    (teacher_bf16_noflip_*: a first run whose command lost the card's last six flags, so it trained without
#    horizontal flips (today's default for small images) and evaluated with batches of 256: the same otherwise)
# 2. The default demo's DyVM fine-tune in float32 and under bf16 autocast, seeds 0 and 1 (the nineteenth round's
#    finetune_point.py; each spec "RULE SEED"):
for spec in "$@"; do
  set -- $spec
  name=${1}_seed$2
  python docs/study/nineteenth/finetune_point.py $1 5,6,7 0.3 /work/runs/s40/$name $2
  cp /work/runs/s40/$name/result.json docs/study/precision/$name.json
done
