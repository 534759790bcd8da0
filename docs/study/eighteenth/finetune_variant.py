"""The default demo's DyVM fine-tune alone (the demo's options from dyvm.demo.finetune_options, 2 threads, seed 0
unless given) with a variant patched in, then test top-1 on the 10,000 test images.

Usage: python docs/study/eighteenth/finetune_variant.py VARIANT OUTDIR [SEED]

Variants (eighteenth round: does training on inference's own selection at the end, after sampling early, close the
gap to trained static?):
  probs_anneal_half   keep-ratio loss on p(keep); the top-k sampler's Gumbel noise scale goes linearly from 1 to 0
                      over the first half of the steps, then 0 (the second epoch trains on inference's top-k)
  probs_anneal_full   the same, 1 to 0 over all the steps
  decisions_anneal_half  the default keep-ratio source with the first schedule
  slotprior_topk0_probs  a predictor that starts at static selection (--slot-prior), trains on inference's own top-k
                      (--token-noise 0) with the keep-ratio loss on p(keep): static at the start, deviations learnt
  dyvm_no_token_mse / static_no_token_mse / random_no_token_mse
                      the demo's DyVM / trained nested static / trained nested random without the distillation's
                      kept-token MSE (the KL on the logits stays): static keeps background corners in the last two
                      stages, whose teacher tokens are easy to match (train_token_mse 0.05 against DyVM's 0.16)
  keepends_probs      the keep-ratio loss on p(keep) and a slot prior of +8 at each stage's first and last live slot
                      (0 elsewhere, learnt like --slot-prior's): the two ends of the sequence, whose outputs in a
                      bidirectional SSM summarise the whole sequence (static's linspace always keeps them), are kept,
                      the predictor ranks the rest per image
  static_mid          trained nested static selection with the evenly spaced slots centred in their strata,
                      floor((2j+1) n / 2k), which never keeps the sequence's ends (static keeps floor(j (n-1) / (k-1)))
"""
import json, os, sys, time
import torch
from dyvm.demo import PLANS, _test_loader, finetune_options, shipped_teacher
from dyvm.engine import train
from dyvm.evaluate import evaluate
from dyvm.checkpoint import model_from_checkpoint
from dyvm.flops import flops_from_stats
from dyvm.models.dyvm import DyVM

variant, out = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
# variant: (train() overrides, the noise schedule's fraction of the run or None for a constant scale)
VARIANTS = {"probs_anneal_half": (dict(keep_ratio_source="probabilities"), 0.5),
            "probs_anneal_full": (dict(keep_ratio_source="probabilities"), 1.0),
            "decisions_anneal_half": (dict(keep_ratio_source="decisions"), 0.5),
            "slotprior_topk0_probs": (dict(keep_ratio_source="probabilities", slot_prior=True, token_noise=0.0), None),
            "dyvm_no_token_mse": (dict(), None),
            "static_no_token_mse": (dict(score="static", baseline_masks="nested"), None),
            "random_no_token_mse": (dict(score="random", baseline_masks="nested"), None),
            "keepends_probs": (dict(keep_ratio_source="probabilities", slot_prior=True), None),
            "static_mid": (dict(score="static", baseline_masks="nested"), None)}
if variant not in VARIANTS:
    raise SystemExit(f"unknown variant {variant}")
overrides, fraction = VARIANTS[variant]
plan = PLANS["default"]
steps_total = plan.finetune_epochs * (55000 // 128)  # the demo's loader drops the last partial batch
step = [0]
orig = DyVM.forward_train


def forward_train(self, *args, **kwargs):
    # the Gumbel noise scale of this training step: 1 -> 0 over `fraction` of the run, then 0
    self.token_noise = max(0.0, 1.0 - step[0] / (fraction * steps_total))
    step[0] += 1
    return orig(self, *args, **kwargs)


if fraction is not None:
    DyVM.forward_train = forward_train
if variant.startswith("keepends"):
    def ends_prior(self):
        for predictor in self.score_predictors:
            if predictor.slot_bias is not None:
                with torch.no_grad():
                    predictor.slot_bias.zero_()[[0, -1]] = 8.0

    DyVM._init_slot_priors = ends_prior
if variant == "static_mid":
    import dyvm.models.dyvm as dyvm_module
    select = dyvm_module.select_keep

    def centred_static(source, logp, n_alive, k, *args, **kwargs):
        if source != "static":
            return select(source, logp, n_alive, k, *args, **kwargs)
        if n_alive is None:
            n_alive = torch.full((logp.shape[0],), logp.shape[1], dtype=torch.long)
        steps = torch.arange(k, device=n_alive.device)[None]
        return (2 * steps + 1) * n_alive[:, None] // (2 * k)

    dyvm_module.select_keep = centred_static
if variant.endswith("_no_token_mse"):
    from dyvm.losses import DyVMLoss
    init = DyVMLoss.__init__

    def no_token_mse(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.token_distill = False

    DyVMLoss.__init__ = no_token_mse
teacher, _ = shipped_teacher()
t0 = time.time()
summary = train(**finetune_options(plan, teacher, output=out, seed=seed, **overrides, threads=2,
                                   no_progress=True))
model, _ = model_from_checkpoint(summary["best_checkpoint"])
loader = _test_loader(model, None, None)
stats = evaluate(model, loader, torch.device("cpu"), progress=False)
tm, _ = model_from_checkpoint(teacher)
tstats = evaluate(tm, loader, torch.device("cpu"), progress=False)
f, tf = flops_from_stats(model, stats), flops_from_stats(tm, tstats)
res = dict(variant=variant, seed=seed, top1=stats["top1"], teacher_top1=tstats["top1"], training_forwards=step[0],
           flops_cut=1 - f["gflops_official"] / tf["gflops_official"], token_keep=stats.get("token_keep"),
           keep_ties=stats.get("keep_ties"), branch_keep_mean=stats.get("branch_keep_mean"),
           history=summary["history"], seconds=time.time() - t0)
json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)
print(json.dumps({k: v for k, v in res.items() if k != "history"}))
