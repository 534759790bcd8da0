#!/bin/bash
# Session 36: the raw branch route (raw_branch on xz's float32 memory) under bf16 autocast, against the build before
# it (BASE: a checkout of e0d95de), alone, 2 threads. Usage: BASE=/path/to/e0d95de bash raw_bf16.sh [OUTDIR]
set -e
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
mkdir -p "$out" && cd "$out"
for b in 1 8; do
  dyvm bench --what train-step --kinds vim-eval dyvm-eval --step-model tiny --train-batch $b --autocast \
      --against-autocast --against "$BASE" --threads 2 --rounds 9 --no-progress \
      --json raw-bf16-b$b-vs-e0d95de.json > raw-bf16-b$b-vs-e0d95de.txt 2>&1
done
dyvm bench --what dtype --model vim_tiny --batch-sizes 1 8 --threads 2 --rounds 7 --precision 0 --no-progress \
    --json dtype-vim-tiny.json > dtype-vim-tiny.txt 2>&1
# DyVM presets against their Vim at batch 1, 8, 64 in bf16 (issue 10 item 2), then batch 1 three more times, and with
# every router on (token pruning alone) in fp32 and bf16
dyvm bench --what dyvm --dtype bf16 --sizes tiny small --batch-sizes 1 8 64 --threads 2 --rounds 7 --precision 0 \
    --no-progress --json presets-bf16.json > presets-bf16.txt 2>&1
for i in 1 2 3; do
  dyvm bench --what dyvm --dtype bf16 --sizes tiny small --batch-sizes 1 --threads 2 --rounds 9 --precision 0 \
      --no-progress > presets-bf16-b1-run$i.txt 2>&1
done
for dt in fp32 bf16; do
  dyvm bench --what dyvm --dtype $dt --routers-on 1.0 --sizes tiny small --batch-sizes 1 --threads 2 --rounds 9 \
      --precision 0 --no-progress > presets-$dt-b1-routers-all-on.txt 2>&1
done
