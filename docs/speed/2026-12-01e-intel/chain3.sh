#!/bin/bash
# Run alone, from the repository root, venv active, after the clean-clone CI of d71e4ab.
set -e
D=docs/speed/2026-12-01e-intel
OMP_NUM_THREADS=1 dyvm bench --what backbone --threads 1 --batch-sizes 1 8 --no-progress --json $D/backbone.json > $D/backbone.txt 2>&1
OMP_NUM_THREADS=1 dyvm bench --what peers --threads 1 --batch-sizes 1 8 --no-progress --json $D/peers.json > $D/peers.txt 2>&1
