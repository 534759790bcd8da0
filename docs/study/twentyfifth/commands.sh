#!/bin/bash
# Twenty-fifth round (session 45, 2026-12-06, the AMD Zen 4 AVX-512 kind, alone, one run at a time).
# The canvas teacher of the twenty-fourth round shipped as the demo's teacher:
#   python scripts/ship_demo_teacher.py /work/runs/s44/teacher40_20ep --commit c093952daa39466e39e6efba8450a4b2a64daace \
#       --command "dyvm train ... --canvas 40 ... --epochs 20 ... --output /work/runs/s44/teacher40_20ep"  (the card's command)
# The demo itself (docs/demo/):
#   dyvm demo --output /work/runs/s45/demo --no-progress
# The guided DyVM alone at half the learning rate:
set -e
RUNS=${RUNS:-/work/runs/s45}
python docs/study/twentyfifth/finetune.py predictor $RUNS/guided_lr1.5e-3 lr=1.5e-3
cp $RUNS/guided_lr1.5e-3/result.json docs/study/twentyfifth/guided_lr1.5e-3.json
