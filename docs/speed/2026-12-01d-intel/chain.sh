#!/bin/bash
# DyVM vs Vim latency, three back-to-back runs of one command (issue 10 items 1 and 2), after the
# fused pruning stage (d657568) and the retained freed memory (this commit's parent chain).
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
out=docs/speed/2026-12-01d-intel
for i in 1 2 3; do
  dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --no-progress --json $out/dyvm_run$i.json > $out/dyvm_run$i.txt 2>&1
done
