#!/bin/bash
# Training steps of the demo configuration against commit 7829ac8 (issue 8 item 4) and against 1c076f7 (this
# session's start), 2 threads, both workers with the same malloc setting (GLIBC_TUNABLES from the dyvm command).
# REF_7829AC8 / START: `git archive 7829ac8 | tar -x -C DIR` (and 1c076f7).
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
D=docs/speed/2026-12-01d-intel
REF_7829AC8=${REF_7829AC8:-/work/runs/s11/ref-7829ac8}
START=${START:-/work/runs/s11/start-1c076f7}
dyvm bench --what train-step --threads 2 --rounds 7 --steps 2 --against $REF_7829AC8 --no-progress \
  --json $D/train-step-vs-7829ac8.json > $D/train-step-vs-7829ac8.txt 2>&1
