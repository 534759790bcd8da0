#!/usr/bin/env bash
# One lease of a CUDA machine: the GPU check of the Triton backend (benchmarks/gpu_check.py), DyVM against
# Vim on the GPU (`dyvm bench --what dyvm`, fp32 and bf16, batch 1/8/64, and --throughput), and where
# small-batch latency goes (benchmarks/gpu_latency.py). Runs from the repository root with the machine's own
# torch (no install: PYTHONPATH=src); results land in $OUT (default gpu_out/). Each step has its own time
# limit, and the Python scripts save their JSON after every section, so a step stopped at its limit keeps
# what it measured.
#   STEPS       which steps, of: check bench latency (default: all three)
#   CHECK_ARGS  gpu_check.py's arguments (default: none); CHECK_TIMEOUT its limit in seconds (default 330)
# The H200 lease of 2026-12-04 ran  STEPS="check bench" CHECK_ARGS="--rounds 3 --warmup 1"  (run 1, at
# 3ddd9fb) and  STEPS="check latency" CHECK_ARGS="--arms triton triton_32x4" CHECK_TIMEOUT=240  (run 2): docs/gpu/.
# Next lease: CHECK_ARGS="--arms triton triton_flipped torch" measures the triton scan's and conv's own reverse
# (session 28, not yet timed on a GPU) against flipped copies, beside the torch backend.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
STEPS=${STEPS:-check bench latency}
CHECK_ARGS=${CHECK_ARGS:-}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-330}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src DYVM_EXT_DIR=/tmp/dyvm-ext
{ date -u; nvidia-smi; python3 -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"; nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [[ " $STEPS " == *" check "* ]]; then
  timeout $CHECK_TIMEOUT python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" $CHECK_ARGS > "$OUT/gpu_check.log" 2>&1
  echo "gpu_check rc $?"; cat "$OUT/gpu_check.log"
fi
if [[ " $STEPS " == *" bench "* ]]; then
  for dtype in fp32 bf16; do
    timeout 80 python3 -m dyvm bench --what dyvm --device cuda --dtype $dtype --sizes tiny small --batch-sizes 1 8 64 \
      --rounds 5 --precision 0 --json "$OUT/bench_dyvm_cuda_$dtype.json" --no-progress >> "$OUT/bench_cuda.log" 2>&1
    echo "bench dyvm $dtype rc $?" >> "$OUT/bench_cuda.log"
  done
  timeout 60 python3 -m dyvm bench --what dyvm --device cuda --throughput --sizes tiny small --rounds 5 --precision 0 \
    --json "$OUT/throughput_cuda.json" --no-progress >> "$OUT/bench_cuda.log" 2>&1
  echo "throughput rc $?" >> "$OUT/bench_cuda.log"
  cat "$OUT/bench_cuda.log"
fi
if [[ " $STEPS " == *" latency "* ]]; then
  timeout 240 python3 benchmarks/gpu_latency.py --out "$OUT/gpu_latency.json" > "$OUT/gpu_latency.log" 2>&1
  echo "gpu_latency rc $?"; cat "$OUT/gpu_latency.log"
fi
