"""Twenty-second round: does learnt token selection beat static selection where the garment moves?

Every Fashion-MNIST image (both splits, all 70,000) is placed on a black 56 x 56 canvas at an offset drawn once
per image (uniform in 0..28 on each axis, from a fixed seed per split), and the Vim sees it through 8-px patches:
49 patch tokens as in the demo (same sequence length, same cost a step), of which the garment covers 16-25 and
the rest is background. The demo's recipe otherwise: a teacher trained with TEACHER_RECIPE's options, then DyVM
and the trained nested static / random baselines fine-tuned from it with the demo's fine-tuning options.

Usage:
  python docs/study/twentysecond/canvas.py teacher OUTDIR [EPOCHS]
  python docs/study/twentysecond/canvas.py finetune RULE PRUNING_LOC RHO TEACHER OUTDIR [SEED] [EPOCHS]
    RULE: dyvm (the demo's DyVM recipe) | dyvm_probs (its keep-ratio loss on p(keep):
          --keep-ratio-source probabilities) | dyvm_probs_noise1 (and the top-k sampler's Gumbel noise:
          --token-noise 1) | dyvm_probs_tail (and the pruned tail kept in training: --no-drop-pruned-tail) |
          dyvm_gumbel (the paper's per-token Gumbel-softmax sampler: --token-sampler gumbel) | static | random (the demo's trained nested baselines) |
          ink (an oracle, not a method: every stage keeps the patches with the most garment in the input image,
          in training and at inference; the DyVM's predictor unused) | influence (an oracle: the frozen teacher's
          class-token influence selects, study.InfluenceSelection) | dyvm_guided (dyvm_probs plus the library's
          --keep-guidance 1: a BCE pulling p(keep) toward the influence oracle's selection at every stage; until
          session 43 this script's own copy of that loss, whose influence read the patch token after the class
          token) | dyvm_guided_stage (the same with the influence at the stage's own layer only, not summed over
          the layers after it: one layer's cost)
"""
import contextlib
import json
import os
import sys
import time

import torch

from dyvm.demo import MODEL, TEACHER_RECIPE, DemoPlan, finetune_options
from dyvm.engine import train

# CANVAS=40 PATCH=4 (environment): another canvas and patch size (session 43: the demo's 4-px patches, 100 tokens).
# The canvas is the library's data option (dyvm train --canvas; until session 44 this script patched the data set,
# with the same offsets: dyvm.data.place_on_canvas draws them from the same seeds).
CANVAS, PATCH = int(os.environ.get("CANVAS", 56)), int(os.environ.get("PATCH", 8))
# PLAIN=1: the demo's own centred 28-px images and 4-px patches (for the oracle on the demo's data)
PLAIN = os.environ.get("PLAIN") == "1"
CANVAS_MODEL = dict(MODEL, img_size=28, canvas=0) if PLAIN else dict(MODEL, img_size=CANVAS, patch_size=PATCH,
                                                                      canvas=CANVAS)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from study import CENTRED_PLAN, ForcedSelection, InfluenceSelection, test_against_teacher  # noqa: E402
# (the study runner's oracle selections and evaluation; test_against_teacher takes the canvas)


def stage_layer_only_scores():
    """Patch the library's keep guidance (``--keep-guidance``) to score each stage by the teacher's influence at the
    stage's own layer only, not summed over the layers after it (the dyvm_guided_stage rule)."""
    import dyvm.losses

    def at_stage_layer(teacher, layer_residual, pruning_loc):
        return teacher.class_token_influence(layer_residual, pruning_loc)

    dyvm.losses.teacher_keep_scores = at_stage_layer


class InkSelection(ForcedSelection):
    """Each stage keeps the live patches whose input pixels (normalised, so relative to the background) sum highest:
    where the garment is, known from the image itself (nested, exactly each stage's count)."""

    def masks(self, model, x):
        p = model.patch_embed.patch_size
        ink = x.float().unfold(2, p, p).unfold(3, p, p).sum((1, 4, 5)).flatten(1)  # (B, M)
        ink = ink + 1e-4 * torch.arange(ink.shape[1], dtype=ink.dtype)  # ties (background) by slot: deterministic
        counts = model.keep_counts()
        return self.nested_top_k([ink] * len(counts), counts)


def main() -> None:
    what = sys.argv[1]
    t0 = time.time()
    if what == "teacher":
        out = sys.argv[2]
        epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 10  # rounds 22-23 (round 24: `dyvm train`, 20)
        summary = train(**dict(TEACHER_RECIPE, **CANVAS_MODEL, epochs=epochs, output=out, threads=2, no_progress=True))
        res = dict(what="teacher", epochs=epochs, val_top1=summary["best_acc"], history=summary["history"],
                   checkpoint=summary["best_checkpoint"], seconds=time.time() - t0)
    elif what == "finetune":
        rule, loc, rho, teacher, out = sys.argv[2], [int(v) for v in sys.argv[3].split(",")], float(sys.argv[4]), \
            sys.argv[5], sys.argv[6]
        seed = int(sys.argv[7]) if len(sys.argv) > 7 else 0
        rules = {"dyvm": {}, "dyvm_probs": dict(keep_ratio_source="probabilities"),
                 "dyvm_probs_noise1": dict(keep_ratio_source="probabilities", token_noise=1.0),
                 "dyvm_probs_tail": dict(keep_ratio_source="probabilities", drop_pruned_tail=False),
                 "dyvm_gumbel": dict(token_sampler="gumbel"),
                 "dyvm_guided": dict(keep_ratio_source="probabilities", keep_guidance=1.0),
                 "dyvm_guided_stage": dict(keep_ratio_source="probabilities", keep_guidance=1.0),
                 "influence": dict(token_sampler="topk"),
                 "static": dict(score="static", baseline_masks="nested"),
                 "random": dict(score="random", baseline_masks="nested"), "ink": dict(token_sampler="topk")}
        opts = dict(output=out, seed=seed, pruning_loc=loc, token_keep_ratio=rho, threads=2, no_progress=True,
                    **CANVAS_MODEL, **rules[rule])
        if len(sys.argv) > 8:
            opts["epochs"] = int(sys.argv[8])
        if os.environ.get("SMOKE") == "1":  # a check of the script, not a result
            opts.update(subset=512, epochs=1)
        if rule == "dyvm_guided_stage":
            stage_layer_only_scores()
        oracle = (InkSelection() if rule == "ink" else InfluenceSelection(teacher) if rule == "influence"
                  else contextlib.nullcontext())
        with oracle:
            # the budget of rounds 22-24: the centred demo's plan (2 epochs), each rule's own selection options
            summary = train(**finetune_options(DemoPlan(**CENTRED_PLAN), teacher, **opts))
            tested = test_against_teacher(summary["best_checkpoint"], teacher, 0 if PLAIN else CANVAS)
        stats = tested["stats"]
        res = dict(what="finetune", rule=rule, pruning_loc=loc, token_keep_ratio=rho, seed=seed, top1=stats["top1"],
                   teacher_top1=tested["teacher_stats"]["top1"], flops_cut=tested["flops_cut"],
                   token_keep=stats.get("token_keep"), keep_ties=stats.get("keep_ties"),
                   branch_keep_mean=stats.get("branch_keep_mean"), history=summary["history"],
                   seconds=time.time() - t0)
    else:
        raise SystemExit("first argument: teacher or finetune")
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    res["command"] = "python docs/study/twentysecond/canvas.py " + " ".join(sys.argv[1:])
    json.dump(res, open(os.path.join(out, "result.json"), "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))


if __name__ == "__main__":
    main()
