"""The default demo's fine-tune (dyvm.demo.finetune_options, 2 threads) at another operating point, for DyVM or a
trained nested baseline, then test top-1 and the official FLOPs cut on the 10,000 test images.

Usage: python docs/study/nineteenth/finetune_point.py RULE PRUNING_LOC RHO OUTDIR [SEED]
  RULE: dyvm | dyvm_probs (the keep-ratio loss on p(keep): --keep-ratio-source probabilities) | static | random
        (the demo's trained baselines: nested masks)
  PRUNING_LOC: comma-separated layers, e.g. 5 (one stage before layer 5) or 5,6,7 (the demo's)
  RHO: the token keep ratio per stage (the demo's: 0.3)

Nineteenth round: with one pruning stage there is no per-image choice of the last few tokens (where the eighteenth
round found DyVM losing to static), so does a single learnt stage match or beat a single static one?
"""
import json, os, sys, time
import torch
from dyvm.demo import PLANS, _test_loader, finetune_options, shipped_teacher
from dyvm.engine import train
from dyvm.evaluate import evaluate
from dyvm.checkpoint import model_from_checkpoint
from dyvm.flops import flops_from_stats

rule, loc, rho, out = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], float(sys.argv[3]), sys.argv[4]
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
RULES = {"dyvm": {}, "dyvm_probs": dict(keep_ratio_source="probabilities"), "static": dict(score="static", baseline_masks="nested"),
         "random": dict(score="random", baseline_masks="nested")}
if rule not in RULES:
    raise SystemExit(f"RULE must be one of {', '.join(RULES)}")
teacher, _ = shipped_teacher()
t0 = time.time()
summary = train(**finetune_options(PLANS["default"], teacher, output=out, seed=seed, pruning_loc=loc,
                                   token_keep_ratio=rho, threads=2, no_progress=True, **RULES[rule]))
model, _ = model_from_checkpoint(summary["best_checkpoint"])
loader = _test_loader(model, None, None)
stats = evaluate(model, loader, torch.device("cpu"), progress=False)
tm, _ = model_from_checkpoint(teacher)
tstats = evaluate(tm, loader, torch.device("cpu"), progress=False)
f, tf = flops_from_stats(model, stats), flops_from_stats(tm, tstats)
res = dict(rule=rule, pruning_loc=loc, token_keep_ratio=rho, seed=seed, top1=stats["top1"],
           teacher_top1=tstats["top1"], flops_cut=1 - f["gflops_official"] / tf["gflops_official"],
           token_keep=stats.get("token_keep"), keep_ties=stats.get("keep_ties"),
           branch_keep_mean=stats.get("branch_keep_mean"), history=summary["history"], seconds=time.time() - t0)
json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "history"}))
