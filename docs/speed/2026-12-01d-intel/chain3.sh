#!/bin/bash
# After the default demo of this session (its DyVM checkpoint is DEMO_DYVM), alone, one after another:
# the fused pruning stage against the Python stage (fused_stage_ab.py, 1 and 2 threads), then DyVM vs Vim at
# batch 1 with 1 thread twice (the README's older configuration) and once in bf16 autocast (2 threads).
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
D=docs/speed/2026-12-01d-intel
DEMO_DYVM=${DEMO_DYVM:-/work/runs/demo-s11/checkpoints/dyvm/best.pth}
python -c "from dyvm.kernels import scan_cpp; assert scan_cpp.available(), scan_cpp.build_error()"
OMP_NUM_THREADS=1 python $D/fused_stage_ab.py 1 11 $DEMO_DYVM > $D/fused_stage_ab_1thread.txt 2>&1
python $D/fused_stage_ab.py 2 11 $DEMO_DYVM > $D/fused_stage_ab_2threads.txt 2>&1
for i in 1 2; do
  OMP_NUM_THREADS=1 dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 --threads 1 --no-progress \
    --json $D/dyvm_b1_1thread_run$i.json > $D/dyvm_b1_1thread_run$i.txt 2>&1
done
dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --dtype bf16 --no-progress \
  --json $D/dyvm_bf16.json > $D/dyvm_bf16.txt 2>&1
echo done
