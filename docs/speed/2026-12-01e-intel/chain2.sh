#!/bin/bash
# Run alone, from the repository root, venv active, after chain.sh (commit 054833c + results).
set -e
D=docs/speed/2026-12-01e-intel
for r in 2 3; do
  OMP_NUM_THREADS=1 dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 --threads 1 --no-progress --json $D/dyvm_b1_1thread_run$r.json > $D/dyvm_b1_1thread_run$r.txt 2>&1
done
dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --dtype bf16 --no-progress --json $D/dyvm_bf16.json > $D/dyvm_bf16.txt 2>&1
python $D/stack_ab.py 2 11 /work/runs/demo-s11/checkpoints/dyvm/best.pth > $D/stack_ab_2threads.txt 2>&1
