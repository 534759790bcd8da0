#!/bin/bash
# Twentieth round (session 36, 2026-12-05, the AMD Zen 4 AVX-512 kind, alone, one run at a time): one pruning stage
# before layer 2 keeping 28 of 49 patches (ρ 0.57, a ~37% cut with the routers' 0.8 branch keep), the default demo's
# fine-tune otherwise (the nineteenth round's script). An early stage where the kept set can follow each garment's
# outline, against static selection's fixed evenly spaced slots. Each run writes OUT/result.json, copied here as
# RULE_loc2_rho0.57_seedS.json.
for spec in "$@"; do
  set -- $spec
  python docs/study/nineteenth/finetune_point.py $1 2 0.57 /work/runs/s36/${1}_loc2_rho0.57_seed$2 $2
  cp /work/runs/s36/${1}_loc2_rho0.57_seed$2/result.json docs/study/twentieth/${1}_loc2_rho0.57_seed$2.json
done
