#!/bin/bash
# Nineteenth round (session 35, 2026-12-05 11:42–12:09 UTC, the AMD Zen 4 AVX-512 kind, alone, one run at a time):
# one pruning stage before layer 5 keeping 7 of 49 patches (ρ 0.16: the three-stage point's 36% cut), the default
# demo's fine-tune otherwise. Each run writes OUT/result.json, copied here as RULE_loc5_rho0.16_seedS.json.
for spec in "dyvm 5 0.16 0" "static 5 0.16 0" "dyvm 5 0.16 1" "static 5 0.16 1" "dyvm_probs 5 0.16 0" "dyvm_probs 5 0.16 1"; do
  set -- $spec
  python docs/study/nineteenth/finetune_point.py $1 $2 $3 /work/runs/s35/${1}_loc$2_rho$3_seed$4 $4
done
