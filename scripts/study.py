"""Attribution study at the demo's scale: where does DyVM's accuracy go, and what recipe keeps it?

    python scripts/study.py run NAME [NAME ...] [--teacher CKPT] [--threads 1]   # one result file per run
    python scripts/study.py report                                               # table + plot + JSON
    python scripts/study.py zero-shot         # the teacher pruned by each selection rule, no fine-tuning

Every run fine-tunes the centred demo's teacher (the shipped 28-px checkpoint, dyvm.demo.CENTRED_TEACHER_FILE,
unless --teacher) for that demo's budget (CENTRED_PLAN: 2 epochs on the 55,000 training images, batch 128, since
2026-11-30 19:10; the runs before it used 1 epoch, which each run's config records) and evaluates on the full
Fashion-MNIST test split. Results go to docs/study/runs/NAME.json, written when the run ends. (`dyvm demo` itself
moved to garments on a 40-px canvas in session 45; this study and rounds 1-21 are about the centred images.)
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "docs", "study")

# The study's base operating point (the paper's placement scaled to 8 layers, ρ 0.7, β 0.8); rows override
# it. It is not the demo's current point (layers 5, 6, 7, ρ 0.5, β 0.6), which the study found.
BASE = dict(pruning_loc=[2, 4, 6], token_keep_ratio=0.7, block_keep_ratio=0.8)
LATE = [5, 6, 7]  # pruning before the last three of the teacher's 8 layers
# `dyvm demo`'s default plan on the centred 28-px images until session 44 (the budget of every run here)
CENTRED_PLAN = dict(pruning_loc=LATE, token_keep_ratio=0.3, block_keep_ratio=0.8, finetune_epochs=2, finetune_lr=3e-3,
                    subset=None, test_images=None, drop_bar=1.5, keep_ratio_source="decisions", keep_guidance=0.0)
CENTRED = dict(img_size=28, canvas=0)  # finetune_options overrides: the centred images


def at_point(pruning_loc: list, rho: float, beta: float, **options) -> dict:
    """A row's train() options at a pruning point: layers ``pruning_loc``, ρ, β, plus ``options``."""
    return dict(options, pruning_loc=list(pruning_loc), token_keep_ratio=rho, block_keep_ratio=beta)


def rule_rows(suffix: str, pruning_loc: list, rho: float, beta: float) -> dict:
    """DyVM (Gumbel-top-k) and the trained static / random baselines at one pruning point."""
    where = f"layers {', '.join(map(str, pruning_loc))}, ρ {rho}, β {beta}"
    return {f"topk_{suffix}": (f"Gumbel-top-k sampler, {where}", at_point(pruning_loc, rho, beta, token_sampler="topk")),
            f"static_{suffix}": (f"trained static pruning, {where}", at_point(pruning_loc, rho, beta, score="static")),
            f"random_{suffix}": (f"trained random pruning, {where}", at_point(pruning_loc, rho, beta, score="random"))}


# name: (description, train() options on top of the demo's fine-tuning options and BASE)
RUNS = {
    "control": ("teacher fine-tuned, no pruning, all branches on (the cost of fine-tuning itself)",
                dict(use_pruning=False, use_routers=False)),
    "token_only": ("token pruning only (no routers)", dict(token_sampler="gumbel", use_routers=False)),
    "block_only": ("branch selection only (no token pruning)", dict(use_pruning=False)),
    "both_lr1e-3": ("DyVM at the previous demo lr 1e-3", dict(token_sampler="gumbel", lr=1e-3)),
    "both": ("DyVM: token pruning and branch selection (the demo's operating point)", dict(token_sampler="gumbel")),
    "both_seed1": ("DyVM, seed 1", dict(token_sampler="gumbel", seed=1)),
    "both_seed2": ("DyVM, seed 2", dict(token_sampler="gumbel", seed=2)),
    "random": ("trained random pruning (+ routers)", dict(score="random")),
    "static": ("trained static pruning (+ routers)", dict(score="static")),
    "rho0.6": ("ρ 0.6", dict(token_sampler="gumbel", token_keep_ratio=0.6)),
    "rho0.8": ("ρ 0.8", dict(token_sampler="gumbel", token_keep_ratio=0.8)),
    "beta0.7": ("β 0.7", dict(token_sampler="gumbel", block_keep_ratio=0.7)),
    "beta0.9": ("β 0.9", dict(token_sampler="gumbel", block_keep_ratio=0.9)),
    "rho0.6_beta0.7": ("ρ 0.6, β 0.7", dict(token_sampler="gumbel", token_keep_ratio=0.6, block_keep_ratio=0.7)),
    "rho0.8_beta0.9": ("ρ 0.8, β 0.9", dict(token_sampler="gumbel", token_keep_ratio=0.8, block_keep_ratio=0.9)),
    "rho0.8_beta0.6": ("ρ 0.8, β 0.6", dict(token_sampler="gumbel", token_keep_ratio=0.8, block_keep_ratio=0.6)),
    "rho0.8_beta0.5": ("ρ 0.8, β 0.5", dict(token_sampler="gumbel", token_keep_ratio=0.8, block_keep_ratio=0.5)),
    "rho0.9_beta0.5": ("ρ 0.9, β 0.5 (more of the cut from branch selection)",
                       dict(token_sampler="gumbel", token_keep_ratio=0.9, block_keep_ratio=0.5)),
    "topk": ("Gumbel-top-k token sampler in training (exactly inference's kept count per image)",
             dict(token_sampler="topk")),
    "topk_rho0.9_beta0.5": ("Gumbel-top-k sampler, ρ 0.9, β 0.5",
                            dict(token_sampler="topk", token_keep_ratio=0.9, block_keep_ratio=0.5)),
    "topk_rho0.8_beta0.6": ("Gumbel-top-k sampler, ρ 0.8, β 0.6",
                            dict(token_sampler="topk", token_keep_ratio=0.8, block_keep_ratio=0.6)),
    "topk_loc567_rho0.6_beta0.6": ("Gumbel-top-k sampler, pruning before layers 5, 6, 7, ρ 0.6, β 0.6",
                                   dict(token_sampler="topk", pruning_loc=[5, 6, 7], token_keep_ratio=0.6,
                                        block_keep_ratio=0.6)),
    "topk_slotprior": ("Gumbel-top-k sampler + learnt slot prior starting at static selection",
                       dict(token_sampler="topk", slot_prior=True)),
    "topk_loc567_rho0.5_beta0.6": ("Gumbel-top-k sampler, pruning before layers 5, 6, 7, ρ 0.5, β 0.6",
                                   dict(token_sampler="topk", pruning_loc=[5, 6, 7], token_keep_ratio=0.5,
                                        block_keep_ratio=0.6)),
    "topk_loc567_rho0.5_beta0.6_seed1": ("the demo's operating point (layers 5, 6, 7, ρ 0.5, β 0.6, top-k), seed 1",
                                         dict(token_sampler="topk", pruning_loc=[5, 6, 7], token_keep_ratio=0.5,
                                              block_keep_ratio=0.6, seed=1)),
    "topk_loc567_rho0.4_beta0.7": ("Gumbel-top-k sampler, pruning before layers 5, 6, 7, ρ 0.4, β 0.7",
                                   dict(token_sampler="topk", pruning_loc=[5, 6, 7], token_keep_ratio=0.4,
                                        block_keep_ratio=0.7)),
    "topk_loc567_rho0.5_beta0.6_2ep": ("the demo's operating point, 2 epochs (twice the budget)",
                                       dict(token_sampler="topk", pruning_loc=[5, 6, 7], token_keep_ratio=0.5,
                                            block_keep_ratio=0.6, epochs=2)),
    "static_loc567_rho0.5_beta0.6_2ep": ("trained static pruning at the demo's operating point, 2 epochs",
                                         dict(score="static", pruning_loc=[5, 6, 7], token_keep_ratio=0.5,
                                              block_keep_ratio=0.6, epochs=2)),
    "topk_loc567_rho0.6_beta0.5": ("Gumbel-top-k sampler, pruning before layers 5, 6, 7, ρ 0.6, β 0.5",
                                   dict(token_sampler="topk", pruning_loc=[5, 6, 7], token_keep_ratio=0.6,
                                        block_keep_ratio=0.5)),
    "topk0_loc567_rho0.6_beta0.6": ("top-k without noise (inference's own selection), layers 5, 6, 7, ρ 0.6, β 0.6",
                                    dict(token_sampler="topk", token_noise=0.0, pruning_loc=[5, 6, 7],
                                         token_keep_ratio=0.6, block_keep_ratio=0.6)),
    "topk0": ("top-k without noise in training (inference's own selection)",
              dict(token_sampler="topk", token_noise=0.0)),
    "static_loc567_rho0.5_beta0.6": ("trained static pruning, layers 5, 6, 7, ρ 0.5, β 0.6",
                                     dict(score="static", pruning_loc=[5, 6, 7], token_keep_ratio=0.5,
                                          block_keep_ratio=0.6)),
    "random_loc567_rho0.5_beta0.6": ("trained random pruning, layers 5, 6, 7, ρ 0.5, β 0.6",
                                     dict(score="random", pruning_loc=[5, 6, 7], token_keep_ratio=0.5,
                                          block_keep_ratio=0.6)),
    "topk_loc456_rho0.55_beta0.6": ("Gumbel-top-k sampler, pruning before layers 4, 5, 6, ρ 0.55, β 0.6",
                                    dict(token_sampler="topk", pruning_loc=[4, 5, 6], token_keep_ratio=0.55,
                                         block_keep_ratio=0.6)),
    "static_loc456_rho0.55_beta0.6": ("trained static pruning, layers 4, 5, 6, ρ 0.55, β 0.6",
                                      dict(score="static", pruning_loc=[4, 5, 6], token_keep_ratio=0.55,
                                           block_keep_ratio=0.6)),
    "slotprior0_loc567_rho0.5_beta0.6": ("learnt slot prior starting at static selection, top-k without noise, "
                                         "layers 5, 6, 7, ρ 0.5, β 0.6",
                                         at_point(LATE, 0.5, 0.6, token_sampler="topk", slot_prior=True,
                                                  token_noise=0.0)),
    "slotprior_loc567_rho0.5_beta0.6": ("learnt slot prior starting at static selection, Gumbel-top-k, "
                                        "layers 5, 6, 7, ρ 0.5, β 0.6",
                                        at_point(LATE, 0.5, 0.6, token_sampler="topk", slot_prior=True)),
    **rule_rows("loc567_rho0.3_beta0.8", LATE, 0.3, 0.8),
    **rule_rows("loc456_rho0.5_beta0.9", [4, 5, 6], 0.5, 0.9),
    "topk0_loc567_rho0.3_beta0.8": ("top-k without noise in training, layers 5, 6, 7, ρ 0.3, β 0.8",
                                    at_point(LATE, 0.3, 0.8, token_sampler="topk", token_noise=0.0)),
    "slotprior0_loc567_rho0.3_beta0.8": ("learnt slot prior starting at static selection, top-k without noise, "
                                         "layers 5, 6, 7, ρ 0.3, β 0.8",
                                         at_point(LATE, 0.3, 0.8, token_sampler="topk", slot_prior=True,
                                                  token_noise=0.0)),
    "topk_loc567_rho0.3_beta0.8_seed1": ("Gumbel-top-k sampler, seed 1, layers 5, 6, 7, ρ 0.3, β 0.8",
                                         at_point(LATE, 0.3, 0.8, token_sampler="topk", seed=1)),
    "static_loc567_rho0.3_beta0.8_seed1": ("trained static pruning, seed 1, layers 5, 6, 7, ρ 0.3, β 0.8",
                                           at_point(LATE, 0.3, 0.8, score="static", seed=1)),
    **{f"{rule}_loc567_rho0.3_beta0.8_seed{seed}": (f"{what}, seed {seed}, layers 5, 6, 7, ρ 0.3, β 0.8",
                                                     at_point(LATE, 0.3, 0.8, seed=seed, **opts))
       for seed in (2, 3) for rule, what, opts in (("topk", "Gumbel-top-k sampler", dict(token_sampler="topk")),
                                                   ("static", "trained static pruning", dict(score="static")))},
    "topk_1ep_rerun": ("Gumbel-top-k sampler at the base point, 1 epoch, re-run with the code of 2026-11-30 23:00",
                       dict(token_sampler="topk", epochs=1)),
    "topk_probe_1ep": ("Gumbel-top-k + pruned-token gradient (zero-valued probe into the class token), base point, "
                       "1 epoch", dict(token_sampler="topk", pruned_token_grad=True, epochs=1)),
    "stratified_1ep": ("stratified sampler (the best token of each of k contiguous strata, Gumbel-max in training), "
                       "base point, 1 epoch", dict(token_sampler="stratified", epochs=1)),
    "stratified0_1ep": ("stratified sampler without noise (inference's own choice per stratum), base point, 1 epoch",
                        dict(token_sampler="stratified", token_noise=0.0, epochs=1)),
    "stratified_loc567_rho0.3_beta0.8": ("stratified sampler, layers 5, 6, 7, ρ 0.3, β 0.8",
                                         at_point(LATE, 0.3, 0.8, token_sampler="stratified")),
    "static_1ep_rerun": ("trained static pruning at the base point, 1 epoch, re-run with the code of 2026-11-30 23:00",
                         dict(score="static", epochs=1)),
    "block_only_beta0.5": ("branch selection only, β 0.5", dict(use_pruning=False, block_keep_ratio=0.5)),
    "dyn_lr_100": ("predictors/routers at 100× the backbone lr", dict(token_sampler="gumbel", dynamic_lr_scale=100.0)),
    "lr1e-4_dyn100": ("backbone lr 1e-4, predictors/routers at 100× (1e-2 per 512 images)",
                      dict(token_sampler="gumbel", lr=1e-4, dynamic_lr_scale=100.0)),
    "lr3e-4_dyn30": ("backbone lr 3e-4, predictors/routers at 30×", dict(token_sampler="gumbel", lr=3e-4, dynamic_lr_scale=30.0)),
    "loc357_rho0.6": ("pruning before layers 3, 5, 7 with ρ 0.6", dict(token_sampler="gumbel", pruning_loc=[3, 5, 7], token_keep_ratio=0.6)),
    "loc357_rho0.7_beta0.7": ("pruning before layers 3, 5, 7, ρ 0.7, β 0.7",
                              dict(token_sampler="gumbel", pruning_loc=[3, 5, 7], token_keep_ratio=0.7, block_keep_ratio=0.7)),
    "lr8e-3": ("backbone lr 8e-3 (the teacher's own peak lr)", dict(token_sampler="gumbel", lr=8e-3)),
    "lr3e-3_warmup0.5": ("backbone lr 3e-3, keep-ratio warm-up over the first 50% of steps",
                         dict(token_sampler="gumbel", lr=3e-3, ratio_warmup=0.5)),
    "lr3e-3_2ep": ("backbone lr 3e-3, 2 epochs (twice the demo's budget)", dict(token_sampler="gumbel", lr=3e-3, epochs=2)),
    "lr3e-3_bs32": ("backbone lr 3e-3 at batch 32 (4× the steps; lr scaled to the same per-image rate)",
                    dict(token_sampler="gumbel", lr=1.2e-2, batch_size=32)),
    "paper": ("the paper recipe's switches (no keep prior, predictors/routers at the backbone lr), at the demo's lr",
              dict(token_sampler="gumbel", recipe="paper")),
    "no_keep_prior": ("dyvm recipe without the keep prior", dict(token_sampler="gumbel", keep_prior=False)),
    "dyn_lr_1": ("dyvm recipe with predictors/routers at the backbone lr", dict(token_sampler="gumbel", dynamic_lr_scale=1.0)),
    "warmup0.3": ("keep-ratio warm-up over the first 30% of steps", dict(token_sampler="gumbel", ratio_warmup=0.3)),
    "warmup0.6": ("keep-ratio warm-up over the first 60% of steps", dict(token_sampler="gumbel", ratio_warmup=0.6)),
    "lr3e-4": ("backbone lr 3e-4 (per 512 images)", dict(token_sampler="gumbel", lr=3e-4)),
    "lr3e-3": ("backbone lr 3e-3 (per 512 images)", dict(token_sampler="gumbel", lr=3e-3)),
    "distill2": ("distillation weight 2 (0.5 in the paper)", dict(token_sampler="gumbel", distill_weight=2.0)),
}
# The random / static rows above ran before `baseline_masks` existed, with the nested masks (the inference rule
# per image in training too); the rows below use the official Pruning_Strategy masks (the models' default).
for _desc, _options in RUNS.values():
    if _options.get("score") in ("random", "static"):
        _options.setdefault("baseline_masks", "nested")
RUNS.update({
    "official_static_loc567_rho0.3_beta0.8": ("trained static pruning with the official ablation's masks (one evenly "
                                              "spaced mask over all slots, pruned tokens revived), layers 5, 6, 7, "
                                              "ρ 0.3, β 0.8",
                                              at_point(LATE, 0.3, 0.8, score="static", baseline_masks="official")),
    "official_random_loc567_rho0.3_beta0.8": ("trained random pruning with the official ablation's masks (random "
                                              "slots of the whole batch, pruned tokens revived), layers 5, 6, 7, "
                                              "ρ 0.3, β 0.8",
                                              at_point(LATE, 0.3, 0.8, score="random", baseline_masks="official")),
    "official_static_loc456_rho0.5_beta0.9": ("trained static pruning with the official ablation's masks, layers 4, 5, "
                                              "6, ρ 0.5, β 0.9",
                                              at_point([4, 5, 6], 0.5, 0.9, score="static", baseline_masks="official")),
    "stratified_loc456_rho0.5_beta0.9": ("stratified sampler, layers 4, 5, 6, ρ 0.5, β 0.9",
                                         at_point([4, 5, 6], 0.5, 0.9, token_sampler="stratified")),
    "official_static_1ep": ("trained static pruning with the official ablation's masks, base point, 1 epoch",
                            dict(score="static", baseline_masks="official", epochs=1)),
    "official_random_1ep": ("trained random pruning with the official ablation's masks, base point, 1 epoch",
                            dict(score="random", baseline_masks="official", epochs=1)),
    "topk_probe_loc567_rho0.3_beta0.8": ("Gumbel-top-k + pruned-token gradient (zero-valued probe into the class "
                                         "token), layers 5, 6, 7, ρ 0.3, β 0.8",
                                         at_point(LATE, 0.3, 0.8, token_sampler="topk", pruned_token_grad=True)),
    "topk_probe_loc567_rho0.3_beta0.8_seed1": ("Gumbel-top-k + pruned-token gradient, seed 1, layers 5, 6, 7, ρ 0.3, "
                                               "β 0.8", at_point(LATE, 0.3, 0.8, token_sampler="topk",
                                                                 pruned_token_grad=True, seed=1)),
    # ninth round: predictors and routers at the backbone's lr (less churn in the selection during training)
    **{f"topk_dynlr1_loc567_rho0.3_beta0.8_seed{seed}": (
        f"Gumbel-top-k sampler, predictors/routers at the backbone lr (1x, not 20x), seed {seed}, layers 5, 6, 7, "
        "ρ 0.3, β 0.8", at_point(LATE, 0.3, 0.8, token_sampler="topk", dynamic_lr_scale=1.0, seed=seed))
       for seed in range(4)},
    # tenth round: the selection forced to the frozen teacher's own token influence (not deployable: an upper bound
    # for a predictor taught to imitate it), in training and at evaluation
    **{f"influence_loc567_rho0.3_beta0.8_seed{seed}": (
        f"selection by the teacher's class-token influence (oracle, not deployable), seed {seed}, layers 5, 6, 7, "
        "ρ 0.3, β 0.8", at_point(LATE, 0.3, 0.8, token_sampler="topk", seed=seed, selection="teacher_influence"))
       for seed in range(2)},
    # eleventh round: the branch keep-ratio loss weighted by each layer's branch cost at inference, so the routers
    # skip where skipping saves time (the paper's global mean lets them skip in the pruned layers, which the
    # official FLOPs count credits like a full layer's branch)
    **{f"costblock_loc567_rho0.3_beta{beta}": (
        f"branch keep loss weighted by each layer's branch cost (β {beta} of the branch compute), layers 5, 6, 7, "
        f"ρ 0.3", at_point(LATE, 0.3, beta, token_sampler="topk", block_loss_weighting="cost"))
       for beta in (0.7, 0.76)},
    # twelfth round: an earlier point (before layers 4, 5, 6, ρ 0.6, β 0.8), where which tokens survive matters more,
    # with DyVM against both trained baselines of the official ablation and the nested ones
    **{f"{rule}_loc456_rho0.6_beta0.8{tag}": (
        f"{what}, layers 4, 5, 6, ρ 0.6, β 0.8" + (f", seed {seed}" if seed else ""),
        at_point([4, 5, 6], 0.6, 0.8, seed=seed, **opts))
       for seed, tag in ((0, ""), (1, "_seed1"))
       for rule, what, opts in (
           ("topk", "Gumbel-top-k sampler", dict(token_sampler="topk")),
           ("official_static", "trained static pruning with the official ablation's masks",
            dict(score="static", baseline_masks="official")),
           ("official_random", "trained random pruning with the official ablation's masks",
            dict(score="random", baseline_masks="official")),
           ("static", "trained static pruning (nested masks)", dict(score="static", baseline_masks="nested")),
           ("random", "trained random pruning (nested masks)", dict(score="random", baseline_masks="nested")))},
    # thirteenth round: the rows of earlier rounds with the top-k or stratified sampler ran with a keep-ratio loss
    # over the live tokens only once training dropped the pruned tail (0.088 at this point in place of ~2e-4;
    # its gradient pushed every live token's p(keep) down at stages 2 and 3); the same rows after the fix
    **{f"topk_ratiofix_loc567_rho0.3_beta0.8_seed{seed}": (
        f"Gumbel-top-k sampler, keep-ratio loss over all M slots (the fix), seed {seed}, layers 5, 6, 7, ρ 0.3, β 0.8",
        at_point(LATE, 0.3, 0.8, token_sampler="topk", seed=seed)) for seed in range(4)},
    **{f"stratified_ratiofix_loc567_rho0.3_beta0.8_seed{seed}": (
        f"stratified sampler, keep-ratio loss over all M slots (the fix), seed {seed}, layers 5, 6, 7, ρ 0.3, β 0.8",
        at_point(LATE, 0.3, 0.8, token_sampler="stratified", seed=seed)) for seed in range(2)},
    # fourteenth round: static selection's spacing with other tokens in every image (a random phase per image)
    **{f"shifted_static_loc567_rho0.3_beta0.8_seed{seed}": (
        f"evenly spaced tokens from a random phase per image (a probe), seed {seed}, layers 5, 6, 7, ρ 0.3, β 0.8",
        at_point(LATE, 0.3, 0.8, score="static", seed=seed, selection="shifted_static")) for seed in range(2)},
    # fifteenth round: an earlier placement (layers 4, 5, 6) after the keep-ratio fix, where the official ablations
    # train on revived tokens that inference never sees; more tokens against fewer branches at ~37% cut
    **{f"topk_ratiofix_loc456_rho{rho}_beta{beta}{'_seed%d' % seed if seed else ''}": (
        f"Gumbel-top-k sampler, keep-ratio loss over all M slots, layers 4, 5, 6, ρ {rho}, β {beta}"
        + (f", seed {seed}" if seed else ""), at_point([4, 5, 6], rho, beta, token_sampler="topk", seed=seed))
       for rho, beta in ((0.5, 0.9), (0.65, 0.7), (0.7, 0.6)) for seed in range(2)},
    **{f"official_{rule}_loc456_rho{rho}_beta{beta}": (
        f"trained {rule} pruning with the official ablation's masks, layers 4, 5, 6, ρ {rho}, β {beta}",
        at_point([4, 5, 6], rho, beta, score=rule, baseline_masks="official"))
       for rho, beta in ((0.65, 0.7), (0.7, 0.6)) for rule in ("static", "random")},
    # ... and at the demo's point, a predictor with a learnt positional prior that starts at static selection
    # (the fourteenth round: the backbone gains from seeing the same tokens in every image)
    **{f"slotprior_ratiofix_loc567_rho0.3_beta0.8_seed{seed}": (
        f"learnt slot prior starting at static selection, Gumbel-top-k, keep-ratio loss over all M slots, seed {seed}, "
        "layers 5, 6, 7, ρ 0.3, β 0.8", at_point(LATE, 0.3, 0.8, token_sampler="topk", slot_prior=True, seed=seed))
       for seed in range(2)},
    # ... and the paper's layout in training: the pruned tokens stay at the end of the sequence, masked, so their
    # keep decisions get gradients through the masks (the backward SSM branch reads them before the kept tokens);
    # dropping the tail (since edbdb08) keeps the values and loses those gradients
    **{f"topk_tail_loc567_rho0.3_beta0.8_seed{seed}": (
        f"Gumbel-top-k sampler, the pruned tail kept in training (the paper's layout), seed {seed}, layers 5, 6, 7, "
        "ρ 0.3, β 0.8", at_point(LATE, 0.3, 0.8, token_sampler="topk", drop_pruned_tail=False, seed=seed))
       for seed in range(4)},
    "official_random_loc456_rho0.5_beta0.9": ("trained random pruning with the official ablation's masks, layers 4, "
                                              "5, 6, ρ 0.5, β 0.9",
                                              at_point([4, 5, 6], 0.5, 0.9, score="random", baseline_masks="official")),
    # seventeenth round: the top-k sampler's keep-ratio loss on its decisions (whose mean is ρ by construction) let the
    # predictors saturate (every keep log-probability 0 at the demo DyVM's first stage: inference's top-k chose among
    # ties, the same slots for every image); the loss on the predicted p(keep) instead
    **{f"topk_probs_loc567_rho0.3_beta0.8_seed{seed}": (
        f"Gumbel-top-k sampler, keep-ratio loss on the predicted p(keep) (not the decisions), seed {seed}, layers 5, "
        "6, 7, ρ 0.3, β 0.8", at_point(LATE, 0.3, 0.8, token_sampler="topk", keep_ratio_source="probabilities",
                                       seed=seed)) for seed in range(2)},
    "topk0_probs_loc567_rho0.3_beta0.8_seed0": (
        "Gumbel-top-k without noise (inference's own top-k in training), keep-ratio loss on the predicted p(keep), "
        "seed 0, layers 5, 6, 7, ρ 0.3, β 0.8",
        at_point(LATE, 0.3, 0.8, token_sampler="topk", token_noise=0.0, keep_ratio_source="probabilities", seed=0)),
})


# ----------------------------------------------------------------------------------------- oracle selection
@torch.no_grad()
def teacher_influence(teacher, x: torch.Tensor, first: int, layers: Optional[list] = None) -> dict:
    """{layer: (B, M) each patch's share of the influence on the class token} for layers ``first``.. of ``teacher``
    (a Vim), or for ``layers`` only where given: the library's
    :meth:`~dyvm.models.vim.VisionMamba.class_token_influence` (since session 43; before it, this script's own copy
    read position L // 2, on the demo's 50-token sequences the patch token after the class token at 24)."""
    layers = list(range(first, teacher.depth)) if layers is None else list(layers)
    out = teacher.forward_detailed(x, return_layers=True)
    return dict(zip(layers, teacher.class_token_influence(out.layer_residual, layers)))


class ForcedSelection:
    """While active (``with``), every DyVM keeps the patches of :meth:`masks` at each stage, in training (forced
    keep masks) and at inference (forced keep indices)."""

    def masks(self, model, x: torch.Tensor) -> list:
        """S × (B, M) bool keep masks in patch order, nested, exactly each stage's count."""
        raise NotImplementedError

    def __enter__(self):
        from dyvm.models.dyvm import DyVM

        self.saved = train, infer = DyVM.forward_train, DyVM.forward_inference
        selection = self

        def forward_train(model, x, noise=None, keep_masks=None, gates=None):
            return train(model, x, noise, selection.masks(model, x) if keep_masks is None else keep_masks, gates)

        def forward_inference(model, x, keep_indices=None, gates=None, return_layers=False):
            if keep_indices is None and model.pruning_loc:
                keep_indices = selection.keep_indices(model, x)
            return infer(model, x, keep_indices, gates, return_layers)

        DyVM.forward_train, DyVM.forward_inference = forward_train, forward_inference
        return self

    @staticmethod
    def nested_top_k(stage_scores: list, counts: list) -> list:
        """S × (B, M) bool masks: at each stage the ``counts[k]`` patches of largest ``stage_scores[k]`` (B, M) among
        those the previous stage kept (nested, exactly each stage's count)."""
        live, masks = None, []
        for score, keep in zip(stage_scores, counts):
            if live is not None:
                score = score.masked_fill(~live, float("-inf"))
            live = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(keep, 1).indices, True)
            masks.append(live)
        return masks

    def keep_indices(self, model, x: torch.Tensor, *args) -> list:
        """The masks (``args`` passed on to :meth:`masks`) as inference's forced keep sets: S × (B, K_s) ascending
        patch indices."""
        return [m.nonzero()[:, 1].view(x.shape[0], -1) for m in self.masks(model, x, *args)]

    def __exit__(self, *exc):
        from dyvm.models.dyvm import DyVM

        DyVM.forward_train, DyVM.forward_inference = self.saved


class InfluenceSelection(ForcedSelection):
    """While active, every DyVM keeps at each stage the live patches with the largest teacher influence summed over
    the stage's layer and the ones after it (nested, exactly the stage's count), in training (forced keep masks)
    and at inference (forced keep indices)."""

    def __init__(self, teacher_path: str):
        from dyvm.checkpoint import model_from_checkpoint

        self.teacher, _ = model_from_checkpoint(teacher_path)
        self.teacher.eval().requires_grad_(False)

    def masks(self, model, x: torch.Tensor, sign: float = 1.0, shares: Optional[dict] = None) -> list:
        """S × (B, M) bool keep masks in patch order (``sign`` -1: the least influential tokens instead); ``shares``:
        :func:`teacher_influence` of ``x`` if already computed."""
        if shares is None:
            shares = teacher_influence(self.teacher, x, min(model.pruning_loc))
        return self.nested_top_k([sign * sum(shares[j] for j in range(loc, self.teacher.depth))
                                  for loc in model.pruning_loc], model.keep_counts())


class ShiftedStaticSelection(ForcedSelection):
    """While active, every DyVM keeps at each stage k evenly spaced live patches (spacing n/k in sequence order,
    like static selection) from a random phase drawn per image and call: the same spacing as static selection, but
    other tokens in every image (a probe, not a method: is it the fixed spacing or the fixed tokens that helps?)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def masks(self, model, x: torch.Tensor) -> list:
        batch, m = x.shape[0], model.num_patches
        live, masks = torch.arange(m).expand(batch, m), []          # live patch indices, ascending (sequence order)
        for keep in model.keep_counts():
            n = live.shape[1]
            phase = torch.rand(batch, 1, generator=self.generator) * (n / keep)
            pos = (phase + torch.arange(keep)[None] * (n / keep)).floor().long().clamp(max=n - 1)
            live = live.gather(1, pos)
            masks.append(torch.zeros(batch, m, dtype=torch.bool).scatter_(1, live, True))
        return masks


@torch.no_grad()
def zero_shot(teacher_path: str) -> dict:
    """The teacher pruned at the demo's point (layers 5, 6, 7, ρ 0.3) without any fine-tuning, every branch on, by
    each selection rule, on the full test split: how much the choice of tokens matters before the backbone adapts."""
    from dyvm.demo import _test_loader
    from dyvm.models.registry import create_model
    from dyvm.weights import load_checkpoint, read_checkpoint

    oracle = InfluenceSelection(teacher_path)
    ckpt = read_checkpoint(teacher_path)
    model = create_model("dyvm_vim_tiny", **{**ckpt["config"], "pruning_loc": LATE, "token_keep_ratio": 0.3,
                                             "use_routers": False})
    load_checkpoint(model, ckpt, strict=False)   # the predictors stay untrained: no rule below reads them
    model.eval()
    rules = ("teacher_influence", "reverse_influence", "static", "random")
    correct, n = dict.fromkeys(rules + ("teacher",), 0), 0
    for x, y in _test_loader(oracle.teacher, None, None, batch_size=250, canvas=0):
        correct["teacher"] += (oracle.teacher(x).argmax(-1) == y).sum().item()
        shares = teacher_influence(oracle.teacher, x, LATE[0])   # once per batch, for both influence rules
        for rule in rules:
            if rule in ("static", "random"):
                torch.manual_seed(n)
                logits = model.configure(score=rule).forward_inference(x).logits
            else:
                keep = oracle.keep_indices(model, x, 1.0 if rule == "teacher_influence" else -1.0, shares)
                logits = model.configure(score="predictor").forward_inference(x, keep_indices=keep).logits
            correct[rule] += (logits.argmax(-1) == y).sum().item()
        n += len(y)
    return dict(top1={r: 100 * c / n for r, c in correct.items()}, images=n, keep_counts=model.keep_counts(),
                command="python scripts/study.py zero-shot", date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def test_against_teacher(checkpoint: str, teacher: str, canvas: int = 0) -> dict:
    """A fine-tuned checkpoint and its teacher on the full test split (on a ``canvas``-px canvas when set): both
    stats and the official FLOPs cut (``stats``, ``teacher_stats``, ``gflops_official``, ``flops_cut``)."""
    from dyvm.checkpoint import model_from_checkpoint
    from dyvm.demo import _test_loader
    from dyvm.evaluate import evaluate
    from dyvm.flops import flops_from_stats

    model, _ = model_from_checkpoint(checkpoint)
    loader = _test_loader(model, None, None, canvas=canvas)
    stats = evaluate(model, loader, torch.device("cpu"), progress=False)
    teacher_model, _ = model_from_checkpoint(teacher)
    tstats = evaluate(teacher_model, loader, torch.device("cpu"), progress=False)
    flops, tflops = flops_from_stats(model, stats), flops_from_stats(teacher_model, tstats)
    return dict(stats=stats, teacher_stats=tstats, gflops_official=flops["gflops_official"],
                flops_cut=1 - flops["gflops_official"] / tflops["gflops_official"])


def run(name: str, teacher: str, threads: int, subset, keep: Optional[str] = None) -> dict:
    from dyvm.demo import DemoPlan, finetune_options
    from dyvm.engine import train

    plan = DemoPlan(**CENTRED_PLAN)
    desc, extra = RUNS[name]
    selection = extra.get("selection")
    opts = finetune_options(plan, teacher, **{**dict(subset=subset, threads=threads, no_progress=True, seed=0, **CENTRED),
                                              **BASE, **{k: v for k, v in extra.items() if k != "selection"}})
    oracle = (InfluenceSelection(teacher) if selection == "teacher_influence" else
              ShiftedStaticSelection(extra.get("seed", 0)) if selection == "shifted_static" else contextlib.nullcontext())
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, oracle:
        summary = train(output=tmp, **opts)
        with open(os.path.join(tmp, "config.json")) as fh:
            config = json.load(fh)
        tested = test_against_teacher(summary["best_checkpoint"], teacher)
        if keep:  # the trained model, e.g. for latency measurements
            os.makedirs(keep, exist_ok=True)
            shutil.copy(summary["best_checkpoint"], os.path.join(keep, f"{name}.pth"))
    stats, tstats = tested["stats"], tested["teacher_stats"]
    return dict(name=name, description=desc, options=extra, top1=stats["top1"], teacher_top1=tstats["top1"],
                top1_drop=tstats["top1"] - stats["top1"], gflops_official=tested["gflops_official"],
                flops_cut=tested["flops_cut"],
                token_keep=stats.get("token_keep"), branch_keep_mean=stats.get("branch_keep_mean", 1.0),
                branch_keep=stats.get("branch_keep"),
                val_top1=summary["best_acc"], history=summary["history"], config=config,
                seconds=time.time() - t0, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                command=f"python scripts/study.py run {name}" + (f" --threads {threads}" if threads != 1 else ""))


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = os.path.join(OUT, "runs")
    rows = [json.load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder)) if f.endswith(".json")]
    order = {n: i for i, n in enumerate(RUNS)}
    rows.sort(key=lambda r: order.get(r["name"], 99))
    lines = ["| run | what | epochs | lr (per 512) | sampler | top-1 % | drop (points) | FLOPs cut (official) "
             "| token keep (measured) | branch keep |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tk = ", ".join(f"{v:.2f}" for v in r["token_keep"]) if r.get("token_keep") else "1"
        sampler = r["config"].get("token_sampler") or "gumbel"  # runs before the option existed used gumbel
        if r["config"].get("score") in ("random", "static") or not r.get("token_keep"):
            sampler = "–"
        if r.get("options", {}).get("selection"):  # a forced selection: the sampler was not used
            sampler = r["options"]["selection"].replace("_", " ") + " (oracle)"
        lines.append(f"| {r['name']} | {r['description']} | {r['config']['epochs']} | {r['config']['lr']:g} | {sampler} "
                     f"| {r['top1']:.2f} | "
                     f"{r['top1_drop']:+.2f} | "
                     f"{100 * r['flops_cut']:.1f}% | {tk} | {r['branch_keep_mean']:.3f} |")
    with open(os.path.join(OUT, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as fh:
        json.dump([{k: v for k, v in r.items() if k != "history"} for r in rows], fh, indent=1)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in rows:
        ax.scatter(100 * r["flops_cut"], r["top1"], s=25)
        ax.annotate(r["name"], (100 * r["flops_cut"], r["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if rows:
        ax.axhline(rows[0]["teacher_top1"], color="k", lw=0.8, ls="--", label="Vim teacher")
        ax.axhline(rows[0]["teacher_top1"] - 1.5, color="r", lw=0.8, ls=":", label="teacher − 1.5 points")
    ax.axvline(35, color="g", lw=0.8, ls=":", label="35% FLOPs cut")
    ax.set_xlabel("FLOPs cut vs the teacher (official convention, measured branch keep) %")
    ax.set_ylabel("top-1 % (Fashion-MNIST test, 10,000 images)")
    ax.legend(fontsize=8)
    ax.set_title("Attribution study at the demo's budget (fine-tuning epochs per run in table.md)")
    fig.savefig(os.path.join(OUT, "study.png"), dpi=110, bbox_inches="tight")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", choices=list(RUNS))
    r.add_argument("--teacher", help="teacher checkpoint (default: the shipped one)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--subset", type=int, help="training images per run (default: all, the demo's budget)")
    r.add_argument("--out", default=os.path.join(OUT, "runs"))
    r.add_argument("--keep", help="also copy each run's best checkpoint to KEEP/NAME.pth")
    sub.add_parser("report")
    z = sub.add_parser("zero-shot", help="the teacher pruned by each selection rule without fine-tuning")
    z.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "report":
        report()
        return
    from dyvm.demo import CENTRED_TEACHER_FILE as TEACHER_FILE

    if args.cmd == "zero-shot":
        torch.set_num_threads(args.threads)
        res = zero_shot(TEACHER_FILE)
        with open(os.path.join(OUT, "zero_shot_selection.json"), "w") as fh:
            json.dump(res, fh, indent=1)
        print(json.dumps(res["top1"]))
        return

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    for name in args.names:
        res = run(name, args.teacher or TEACHER_FILE, args.threads, args.subset, args.keep)
        with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
            json.dump(res, fh, indent=1)
        print(f"{name}: top-1 {res['top1']:.2f} (drop {res['top1_drop']:+.2f}), FLOPs cut {100 * res['flops_cut']:.1f}%",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
