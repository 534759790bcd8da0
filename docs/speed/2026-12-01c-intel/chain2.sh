#!/bin/bash
# session 10, second chain: at commit 3855193 (both lanes kernels), alone, one after another, from the repository
# root. REF_7829AC8 and START are checkouts of commits 7829ac8 and c4142c5 (this session's build before them).
set -x
. .venv/bin/activate
D=docs/speed/2026-12-01c-intel
REF_7829AC8=${REF_7829AC8:-/work/runs/s10/ref-7829ac8}
START=${START:-/work/runs/s10/start}
dyvm bench --what train-step --threads 2 --rounds 7 --steps 2 --against $START --no-progress \
  --json $D/train-step-lanes2-vs-c4142c5.json > $D/train-step-lanes2-vs-c4142c5.txt 2>&1
dyvm bench --what train-step --threads 2 --rounds 7 --steps 2 --against $REF_7829AC8 --no-progress \
  --json $D/train-step-lanes2-vs-7829ac8.json > $D/train-step-lanes2-vs-7829ac8.txt 2>&1
dyvm bench --what train-step --kinds dyvm-eval vim-eval --threads 1 --rounds 7 --steps 3 --against $START \
  --no-progress --json $D/eval-vs-c4142c5.json > $D/eval-vs-c4142c5.txt 2>&1
OMP_NUM_THREADS=1 dyvm bench --what backbone --threads 1 --batch-sizes 1 8 --no-progress \
  --json $D/backbone.json > $D/backbone.txt 2>&1
for i in 1 2 3; do
  OMP_NUM_THREADS=1 dyvm bench --what peers --threads 1 --no-progress --json $D/peers-$i.json > $D/peers-$i.txt 2>&1
done
OMP_NUM_THREADS=1 dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --threads 1 --no-progress \
  --json $D/dyvm-vs-vim-lanes.json > $D/dyvm-vs-vim-lanes.txt 2>&1
echo done
