#!/bin/bash
# Twenty-fourth round (session 44, 2026-12-06, the AMD Zen 4 AVX-512 kind, alone, one run at a time): a Vim teacher
# for Fashion-MNIST on a 40-px canvas (the library's --canvas 40: every garment at its own fixed offset, 0-12 px on
# each axis) through the demo's 4-px patches (100 tokens), trained by `dyvm train` with the demo teacher's recipe
# (dyvm.demo.TEACHER_RECIPE) over 20 epochs instead of 10 (the 10-epoch run of the twenty-third round reached 88.19%,
# still gaining 0.3 point an epoch). Then DyVM guided by the teacher's influence and trained static selection
# fine-tuned from it at one stage before layer 2 (rho 0.57), by docs/study/twentysecond/canvas.py.
# RUNS: the run folder (default /work/runs/s44).
set -e
RUNS=${RUNS:-/work/runs/s44}
dyvm train --model vim_tiny --img-size 40 --patch-size 4 --in-chans 1 --depth 8 --embed-dim 64 --dataset fashion-mnist \
  --canvas 40 --batch-size 128 --epochs 20 --lr 0.008 --min-lr 1e-05 --warmup-epochs 1 --warmup-lr 1e-05 \
  --weight-decay 0.05 --mixup 0.0 --cutmix 0.0 --smoothing 0.0 --aa none --reprob 0.0 --repeated-aug 1 \
  --drop-path 0.0 --scale-min 0.8 --hflip 0.5 --val-size 5000 --eval-batch-size 500 --seed 0 --threads 2 \
  --no-progress --output $RUNS/teacher40_20ep
dyvm eval --checkpoint $RUNS/teacher40_20ep/best.pth --no-progress --threads 2 --latency-batch-sizes 1 \
  --json docs/study/twentyfourth/teacher40_20ep_test.json        # the test split on the checkpoint's canvas
cp $RUNS/teacher40_20ep/log.jsonl docs/study/twentyfourth/teacher40_20ep_log.jsonl
cp $RUNS/teacher40_20ep/config.json docs/study/twentyfourth/teacher40_20ep_config.json
for spec in "dyvm_guided 2 0.57 0" "static 2 0.57 0"; do
  set -- $spec
  name=c40t20_${1}_loc${2}_rho${3}_seed$4
  CANVAS=40 PATCH=4 python docs/study/twentysecond/canvas.py finetune $1 $2 $3 $RUNS/teacher40_20ep/best.pth $RUNS/$name $4
  cp $RUNS/$name/result.json docs/study/twentyfourth/$name.json
done
# Then, alone (12:56-12:58 UTC):
#   python docs/study/twentyfourth/latency.py docs/study/twentyfourth/canvas40_teacher_20ep.pth \
#       $RUNS/c40t20_dyvm_guided_loc2_rho0.57_seed0/best.pth docs/study/twentyfourth/c40t20_dyvm_guided_loc2_rho0.57_seed0.json \
#       40 docs/study/twentyfourth/latency_guided_seed0.json
#   CANVAS=40 PATCH=4 python docs/study/twentysecond/paired.py $RUNS c40t20_dyvm_guided_loc2_rho0.57_seed0:c40t20_static_loc2_rho0.57_seed0
