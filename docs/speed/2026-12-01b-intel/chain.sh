#!/bin/bash
# session 9 measurements at commit f7ecadd, run alone, one after another
set -x
cd /work/main && . .venv/bin/activate
D=docs/speed/2026-12-01b-intel
T=src/dyvm/assets/fashion_mnist_vim_teacher.pth
K=/work/runs/demo-intel/checkpoints/dyvm/best.pth
python $D/fused_block_ab.py $T $K $D/fused_block_ab.json 1 8 64 > $D/fused_block_ab.txt 2>&1
for i in 1 2 3; do OMP_NUM_THREADS=1 dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --threads 1 --no-progress --json $D/dyvm-vs-vim-$i.json > $D/dyvm-vs-vim-$i.txt 2>&1; done
for i in 1 2 3; do OMP_NUM_THREADS=1 dyvm bench --what peers --threads 1 --no-progress --json $D/peers-$i.json > $D/peers-$i.txt 2>&1; done
OMP_NUM_THREADS=1 dyvm bench --what backbone --threads 1 --batch-sizes 1 8 --no-progress --json $D/backbone.json > $D/backbone.txt 2>&1
python docs/speed/2026-12-01-intel/demo_latency.py $T $K 2 $D/demo_latency.json > $D/demo_latency.txt 2>&1
echo done
