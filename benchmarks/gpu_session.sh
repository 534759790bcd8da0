#!/usr/bin/env bash
# One lease of a CUDA machine, as run on 2026-12-04 (H200): the GPU check of the Triton backend, then
# DyVM against Vim on the GPU (fp32 and bf16, batch 1/8/64) and the official-style throughput.
# Runs from the repository root with the machine's own torch (no install: PYTHONPATH=src);
# every result lands in $OUT (default: gpu_out/). Each step has its own time limit, and gpu_check.py
# saves its JSON after every section, so a step stopped at its limit keeps what it measured.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src DYVM_EXT_DIR=/tmp/dyvm-ext
{ date -u; nvidia-smi; python3 -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"; nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout 330 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" --rounds 3 --warmup 1 > "$OUT/gpu_check.log" 2>&1
echo "gpu_check rc $?"; cat "$OUT/gpu_check.log"
for dtype in fp32 bf16; do
  timeout 80 python3 -m dyvm bench --what dyvm --device cuda --dtype $dtype --sizes tiny small --batch-sizes 1 8 64 \
    --rounds 5 --precision 0 --json "$OUT/bench_dyvm_cuda_$dtype.json" --no-progress >> "$OUT/bench_cuda.log" 2>&1
  echo "bench dyvm $dtype rc $?" >> "$OUT/bench_cuda.log"
done
timeout 60 python3 -m dyvm bench --what dyvm --device cuda --throughput --sizes tiny small --rounds 5 --precision 0 \
  --json "$OUT/throughput_cuda.json" --no-progress >> "$OUT/bench_cuda.log" 2>&1
echo "throughput rc $?" >> "$OUT/bench_cuda.log"
cat "$OUT/bench_cuda.log"
