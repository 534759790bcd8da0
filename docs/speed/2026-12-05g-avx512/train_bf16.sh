# Session 34: training steps under bf16 autocast with the fused SSM node (x_proj, dt_proj float32 in it).
# Run alone from the repository root with the README's environment (DYVM_EXT_DIR, GLIBC_TUNABLES);
# /work/base34 = a checkout of 10ce4a7 (before), /work/base7829 = a checkout of 7829ac8 (issue 8's baseline).
set -e
D=docs/speed/2026-12-05g-avx512
date -u
# the change alone: this build vs 10ce4a7, both under bf16 autocast
dyvm bench --what train-step --kinds vim dyvm --autocast --against-autocast --against /work/base34 --threads 2 \
  --rounds 7 --json $D/train-bf16-vs-10ce4a7.json | tee $D/train-bf16-vs-10ce4a7.txt
date -u
# issue 8 item 4: this build's bf16 steps against 7829ac8's float32 steps (its default)
dyvm bench --what train-step --kinds vim dyvm --autocast --against /work/base7829 --threads 2 --rounds 7 \
  --json $D/train-bf16-vs-7829ac8.json | tee $D/train-bf16-vs-7829ac8.txt
date -u
# and float32 against float32 (this change does not touch that path)
dyvm bench --what train-step --kinds vim dyvm --against /work/base7829 --threads 2 --rounds 7 \
  --json $D/train-fp32-vs-7829ac8.json | tee $D/train-fp32-vs-7829ac8.txt
date -u
