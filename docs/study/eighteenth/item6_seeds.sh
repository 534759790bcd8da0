# Issue 8 item 6 by hand for more seeds, both keep-ratio sources, one run at a time (run from the repository root
# with the README's environment): SEEDS="1 2" OUT=runs/item6 bash docs/study/eighteenth/item6_seeds.sh
for seed in ${SEEDS:-1 2}; do
  for src in decisions probabilities; do
    echo "== seed $seed source $src $(date -u +%H:%M)"
    python docs/study/seventeenth/item6.py ${OUT:-runs/item6}/${src}_s$seed --seed $seed --keep-ratio-source $src 2>&1 | tail -1
  done
done
echo "done $(date -u +%H:%M)"
