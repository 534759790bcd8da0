#!/bin/bash
# Twenty-first round (session 37, 2026-12-05, the AMD Zen 4 AVX-512 kind, alone, one run at a time). Since session 36
# a stage's tied keep scores spread the kept slots evenly over the tied ones (static selection's rule among ties), so
# a predictor that ties keeps static's slots at inference; trained with the top-k sampler's Gumbel noise it still
# trained on noise-chosen (random) slots there. --token-noise 0 trains on inference's own selection. Each spec is
# "RULE LOC RHO SEED" (the nineteenth round's script); each run writes OUT/result.json, copied here.
for spec in "$@"; do
  set -- $spec
  name=${1}_loc${2//,/}_rho${3}_seed$4
  python docs/study/nineteenth/finetune_point.py $1 $2 $3 /work/runs/s37/$name $4
  cp /work/runs/s37/$name/result.json docs/study/twentyfirst/$name.json
done
