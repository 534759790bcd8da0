#!/bin/bash
# Repeats of presets.sh's peer and backbone commands (issue 10 items 6 and 3), alone, from this folder.
set -x
export DYVM_EXT_DIR=${DYVM_EXT_DIR:-/work/ext}
export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
for i in 2 3; do
  OMP_NUM_THREADS=1 dyvm bench --what peers --batch-sizes 1 8 --threads 1 --no-progress --json peers-$i.json > peers-$i.txt 2>&1
  dyvm bench --what backbone --batch-sizes 1 8 --threads 2 --rounds 5 --precision 0 --no-progress \
    --json backbone-$i.json > backbone-$i.txt 2>&1
done
