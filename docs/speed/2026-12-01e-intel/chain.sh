#!/bin/bash
# Run alone, from the repository root, venv active: DyVM vs Vim after 054833c (stacked inference).
set -e
D=docs/speed/2026-12-01e-intel
OMP_NUM_THREADS=1 dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 --threads 1 --no-progress --json $D/dyvm_b1_1thread.json > $D/dyvm_b1_1thread.txt 2>&1
dyvm bench --what dyvm --sizes tiny small --batch-sizes 1 8 --no-progress --json $D/dyvm_2threads.json > $D/dyvm_2threads.txt 2>&1
