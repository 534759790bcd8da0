"""Twenty-fifth round: the demo's fine-tune (``dyvm.demo.finetune_options``, the canvas plan of session 45) alone,
for one selection rule, with options changed; tested on the full test split against the shipped canvas teacher.

    python docs/study/twentyfifth/finetune.py SCORE OUTDIR [KEY=VALUE ...]
      SCORE: predictor (DyVM, guided as in the demo) | static | random; KEY=VALUE: finetune_options overrides
      (e.g. lr=1.5e-3 epochs=2 block_keep_ratio=0.9), values read as Python literals
"""
import ast
import json
import os
import sys
import time

from dyvm.demo import PLANS, TEACHER_FILE, finetune_options
from dyvm.engine import train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from study import test_against_teacher  # noqa: E402

score, out = sys.argv[1], sys.argv[2]
overrides = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
t0 = time.time()
summary = train(**finetune_options(PLANS["default"], TEACHER_FILE, score, output=out, threads=2, no_progress=True,
                                   seed=0, **overrides))
tested = test_against_teacher(summary["best_checkpoint"], TEACHER_FILE, 40)
stats = tested["stats"]
res = dict(score=score, overrides=overrides, top1=stats["top1"], teacher_top1=tested["teacher_stats"]["top1"],
           flops_cut=tested["flops_cut"], token_keep=stats.get("token_keep"),
           branch_keep_mean=stats.get("branch_keep_mean"), history=summary["history"], seconds=time.time() - t0,
           date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           command="python docs/study/twentyfifth/finetune.py " + " ".join(sys.argv[1:]))
json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "history"}))
