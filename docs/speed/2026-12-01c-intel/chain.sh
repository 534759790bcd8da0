#!/bin/bash
# session 10 measurements at the commit named in docs/speed/README.md, run alone, one after another, from the
# repository root. REF_7829AC8 and START are checkouts of commits 7829ac8 (issue 8's reference build) and
# c4142c5 (this build without the lanes backward).
set -x
. .venv/bin/activate
D=docs/speed/2026-12-01c-intel
REF_7829AC8=${REF_7829AC8:-/work/runs/s10/ref-7829ac8}
START=${START:-/work/runs/s10/start}
g++ -O3 -march=native -fno-math-errno -fno-trapping-math -fopenmp -std=c++17 $D/scan_variants.cpp -o /tmp/scan_variants
/tmp/scan_variants 1 384 197 21 > $D/scan_variants.txt 2>&1
/tmp/scan_variants 128 128 50 15 >> $D/scan_variants.txt 2>&1
dyvm bench --what train-step --threads 2 --rounds 7 --steps 2 --against $START --no-progress \
  --json $D/train-step-vs-c4142c5.json > $D/train-step-vs-c4142c5.txt 2>&1
dyvm bench --what train-step --threads 2 --rounds 7 --steps 2 --against $REF_7829AC8 --no-progress \
  --json $D/train-step-vs-7829ac8.json > $D/train-step-vs-7829ac8.txt 2>&1
echo done
