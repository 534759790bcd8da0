#!/bin/bash
# Issue 10 item 1 beyond --what dyvm: three back-to-back runs of the fp32-vs-bf16 comparison and of the
# build-vs-build training steps (against 7829ac8), 2 threads, alone, with freed memory kept (the dyvm command).
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
D=docs/speed/2026-12-01d-intel
REF_7829AC8=${REF_7829AC8:-/work/runs/s11/ref-7829ac8}
for i in 1 2 3; do
  dyvm bench --what dtype --batch-sizes 1 8 --no-progress --json $D/dtype_run$i.json > $D/dtype_run$i.txt 2>&1
done
for i in 2 3 4; do
  dyvm bench --what train-step --threads 2 --rounds 7 --steps 2 --against $REF_7829AC8 --no-progress \
    --json $D/train-step-vs-7829ac8-run$i.json > $D/train-step-vs-7829ac8-run$i.txt 2>&1
done
echo done
