"""``dyvm demo``: the paper's pipeline in miniature on Fashion-MNIST, with a report.

The data: Fashion-MNIST with every garment at its own fixed offset on a black 40-px canvas
(``dyvm.data.place_on_canvas``), so where the garment sits changes from image to image as in real photos.
On the centred 28-px images (the demo until session 44) a fixed evenly spaced selection is close to the
best any selection can do, and no learnt selection beat it (docs/study, rounds 1-21).

1. the Vim teacher (40 px, patch 4: 100 patch tokens + a class token): by default the checkpoint
   shipped in ``dyvm/assets`` (made by ``dyvm train``; its command, seed, commit and log ship beside
   it, and ``--train-teacher`` retrains it in the run); evaluated on the test split in the run;
2. fine-tune DyVM from it with distillation from the frozen teacher, and, with the same budget, the
   two trained baselines of the official Pruning_Strategy ablation: random and static token
   selection used in training as well as at inference;
3. evaluate all on the official 10,000-image test split (model selection used a validation split
   held out of the training set);
4. sweep the inference keep ratio of the trained DyVM (no retraining) with its predictor, random and
   static scores of the same model: accuracy vs GFLOPs;
5. write ``report.md``, ``results.json`` and PNG figures into ``--output`` (atomically).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch

from .engine import SMALL_DYVM_POINT

# The demo's images: each 28-px garment at its own fixed offset (0-12 px per axis) on a 40-px canvas.
CANVAS = 40
# The teacher architecture of every demo mode: a small Vim on those 40-px images with 4-px patches.
MODEL = dict(img_size=CANVAS, patch_size=4, in_chans=1, depth=8, embed_dim=64)
ASSETS = os.path.join(os.path.dirname(__file__), "assets")
TEACHER_FILE = os.path.join(ASSETS, "fashion_mnist_canvas40_vim_teacher.pth")
TEACHER_CARD = os.path.join(ASSETS, "fashion_mnist_canvas40_vim_teacher.json")
# The demo's teacher until session 44, on the centred 28-px images: what tests/test_finetune_defaults.py
# fine-tunes with `dyvm train`'s defaults, and the teacher of docs/study's rounds 1-21.
CENTRED_TEACHER_FILE = os.path.join(ASSETS, "fashion_mnist_vim_teacher.pth")
CENTRED_TEACHER_CARD = os.path.join(ASSETS, "fashion_mnist_vim_teacher.json")

# The recipe that made the shipped teacher (``dyvm train`` options; ``--train-teacher`` reruns it).
TEACHER_RECIPE = dict(model="vim_tiny", **MODEL, dataset="fashion-mnist", canvas=CANVAS, batch_size=128, epochs=20,
                      lr=8e-3, min_lr=1e-5, warmup_epochs=1, warmup_lr=1e-5, weight_decay=0.05, mixup=0.0, cutmix=0.0,
                      smoothing=0.0, aa="none", reprob=0.0, repeated_aug=1, drop_path=0.0, scale_min=0.8, hflip=0.5,
                      val_size=5000, eval_batch_size=500, seed=0)

# The three fine-tunes share the seed, so the same batches: the frozen teacher's outputs are computed in
# the first (with DyVM's keep-guidance scores) and remembered for the other two (dyvm.losses.TeacherMemo; about
# 1.4 GB per epoch of the 40-px images).
TEACHER_CACHE_MB = 6144
# Fine-tuning options shared by DyVM and the trained baselines. Augmentation for 28-px garments: mild
# crops and flips only (RandAugment, mixup, cutmix and random erasing are the paper's ImageNet recipe).
FINETUNE_COMMON = dict(dataset="fashion-mnist", batch_size=128, val_size=5000, eval_batch_size=500, mixup=0.0,
                       cutmix=0.0, aa="none", reprob=0.0, smoothing=0.0, repeated_aug=1, scale_min=0.8, hflip=0.5,
                       weight_decay=0.05, min_lr=1e-5, warmup_lr=1e-5, warmup_epochs=0, drop_path=0.0,
                       teacher_cache_mb=TEACHER_CACHE_MB)


@dataclass
class DemoPlan:
    pruning_loc: list
    token_keep_ratio: float
    block_keep_ratio: float
    finetune_epochs: int
    finetune_lr: float
    subset: Optional[int]          # training images per fine-tuning run (None: all 55,000)
    test_images: Optional[int]     # None: all 10,000
    drop_bar: Optional[float]      # the bar on the top-1 drop (None: a smoke run, no claim)
    sweep: list = field(default_factory=list)
    recipe: str = "dyvm"
    # the trained baselines' masks: nested per image (the inference rule in training too), not the official
    # ablation's batch-level masks with revived tokens, which train ~35% slower here (the whole sequence runs to
    # the last layer) and were not stronger at this point: docs/study, official_* rows
    baseline_masks: str = "nested"
    # DyVM's own options (not the trained baselines', which have no predictor): the keep-ratio loss on p(keep), and
    # a BCE of this weight pulling p(keep) toward the frozen teacher's choice (`dyvm train --keep-guidance`); None:
    # the recipe's own (`--recipe paper` runs the paper's: neither)
    keep_ratio_source: Optional[str] = "probabilities"
    keep_guidance: Optional[float] = 1.0


# The operating point (docs/study, rounds 22-24, on the canvas): one pruning stage before layer 2 of 8 keeping
# ρ = 0.57 of the 100 patches (57), β 0.8: a 35.7% FLOPs cut. With the teacher's guidance the predictor found the
# garment and scored 1.4 points above trained static selection; the placement of `dyvm train`'s own small-image
# default (engine.SMALL_DYVM_POINT: the last three layers) cuts too little of 100 tokens' cost that late.
OPERATING_POINT = dict(pruning_loc=[2], token_keep_ratio=0.57, block_keep_ratio=SMALL_DYVM_POINT["block_keep_ratio"])
PLANS = {
    "quick": DemoPlan(**OPERATING_POINT, finetune_epochs=1, finetune_lr=3e-3, subset=4096, test_images=2000,
                      drop_bar=None, sweep=[1.0, 0.57, 0.3]),
    "default": DemoPlan(**OPERATING_POINT, finetune_epochs=1, finetune_lr=3e-3, subset=None, test_images=None,
                        drop_bar=1.5, sweep=[1.0, 0.57, 0.3]),
    "long": DemoPlan(**OPERATING_POINT, finetune_epochs=3, finetune_lr=3e-3, subset=None, test_images=None,
                     drop_bar=1.0, sweep=[1.0, 0.9, 0.8, 0.7, 0.57, 0.5, 0.4, 0.3]),
}
# The three fine-tuned models: DyVM's learned predictor, and the trained baselines.
FINETUNED = {"dyvm": "predictor", "random": "random", "static": "static"}


def finetune_options(plan: DemoPlan, teacher_ckpt: str, score: str = "predictor", **overrides: Any) -> dict[str, Any]:
    """``train()`` options of one of the demo's fine-tuning runs (DyVM, or a trained baseline: ``score`` random or
    static): the plan's budget and operating point on FINETUNE_COMMON; ``overrides`` replace any of them."""
    options = dict(FINETUNE_COMMON, **MODEL, canvas=CANVAS, model="dyvm_vim_tiny", checkpoint=teacher_ckpt,
                   epochs=plan.finetune_epochs, lr=plan.finetune_lr, recipe=plan.recipe, score=score,
                   token_keep_ratio=plan.token_keep_ratio, block_keep_ratio=plan.block_keep_ratio,
                   pruning_loc=plan.pruning_loc, subset=plan.subset)
    if score == "predictor":
        options.update({k: v for k, v in dict(keep_ratio_source=plan.keep_ratio_source,
                                              keep_guidance=plan.keep_guidance).items() if v is not None})
    else:
        options.update(baseline_masks=plan.baseline_masks)
    options.update(overrides)
    return options


def demo_plan(mode: str = "default", finetune_epochs: Optional[int] = None, recipe: Optional[str] = None,
              baseline_masks: Optional[str] = None) -> DemoPlan:
    """The plan of a demo mode with the user's changes; a bad value is a one-line error before any work."""
    if mode not in PLANS:
        raise ValueError(f"mode={mode!r}; expected one of {list(PLANS)}")
    plan = DemoPlan(**asdict(PLANS[mode]))
    if finetune_epochs is not None:
        if finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1, got {finetune_epochs}")
        plan.finetune_epochs = finetune_epochs
    if recipe is not None:
        plan.recipe = recipe
        if recipe != "dyvm":   # the demo's guided predictor is the dyvm recipe's; another recipe trains its own way
            plan.keep_ratio_source = plan.keep_guidance = None
    if baseline_masks is not None:
        from .dynamic import BASELINE_MASKS

        if baseline_masks not in BASELINE_MASKS:
            raise ValueError(f"--baseline-masks {baseline_masks!r}: expected one of {', '.join(BASELINE_MASKS)}")
        plan.baseline_masks = baseline_masks
    return plan


def _phase(msg: str) -> None:
    """Phase headers go to stderr even with --no-progress (which silences only the bars)."""
    print(f"\n== {msg}", file=sys.stderr, flush=True)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_teacher(file: Optional[str] = None, card_file: Optional[str] = None) -> tuple[str, dict]:
    """A shipped teacher checkpoint (default: the demo's, TEACHER_FILE) and its card (command, seed, commit, log,
    hash, accuracy), after checking the file against the card's hash."""
    file, card_file = file or TEACHER_FILE, card_file or TEACHER_CARD
    with open(card_file) as fh:
        card = json.load(fh)
    digest = sha256_of(file)
    if digest != card["sha256"]:
        raise ValueError(f"{file} does not match its card (sha256 {digest[:12]}… vs {card['sha256'][:12]}…); "
                         "reinstall dyvm or rerun with --train-teacher")
    return file, card


def teacher_command() -> str:
    """``dyvm train`` command line of TEACHER_RECIPE."""
    parts = ["dyvm train"]
    for key, value in TEACHER_RECIPE.items():
        parts.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(parts)


def _test_loader(model, data_path, n_images, batch_size=500, canvas=CANVAS):
    from torch.utils.data import DataLoader, Subset

    from .data import build_dataset, build_transform, data_config_for

    ds = build_dataset("fashion-mnist", "test", build_transform(data_config_for(model), False), data_path,
                       model.in_chans, canvas=canvas)
    if n_images:
        ds = Subset(ds, list(range(n_images)))
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def _latency(teacher, student, loader, batch_sizes=(1, 64)) -> dict[str, Any]:
    """Teacher vs DyVM inference time on the first 64 test images, in interleaved rounds."""
    from .evaluate import teacher_vs_student

    need, parts = max(64, *batch_sizes), []
    for x, _ in loader:
        parts.append(x)
        if sum(len(p) for p in parts) >= need:
            break
    images = torch.cat(parts)[:need]
    return teacher_vs_student(teacher, student, images, batch_sizes, rounds=7)


def _summarise(model, stats: dict) -> dict[str, Any]:
    from .flops import flops_from_stats

    out = dict(top1=stats["top1"], top5=stats["top5"], params_m=sum(p.numel() for p in model.parameters()) / 1e6,
               **flops_from_stats(model, stats))
    if model.is_dynamic:
        out.update(token_keep=stats["token_keep"], branch_keep=stats.get("branch_keep"),
                   branch_keep_mean=stats.get("branch_keep_mean", 1.0),
                   branch_keep_per_class=stats.get("branch_keep_per_class"), keep_ties=stats.get("keep_ties"),
                   token_keep_ratio=model.token_ratio, router_threshold=model.router_threshold, score=model.score)
    return out


def run_demo(output: str = "dyvm-demo", data_path: Optional[str] = None, mode: str = "default", seed: int = 0,
             finetune_epochs: Optional[int] = None, train_teacher: bool = False, recipe: Optional[str] = None,
             progress: bool = True, threads: Optional[int] = None, download: bool = False,
             baseline_masks: Optional[str] = None) -> dict[str, Any]:
    """Run the demo and write the report folder; returns ``results.json``'s content. ``baseline_masks``: the
    trained baselines' training masks, ``nested`` (default) or ``official`` (the paper's ablation)."""
    from . import __version__
    from .checkpoint import model_from_checkpoint
    from .data import FASHION_MNIST_CLASSES, find_fashion_mnist
    from .engine import train
    from .evaluate import evaluate, paired_comparison
    from .flops import count_flops
    from .losses import TeacherMemo
    from .viz import accuracy_flops_curve, branch_heatmap, pruning_overlay, training_curves

    plan = demo_plan(mode, finetune_epochs, recipe, baseline_masks)
    try:
        find_fashion_mnist(data_path)  # fail early with a clear message (naming the command that fixes it)
    except FileNotFoundError:
        if not download:
            raise
        from .data import FashionMNIST

        data_path = data_path or "data"
        FashionMNIST(data_path, download=True)
    started = time.time()
    timings: dict[str, float] = {}
    if mode == "quick":
        print("dyvm demo --quick: a smoke run of the pipeline (4,096 training images per fine-tuning, 2,000 test "
              "images); far too short to show the paper's claim. Run `dyvm demo` for that.", file=sys.stderr)
    with staged_output(output) as (output, work):
        ckpt_dir = os.path.join(work, "checkpoints")

        # 1. teacher ----------------------------------------------------------------------
        teacher_run = None
        if train_teacher:
            _phase(f"1/5 training the Vim teacher ({TEACHER_RECIPE['epochs']} epochs; the shipped teacher's recipe)")
            t = time.time()
            teacher_run = train(**dict(TEACHER_RECIPE, data_path=data_path, no_progress=not progress,
                                       threads=threads, output=os.path.join(ckpt_dir, "teacher")))
            timings["teacher_train_s"] = time.time() - t
            teacher_ckpt = teacher_run["best_checkpoint"]
            teacher_source = dict(kind="trained in this run", command=teacher_command(),
                                  seed=TEACHER_RECIPE["seed"])
        else:
            teacher_ckpt, card = shipped_teacher()
            teacher_source = dict(kind="shipped checkpoint", file=os.path.relpath(TEACHER_FILE, os.path.dirname(ASSETS)),
                                  sha256=card["sha256"], command=card["command"], seed=card["seed"],
                                  commit=card["commit"], recorded_test_top1=card["test_top1"])
            _phase(f"1/5 teacher: the shipped Vim checkpoint (made by `{card['command']}` at commit "
                   f"{card['commit'][:10]}; --train-teacher retrains it)")

        # 2. fine-tuning: DyVM and the trained random / static baselines, the same budget each
        runs = {}
        for name, score in FINETUNED.items():
            _phase(f"2/5 fine-tuning {name} ({score} token selection in training and inference) from the teacher "
                   f"with distillation ({plan.finetune_epochs} epoch(s), ρ={plan.token_keep_ratio}, "
                   f"β={plan.block_keep_ratio}, recipe {plan.recipe})")
            t = time.time()
            runs[name] = train(**finetune_options(plan, teacher_ckpt, score, output=os.path.join(ckpt_dir, name),
                                                  data_path=data_path, seed=seed, no_progress=not progress,
                                                  threads=threads))
            timings[f"{name}_train_s"] = time.time() - t
        TeacherMemo.clear()

        # 3. evaluation on the test split -------------------------------------------------
        _phase("3/5 evaluating on the Fashion-MNIST test split")
        t = time.time()
        teacher, _ = model_from_checkpoint(teacher_ckpt)
        loader = _test_loader(teacher, data_path, plan.test_images)
        results: dict[str, Any] = {}
        results["teacher"] = _summarise(teacher, evaluate(teacher, loader, torch.device("cpu"), progress=progress,
                                                          desc="teacher"))
        results["teacher"]["source"] = teacher_source
        models, hits = {}, {}
        for name, run in runs.items():
            model, _ = model_from_checkpoint(run["best_checkpoint"])
            models[name] = model
            stats = evaluate(model, loader, torch.device("cpu"), progress=progress, desc=name, hits=True)
            hits[name] = stats.pop("hits")
            x = _summarise(model, stats)
            x["flops_reduction_official"] = 1 - x["gflops_official"] / results["teacher"]["gflops_official"]
            x["flops_reduction_full"] = 1 - x["gflops_full"] / results["teacher"]["gflops_full"]
            x["top1_drop"] = results["teacher"]["top1"] - x["top1"]
            if name == "dyvm":
                results["dyvm"] = x
            else:
                x["training_masks"] = model.baseline_masks
                results.setdefault("trained_baselines", {})[name] = x
        for name, x in results.get("trained_baselines", {}).items():  # DyVM against each, image by image
            x["paired_vs_dyvm"] = paired_comparison(hits["dyvm"], hits[name])
        speed = _latency(teacher, models["dyvm"], loader)
        for b, v in speed["batches"].items():
            results["teacher"].setdefault("latency_ms", {})[b] = v["teacher_ms"]
            results["dyvm"].setdefault("latency_ms", {})[b] = v["dyvm_ms"]
            for conv in ("official", "full"):  # issue 10's goal: >= 0.9 in the official convention
                v[f"latency_over_flops_cut_{conv}"] = v["latency_cut"] / results["dyvm"][f"flops_reduction_{conv}"]
        results["latency"] = speed
        timings["evaluate_s"] = time.time() - t

        # 4. accuracy vs FLOPs by turning the inference keep ratio -------------------------
        _phase("4/5 accuracy vs GFLOPs: sweeping the inference keep ratio of the trained DyVM "
               "(predictor, random, static scores of the same model)")
        t = time.time()
        dy = models["dyvm"]
        curves: dict[str, list] = {}
        from tqdm import tqdm

        # at ρ = 1 every token is kept whatever scores them: that point is evaluated once and shared by the curves
        jobs = [(s, r) for s in ("predictor", "random", "static") for r in plan.sweep
                if r < 1.0 or s == "predictor"]
        for score, rho in tqdm(jobs, desc="sweep", unit="eval", file=sys.stderr, disable=not progress):
            dy.configure(token_keep_ratio=rho, score=score)
            torch.manual_seed(seed)
            stats = evaluate(dy, loader, torch.device("cpu"), progress=False)
            g = count_flops(dy, "official", branch_keep_ratio=stats["branch_keep_mean"])
            curves.setdefault(score, []).append(dict(token_keep_ratio=rho, gflops_official=g, top1=stats["top1"],
                                                     branch_keep_mean=stats["branch_keep_mean"]))
        shared = {p["token_keep_ratio"]: p for p in curves["predictor"] if p["token_keep_ratio"] >= 1.0}
        for score in ("random", "static"):
            own = {p["token_keep_ratio"]: p for p in curves[score]}
            curves[score] = [dict(shared[r]) if r in shared else own[r] for r in plan.sweep]
        dy.configure(token_keep_ratio=plan.token_keep_ratio, score="predictor")
        results["curves"] = curves
        timings["sweep_s"] = time.time() - t

        # 5. pictures and report ------------------------------------------------------------
        _phase("5/5 pictures and report")
        figures = _figures(work, dy, loader, results, runs, teacher_run, FASHION_MNIST_CLASSES,
                           accuracy_flops_curve, branch_heatmap, pruning_overlay, training_curves)
        timings["total_s"] = time.time() - started
        results["meta"] = _meta(mode, plan, seed, data_path, output, timings, figures, __version__, runs,
                                train_teacher)
        results["claim"] = _claim(results, plan.drop_bar)
        publish(work, output, results, render_report)
    print(f"\nreport written to {output}/report.md ({timings['total_s'] / 60:.1f} min)", file=sys.stderr)
    return results


def _figures(work, dy, loader, results, runs, teacher_run, class_names, accuracy_flops_curve, branch_heatmap,
             pruning_overlay, training_curves) -> dict[str, str]:
    figures = {}
    images, labels = next(iter(loader))
    sel = []
    for c in range(10):  # a dozen images covering the classes
        idx = (labels == c).nonzero().flatten()[:2 if c < 2 else 1].tolist()
        sel += idx
    sel = sel[:12]
    x = images[sel]
    cfg = dy.pretrained_cfg
    pic = (x[:, 0] * cfg["std"][0] + cfg["mean"][0]).clamp(0, 1).numpy()
    pruning_overlay(dy, x, pic, os.path.join(work, "pruning.png"), titles=[class_names[int(labels[i])] for i in sel])
    figures["pruning"] = "pruning.png"
    d = results["dyvm"]
    branch_heatmap(d["branch_keep"], d["branch_keep_per_class"], class_names, os.path.join(work, "branch_usage.png"))
    figures["branch_usage"] = "branch_usage.png"
    curves = {"DyVM, predictor scores" if s == "predictor" else f"DyVM model, {s} scores swapped in at inference":
              [(p["gflops_official"], p["top1"]) for p in pts] for s, pts in results["curves"].items()}
    points = {"DyVM (trained, predictor)": (d["gflops_official"], d["top1"]),
              "Vim teacher": (results["teacher"]["gflops_official"], results["teacher"]["top1"])}
    for name, b in results.get("trained_baselines", {}).items():
        points[f"trained {name} pruning"] = (b["gflops_official"], b["top1"])
    accuracy_flops_curve(curves, os.path.join(work, "accuracy_vs_flops.png"), points)
    figures["accuracy_vs_flops"] = "accuracy_vs_flops.png"
    histories = {"Vim teacher": teacher_run["history"]} if teacher_run else {}
    histories.update({f"{k} (fine-tune)": v["history"] for k, v in runs.items()})
    training_curves(histories, os.path.join(work, "training.png"))
    figures["training"] = "training.png"
    return figures


def _interp(points: list[dict], g: float) -> Optional[float]:
    """Top-1 of a curve at GFLOPs ``g`` (linear interpolation; None outside its range)."""
    pts = sorted((p["gflops_official"], p["top1"]) for p in points)
    for (g0, a0), (g1, a1) in zip(pts, pts[1:]):
        if g0 <= g <= g1:
            return a0 if g1 == g0 else a0 + (a1 - a0) * (g - g0) / (g1 - g0)
    return None


def _paired_words(name: str, claim: dict) -> str:
    """The claim check's image-by-image reading of DyVM against one trained baseline (empty where not measured)."""
    p = claim.get("paired_vs_dyvm", {}).get(name)
    if p is None:
        return ""
    verdict = ("more than the test images' sampling gives" if p["p_value"] < 0.05
               else "within the test images' sampling")
    return (f"; on the same {p['images']:,} images DyVM alone is right on {p['only_a']}, {name} alone on "
            f"{p['only_b']}: exact McNemar p = {p['p_value']:.2g}, {verdict}, for these two trained models, not "
            "over training seeds")


def _claim(results: dict, drop_bar: Optional[float]) -> dict[str, Any]:
    """The bars of issue 8 at this scale: ≥35% fewer FLOPs (official convention, measured branch keep),
    top-1 drop ≤ ``drop_bar``, and above the trained random and static baselines."""
    d = results["dyvm"]
    trained = {s: b["top1"] for s, b in results.get("trained_baselines", {}).items()}
    swapped = {s: _interp(results["curves"].get(s, []), d["gflops_official"]) for s in ("random", "static")}
    beats = {s: d["top1"] > v for s, v in trained.items()}
    paired = {s: b["paired_vs_dyvm"] for s, b in results.get("trained_baselines", {}).items() if "paired_vs_dyvm" in b}
    return dict(flops_reduction_official=d["flops_reduction_official"], top1_drop=d["top1_drop"], drop_bar=drop_bar,
                flops_cut_at_least_35pct=d["flops_reduction_official"] >= 0.35,
                top1_drop_within_bar=None if drop_bar is None else d["top1_drop"] <= drop_bar,
                trained_baseline_top1=trained, beats_trained_baselines=bool(beats) and all(beats.values()),
                beats=beats, paired_vs_dyvm=paired, swapped_scores_top1_at_equal_flops=swapped)


def _meta(mode, plan, seed, data_path, output, timings, figures, version, runs, train_teacher) -> dict[str, Any]:
    from .utils import cpu_name
    from .kernels.scan import resolve_backend

    cpu = cpu_name()
    flags = {"quick": " --quick", "long": " --long", "default": ""}[mode]
    command = "dyvm demo" + flags + (f" --seed {seed}" if seed else "") + (" --train-teacher" if train_teacher else "")
    if plan.recipe != "dyvm":
        command += f" --recipe {plan.recipe}"
    if plan.baseline_masks != "nested":
        command += f" --baseline-masks {plan.baseline_masks}"
    with open(os.path.join(runs["dyvm"]["output"], "config.json")) as fh:
        finetune_config = json.load(fh)
    recipe_keys = ("recipe", "pruning_loc", "token_keep_ratio", "block_keep_ratio", "token_sampler", "token_noise", "keep_ratio_source", "drop_pruned_tail", "epochs", "batch_size", "lr", "effective_lr", "min_lr", "warmup_epochs", "weight_decay",
                   "keep_prior", "dynamic_lr_scale", "ratio_warmup", "block_loss_weighting", "keep_guidance", "token_weight", "block_weight",
                   "distill_weight", "mixup", "cutmix", "smoothing", "aa", "reprob", "repeated_aug", "scale_min", "hflip", "drop_path",
                   "amp", "subset")
    return dict(command=command, argv=sys.argv, mode=mode, seed=seed, plan=asdict(plan), data_path=data_path,
                date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), dyvm_version=version, torch_version=torch.__version__,
                python=platform.python_version(), machine=f"{cpu}, {os.cpu_count()} cores",
                torch_threads=torch.get_num_threads(), scan_backend=resolve_backend(None), timings_s=timings,
                figures=figures, output=output, canvas=CANVAS,
                finetune_recipe={k: finetune_config.get(k) for k in recipe_keys})


def _fmt_keep(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# How the paper's fine-tuning (spec §5.2, Vim-T script) differs from what the demo ran, per key; its pruning
# layers are the official [6, 12, 18] of 24 scaled to 8 layers, ρ/β the Vim-S headline point.
PAPER_FINETUNE = dict(recipe="paper", pruning_loc=[2, 4, 6], token_keep_ratio=0.7, block_keep_ratio=0.8,
                      token_sampler="gumbel", token_noise=1.0, keep_ratio_source="decisions", drop_pruned_tail=False, epochs=30, batch_size=128, lr=3e-5, warmup_epochs=5, weight_decay=1e-8,
                      keep_prior=False, dynamic_lr_scale=1.0, ratio_warmup=0.0, block_loss_weighting="layers",
                      keep_guidance=0.0, token_weight=10.0, block_weight=10.0,
                      distill_weight=0.5, mixup=0.8, cutmix=1.0, smoothing=0.1, aa="rand-m9-mstd0.5-inc1",
                      reprob=0.25, repeated_aug=3, scale_min=0.08, amp="none")


def _masks_sentence(plan: dict) -> str:
    """How the trained baselines were trained (plans of old results.json files have no ``baseline_masks``:
    nested then)."""
    if plan.get("baseline_masks", "nested") == "official":
        return ("Their training masks are the official ablation's: batch-level masks over all slots, so "
                "earlier-pruned tokens come back in training but not at inference (`--baseline-masks official`).")
    return ("Departure: their training masks are nested per image (the inference rule in training too); the "
            "official ablation trains with batch-level masks over all slots that revive pruned tokens "
            "(`--baseline-masks official`, measured in docs/study: not stronger at this point, and slower to train).")


def render_report(r: dict[str, Any]) -> str:
    """report.md from results.json's content (every number of the report comes from it)."""
    from .evaluate import tied_stages

    t, d, m, c = r["teacher"], r["dyvm"], r["meta"], r["claim"]
    plan, src = m["plan"], t["source"]
    smoke = m["mode"] == "quick"
    lines = [f"# DyVM on Fashion-MNIST ({m['mode']} demo)", ""]
    if smoke:
        lines += ["**A smoke run**: 4,096 training images per fine-tuning and 2,000 test images, far too short to show "
                  "the paper's claim; run `dyvm demo` for that.", ""]
    lines += [f"Produced by `{m['command']}` on {m['date']} ({m['machine']}, {m['torch_threads']} torch threads, "
              f"scan backend `{m['scan_backend']}`; dyvm {m['dyvm_version']}, torch {m['torch_version']}, "
              f"Python {m['python']}); total {m['timings_s']['total_s'] / 60:.1f} min. Seed {m['seed']}.", "",
              "## Models", ""]
    if src["kind"] == "shipped checkpoint":
        lines.append(f"Teacher: the Vim checkpoint shipped with dyvm (`{src['file']}`, sha256 `{src['sha256'][:16]}…`), "
                     f"made by `{src['command']}` (seed {src['seed']}) at commit `{src['commit'][:10]}`; its card "
                     f"records {src['recorded_test_top1']:.2f}% test top-1 and this run measured {t['top1']:.2f}%. "
                     "`dyvm demo --train-teacher` retrains it in the run.")
    else:
        lines.append(f"Teacher: a Vim trained in this run by `{src['command']}` (seed {src['seed']}).")
    canvas = m.get("canvas", 0)
    if canvas:
        lines += ["", f"The data: Fashion-MNIST with every 28-px garment at its own fixed offset (0–{canvas - 28} px on "
                  f"each axis, drawn once per image from a fixed seed per split) on a black {canvas}-px canvas "
                  f"(`--canvas {canvas}`), so where the garment is changes from image to image, as in photos. On the "
                  "centred 28-px images every garment sits in the same place: a fixed evenly spaced selection is then "
                  "close to the best any selection can do, and no learnt one beat it (docs/study, rounds 1–21).", ""]
    size, patch = canvas or 28, MODEL["patch_size"]
    n_tokens = (size // patch) ** 2
    lines += [f"A Vim with a middle class token and bidirectional SSM: depth 8, D = 64, {size}-px images cut into "
              f"{patch}-px patches ({n_tokens} tokens), trained on 55,000 training images (5,000 more held out for "
              "model selection).", "",
              f"Fine-tuned from it, the same budget each ({plan['finetune_epochs']} epoch(s) on "
              f"{format(plan['subset'], ',') if plan['subset'] else 'all 55,000'} images), with distillation from the "
              f"frozen teacher, token pruning before layers {plan['pruning_loc']} (ρ = {plan['token_keep_ratio']}) "
              f"and per-image SSM branch selection (β = {plan['block_keep_ratio']}):",
              "- **DyVM**: the learned keep predictor" + (
                  f", trained with a BCE (weight {plan['keep_guidance']}) pulling its p(keep) toward the frozen "
                  "teacher's own choice, the patches with the most class-token influence (`--keep-guidance`, a "
                  "departure from the paper, which trains the predictor through the task and ratio losses only)"
                  if plan.get("keep_guidance") else "") + ";",
              "- **trained random** / **trained static**: the Pruning_Strategy ablations — keep k random / "
              "evenly spaced tokens per image at inference (no predictor, no ratio loss). " + _masks_sentence(plan), "",
              f"Accuracy on the official test split ({'all 10,000' if not plan['test_images'] else plan['test_images']} "
              "images).", "",
              "| model | top-1 % | GFLOPs official | GFLOPs full | FLOPs cut (official) | token keep per stage (measured) "
              "| branch keep (measured mean) |",
              "|---|---|---|---|---|---|---|"]
    rows = [("Vim teacher", t), ("DyVM", d)] + [(f"trained {n} pruning", b)
                                                for n, b in r.get("trained_baselines", {}).items()]
    for name, x in rows:
        tk = _fmt_keep(x["token_keep"]) if x.get("token_keep") else "1 (no pruning)"
        bk = f"{x['branch_keep_mean']:.3f}" if x.get("branch_keep") else "1 (all run)"
        cut = f"{100 * x['flops_reduction_official']:.1f}%" if "flops_reduction_official" in x else "–"
        lines.append(f"| {name} | {x['top1']:.2f} | {x['gflops_official'] * 1e3:.2f} M | {x['gflops_full'] * 1e3:.2f} M "
                     f"| {cut} | {tk} | {bk} |")
    lines += ["", "GFLOPs are G multiply-accumulates per image (shown in M): `official` is DyVM's convention (one SSM "
              "direction per layer, measured branch keep ratio), `full` counts both directions, norms, predictors and "
              "routers.", ""]
    if d.get("keep_ties"):
        shares = ", ".join(f"{100 * t:.0f}%" for t in d["keep_ties"])
        tied = bool(tied_stages(d["keep_ties"]))
        why = (" (with an exact-count sampler the keep-ratio loss read the decisions, whose mean is ρ by construction; "
               "`--keep-ratio-source probabilities` trains a ranking: docs/study)"
               if m.get("finetune_recipe", {}).get("token_sampler") in ("topk", "stratified")
               and m["finetune_recipe"].get("keep_ratio_source", "decisions") == "decisions" else "")
        lines += [f"DyVM's keep predictor, test images whose k-th and (k+1)-th best keep scores are equal at each stage: "
                  f"{shares}." + (f" Where that is most of them the predictor's keep log-probabilities saturated{why}: "
                                  "inference keeps the same slots of every image there, spread evenly over the tied "
                                  "ones (static selection's rule among ties), not chosen by anything the predictor "
                                  "learnt." if tied else ""), ""]
    if smoke:
        lines += ["## Claim check", "", "None: a smoke run shows the pipeline works, not the method.", ""]
    else:
        lines += ["## Claim check (issue 8's bars at this scale)", "",
                  f"- FLOPs cut (official convention, measured branch keep): **{100 * c['flops_reduction_official']:.1f}%** "
                  f"— {'meets' if c['flops_cut_at_least_35pct'] else 'MISSES'} the ≥ 35% bar",
                  f"- top-1 change vs the teacher: **{-c['top1_drop']:+.2f} points** — "
                  f"{'meets' if c['top1_drop_within_bar'] else 'MISSES'} the ≤ {c['drop_bar']} point bar",
                  "- vs the trained baselines at the same token budget: " + "; ".join(
                      f"{n} {v:.2f}% ({'DyVM above' if c['beats'][n] else 'DyVM NOT above'}{_paired_words(n, c)})"
                      for n, v in c["trained_baseline_top1"].items()), ""]
    speed = r["latency"]
    lines += [f"## Latency (this machine, fp32, eval, {speed['threads']} torch threads)", "",
              f"Teacher and DyVM on real test images in {speed['rounds']} interleaved rounds (`dyvm.evaluate."
              "teacher_vs_student`): batch 1 walks through the first 64 test images one per call (the routers "
              "decide per image), batch 64 is those 64 images. Time ratio: the median of the per-round ratios.", "",
              "| batch | Vim teacher ms | DyVM ms | DyVM / Vim time (IQR) | latency cut | latency cut / FLOPs cut "
              "(official / full) |", "|---|---|---|---|---|---|"]
    for b, v in speed["batches"].items():
        lines.append(f"| {b[1:]} | {v['teacher_ms']:.2f} | {v['dyvm_ms']:.2f} | {v['time_ratio']:.3f} "
                     f"({v['time_ratio_iqr'][0]:.3f}–{v['time_ratio_iqr'][1]:.3f}) | {100 * v['latency_cut']:.1f}% "
                     f"| {v['latency_over_flops_cut_official']:.2f} / {v['latency_over_flops_cut_full']:.2f} |")
    slower = [b[1:] for b, v in speed["batches"].items() if v["time_ratio"] >= 1]
    lines.append("")
    if slower:
        first = min(plan["pruning_loc"])
        lines += [f"DyVM is **slower** than its teacher at batch {' and '.join(slower)} here despite fewer FLOPs: at "
                  f"this tiny size (D 64, {n_tokens + 1} tokens) a block at batch 1 is mostly fixed cost, so the layers after a "
                  "pruning stage cost nearly what full-length ones do and the stages' predictors add their own, "
                  f"while layers 0–{first - 1} run on every token in both models"
                  + (". With two or more threads the teacher's small blocks also run their two SSM branches side by "
                     "side, one per thread, which a DyVM layer whose router turned one branch off cannot."
                     if speed["threads"] >= 2 else "."), ""]
    short = [b[1:] for b, v in speed["batches"].items() if v["latency_over_flops_cut_official"] < 0.9]
    if short:
        lines += [f"At batch {' and '.join(short)} the latency cut is below 0.9 × the FLOPs cut (issue 10's goal): "
                  "not met here.", ""]
    rec = m["finetune_recipe"]
    lines += ["## Fine-tuning recipe (every departure from the paper's Vim-T script named)", "",
              "| option | this run | paper |", "|---|---|---|"]
    for key, value in rec.items():
        paper = PAPER_FINETUNE.get(key, "–")
        mark = " ← departs" if key in PAPER_FINETUNE and value != paper else ""
        lines.append(f"| {key} | {value}{mark} | {paper} |")
    lines += ["", f"Precision fp32. The paper fine-tunes ImageNet at 224 px; here {size}-px images get mild crops "
              "(scale ≥ 0.8) and flips, without RandAugment, mixup, cutmix or random erasing. The three fine-tunes "
              "share the seed and so see the same batches: the frozen teacher's outputs, computed in the first, "
              "are reused by the other two (`--teacher-cache-mb`; it saves time and changes no number).", "",
              "![accuracy vs FLOPs](accuracy_vs_flops.png)", "",
              "## Branch keep per layer (fraction of test images running forward / backward)", "",
              "| layer | " + " | ".join(str(i) for i in range(len(d["branch_keep"]))) + " |",
              "|---|" + "---|" * len(d["branch_keep"]),
              "| fwd | " + " | ".join(f"{f:.2f}" for f, _ in d["branch_keep"]) + " |",
              "| bwd | " + " | ".join(f"{b:.2f}" for _, b in d["branch_keep"]) + " |", "",
              "![branch usage](branch_usage.png)", "",
              "## Which patches survive", "", "![pruning](pruning.png)", "",
              "## Training", "", "![training curves](training.png)", "",
              "## Turning the inference keep ratio of the trained DyVM (no retraining)", "",
              "The `random` and `static` columns swap the score source of the *same DyVM model* at inference; they are "
              "not the trained baselines above. At ρ = 1 every token is kept whatever the scores, so that row is one "
              "evaluation shared by the three columns.", "",
              "| ρ | " + " | ".join(f"{s} GFLOPs (M) / top-1" for s in r["curves"]) + " |",
              "|---|" + "---|" * len(r["curves"])]
    first = next(iter(r["curves"].values()))
    for i, p in enumerate(first):
        cells = [f"{pts[i]['gflops_official'] * 1e3:.2f} / {pts[i]['top1']:.2f}" for pts in r["curves"].values()]
        lines.append(f"| {p['token_keep_ratio']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in m["timings_s"].items()), ""]
    return "\n".join(lines)


@contextmanager
def staged_output(output: str) -> Iterator[tuple[str, str]]:
    """A fresh folder beside ``output`` for a demo to write into; yields (``output`` made absolute, that folder).
    If the run fails the folder is removed and ``output`` is untouched; :func:`publish` moves it into place."""
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".dyvm-demo-", dir=parent)
    try:
        yield output, work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def publish(work: str, output: str, results: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """Write ``results.json`` and ``render(results)`` as ``report.md`` into ``work``, then put ``work`` in place
    of ``output``."""
    with open(os.path.join(work, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    with open(os.path.join(work, "report.md"), "w") as fh:
        fh.write(render(results))
    _move_into_place(work, output)


def _move_into_place(work: str, output: str) -> None:
    """Replace ``output`` by the finished ``work`` folder (never a half-written report)."""
    shutil.rmtree(os.path.join(work, "checkpoints", "teacher", "__unused__"), ignore_errors=True)
    old = None
    if os.path.exists(output):
        old = output + f".old-{os.getpid()}"
        os.replace(output, old)
    os.replace(work, output)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def demo_cli(args) -> int:
    if args.quick and args.long:
        raise ValueError("--quick and --long exclude each other")
    mode = "quick" if args.quick else "long" if args.long else "default"
    run_demo(args.output, args.data_path, mode, args.seed, args.finetune_epochs, args.train_teacher, args.recipe,
             progress=not args.no_progress, threads=args.threads, download=args.download,
             baseline_masks=args.baseline_masks)
    return 0
