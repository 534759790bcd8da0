#!/bin/bash
# Twenty-second round (session 42, 2026-12-06, the AMD Zen 4 AVX-512 kind, alone, one run at a time): Fashion-MNIST
# on a 56-px canvas at a random per-image offset, 8-px patches (canvas.py's docstring). Each spec "RULE LOC RHO SEED".
# The round ran, in this order (05:51-08:26 UTC):
#   python docs/study/twentysecond/canvas.py teacher /work/runs/s42/teacher 6        (-> canvas_teacher_6ep.pth)
#   bash docs/study/twentysecond/commands.sh "dyvm 5,6,7 0.3 0" "static 5,6,7 0.3 0" "dyvm 2 0.57 0" "static 2 0.57 0"
#   bash docs/study/twentysecond/commands.sh "dyvm_probs 5,6,7 0.3 0" "dyvm_probs 2 0.57 0" "random 5,6,7 0.3 0"
#   bash docs/study/twentysecond/commands.sh "ink 2 0.57 0" "ink 5,6,7 0.3 0"
#   PLAIN=1 bash docs/study/twentysecond/commands.sh "ink 5,6,7 0.3 0" "ink 2 0.57 0"
#   bash docs/study/twentysecond/commands.sh "influence 2 0.57 0" "dyvm_guided 2 0.57 0"
#   PLAIN=1 bash docs/study/twentysecond/commands.sh "dyvm_guided 5,6,7 0.3 0"
#   bash docs/study/twentysecond/commands.sh "dyvm_guided 5,6,7 0.3 0" "static 2 0.57 1" "dyvm_guided 2 0.57 1"
#   bash docs/study/twentysecond/commands.sh "dyvm_guided_stage 2 0.57 0"
#   bash docs/study/twentysecond/commands.sh "static 2 0.57 2" "dyvm_guided 2 0.57 2"     (08:11-08:26)
#   python docs/study/twentysecond/paired.py /work/runs/s42 ...   (paired.txt's first line)
# Twenty-third round (session 43, 2026-12-06; dyvm_guided now runs the library's --keep-guidance):
#   python docs/study/twentysecond/canvas.py finetune dyvm_guided 2 0.57 docs/study/twentysecond/canvas_teacher_6ep.pth \
#       /work/runs/s43/guided_loc2_seed0 0                          (-> lib_dyvm_guided_loc2_rho0.57_seed0.json)
#   CANVAS=40 PATCH=4 python docs/study/twentysecond/canvas.py teacher /work/runs/s43/teacher40 10
#   CANVAS=40 PATCH=4 RUNS=/work/runs/s43 TEACHER=/work/runs/s43/teacher40/best.pth \
#       bash docs/study/twentysecond/commands.sh "static 2 0.57 0" "dyvm_guided 2 0.57 0"      (-> c40_*.json)
#   CANVAS=40 PATCH=4 RUNS=/work/runs/s43 TEACHER=/work/runs/s43/teacher40/best.pth \
#       bash docs/study/twentysecond/commands.sh "dyvm 2 0.57 0" "random 2 0.57 0"                (session 43)
#   CANVAS=40 PATCH=4 RUNS=/work/runs/s44 TEACHER=docs/study/twentysecond/canvas40_teacher_10ep.pth \
#       bash docs/study/twentysecond/commands.sh "static 2 0.57 1" "dyvm_guided 2 0.57 1"         (session 44, 10:30-10:59;
#   the guided run failed at start on the old canvas patch and was rerun after canvas.py moved to --canvas)
# (The teacher path below is session 42's run output; canvas_teacher_6ep.pth is the same file. RUNS, TEACHER: another
# run folder and teacher; CANVAS: the records get a c<CANVAS>_ prefix.)
RUNS=${RUNS:-/work/runs/s42}; T=${TEACHER:-/work/runs/s42/teacher/best.pth}; P=${CANVAS:+c${CANVAS}_}
if [ "$PLAIN" = 1 ]; then T=$(python -c "from dyvm.demo import shipped_teacher; print(shipped_teacher()[0])"); P=plain_; fi
for spec in "$@"; do
  set -- $spec
  name=$P${1}_loc${2//,/}_rho${3}_seed$4
  python docs/study/twentysecond/canvas.py finetune $1 $2 $3 $T $RUNS/$name $4
  cp $RUNS/$name/result.json docs/study/twentysecond/$name.json
done
# The oracle on the demo's own centred 28-px images (PLAIN=1, the shipped teacher): each spec "RULE LOC RHO SEED".
