#!/bin/bash
# Three back-to-back runs of `dyvm bench --what dyvm` with the default --precision 0.02 (rounds added until every
# median ratio's 95% CI is within ±2%, up to 3 x 15 rounds), alone on the machine. Run from the repository root.
set -e
out=docs/speed/2026-12-01c-intel
for i in 1 2 3; do
  OMP_NUM_THREADS=1 dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --threads 1 --no-progress \
    --json $out/dyvm-vs-vim-precision-$i.json > $out/dyvm-vs-vim-precision-$i.txt 2>&1
done
