"""The default demo's fine-tune (dyvm.demo.finetune_options, 2 threads) at another operating point, for DyVM or a
trained nested baseline, then test top-1 and the official FLOPs cut on the 10,000 test images.

Usage: python docs/study/nineteenth/finetune_point.py RULE PRUNING_LOC RHO OUTDIR [SEED]
  RULE: dyvm | dyvm_probs (the keep-ratio loss on p(keep): --keep-ratio-source probabilities) | static | random
        (the demo's trained baselines: nested masks) | dyvm_noise0 / dyvm_probs_noise0 (the same DyVMs trained on
        inference's own top-k: --token-noise 0; twenty-first round) | dyvm_bf16 (the default DyVM under bf16 autocast:
        --amp bf16; docs/study/precision)
  PRUNING_LOC: comma-separated layers, e.g. 5 (one stage before layer 5) or 5,6,7 (the demo's)
  RHO: the token keep ratio per stage (the demo's: 0.3)

Nineteenth round: with one pruning stage there is no per-image choice of the last few tokens (where the eighteenth
round found DyVM losing to static), so does a single learnt stage match or beat a single static one?
"""
import json, os, sys, time
from dyvm.demo import PLANS, finetune_options, shipped_teacher
from dyvm.engine import train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from study import test_against_teacher  # noqa: E402  (the study runner's evaluation of a fine-tune)

rule, loc, rho, out = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], float(sys.argv[3]), sys.argv[4]
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
RULES = {"dyvm": {}, "dyvm_probs": dict(keep_ratio_source="probabilities"), "static": dict(score="static", baseline_masks="nested"),
         "random": dict(score="random", baseline_masks="nested"), "dyvm_noise0": dict(token_noise=0.0),
         "dyvm_probs_noise0": dict(keep_ratio_source="probabilities", token_noise=0.0), "dyvm_bf16": dict(amp="bf16")}
if rule not in RULES:
    raise SystemExit(f"RULE must be one of {', '.join(RULES)}")
teacher, _ = shipped_teacher()
t0 = time.time()
summary = train(**finetune_options(PLANS["default"], teacher, output=out, seed=seed, pruning_loc=loc,
                                   token_keep_ratio=rho, threads=2, no_progress=True, **RULES[rule]))
tested = test_against_teacher(summary["best_checkpoint"], teacher)
stats = tested["stats"]
res = dict(rule=rule, pruning_loc=loc, token_keep_ratio=rho, seed=seed, top1=stats["top1"],
           teacher_top1=tested["teacher_stats"]["top1"], flops_cut=tested["flops_cut"],
           token_keep=stats.get("token_keep"), keep_ties=stats.get("keep_ties"),
           branch_keep_mean=stats.get("branch_keep_mean"), history=summary["history"], seconds=time.time() - t0)
json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "history"}))
