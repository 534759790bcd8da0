"""The default demo's DyVM fine-tune (or a trained baseline) alone (same options, seed 0 unless given, 2 threads), with a recipe variant patched in;
then test top-1 on the 10,000 test images. Usage: python docs/study/sixteenth/finetune_variant.py VARIANT OUTDIR [SEED]"""
import json, os, sys, time
import torch
from dyvm.demo import PLANS, _test_loader, finetune_options, shipped_teacher
from dyvm.engine import train
from dyvm.evaluate import evaluate
from dyvm.checkpoint import model_from_checkpoint
from dyvm.flops import flops_from_stats
from dyvm.models.dyvm import DyVM

variant, out = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # the demo's seed by default
if variant == "detach_input":  # the predictor reads the stream without a gradient into the backbone
    orig = DyVM.predictor_input
    def predictor_input(self, k, seq, stats, positions=None):
        x = orig(self, k, seq, stats, positions)
        return x.detach() if self.training else x
    DyVM.predictor_input = predictor_input
elif variant not in ("none", "official_static", "official_random", "nested_static"):
    raise SystemExit(f"unknown variant {variant}")
# the trained baselines: static / random selection in training and at inference, the official ablation's masks
# (one evenly spaced mask / random slots of the batch over all slots) or the demo's nested ones
rule = dict(official_static=dict(score="static", baseline_masks="official"),
            official_random=dict(score="random", baseline_masks="official"),
            nested_static=dict(score="static", baseline_masks="nested")).get(variant, dict(score="predictor"))
teacher, _ = shipped_teacher()
t0 = time.time()
summary = train(**finetune_options(PLANS["default"], teacher, output=out, seed=seed, **rule, threads=2,
                                   no_progress=True))
model, _ = model_from_checkpoint(summary["best_checkpoint"])
loader = _test_loader(model, None, None)
stats = evaluate(model, loader, torch.device("cpu"), progress=False)
tm, _ = model_from_checkpoint(teacher)
tstats = evaluate(tm, loader, torch.device("cpu"), progress=False)
f, tf = flops_from_stats(model, stats), flops_from_stats(tm, tstats)
res = dict(variant=variant, seed=seed, top1=stats["top1"], teacher_top1=tstats["top1"],
           flops_cut=1 - f["gflops_official"] / tf["gflops_official"], token_keep=stats.get("token_keep"),
           branch_keep_mean=stats.get("branch_keep_mean"), history=summary["history"], seconds=time.time() - t0)
json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "history"}))
