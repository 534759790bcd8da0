"""``dyvm demo --task segmentation``: Vim vs DyVM on a real dense task at this machine's scale.

1. train a Vim segmenter (``vim_seg_micro``: the segmentation backbone, its neck, a light FPN decode
   head and an FCN auxiliary head) from scratch on Fashion-MNIST mosaics (:mod:`dyvm.mosaics`);
2. fine-tune the DyVM segmenter (``dyvm_vim_seg_micro``) from it with the official segmentation
   objective (per-pixel CE + 0.4 · auxiliary CE + both ratio terms, weight 20; no teacher);
3. evaluate both on test mosaics (made of the official test garments): mIoU, pixel accuracy, FLOPs
   (official convention, branch keep measured on the test mosaics);
4. latency at batch 1 and a larger batch in interleaved A/B rounds (ratio of medians);
5. pictures (input, ground truth, Vim and DyVM predictions, pruned tokens tinted), ``report.md``
   and ``results.json`` in ``--output`` (written atomically).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch


@dataclass
class SegmentationPlan:
    vim_epochs: int
    vim_mosaics: int           # training mosaics of the Vim run
    dyvm_epochs: int
    dyvm_mosaics: int          # training mosaics of the DyVM fine-tuning
    val_mosaics: int           # model selection
    test_mosaics: int          # final numbers
    token_keep_ratio: float    # ρ (cumulative ρ, ρ², ρ³)
    block_keep_ratio: float    # β
    latency_batch: int         # the larger latency batch (besides batch 1)
    latency_rounds: int
    pictures: int              # mosaics drawn in predictions.png
    smoke: bool = False


SEGMENTATION_PLANS = {
    "quick": SegmentationPlan(vim_epochs=1, vim_mosaics=256, dyvm_epochs=1, dyvm_mosaics=128, val_mosaics=32,
                              test_mosaics=64, token_keep_ratio=0.7, block_keep_ratio=0.8, latency_batch=8,
                              latency_rounds=2, pictures=3, smoke=True),
    "default": SegmentationPlan(vim_epochs=3, vim_mosaics=3200, dyvm_epochs=1, dyvm_mosaics=3200, val_mosaics=256,
                                test_mosaics=1000, token_keep_ratio=0.7, block_keep_ratio=0.8, latency_batch=32,
                                latency_rounds=7, pictures=6),
}
MODELS = {"vim": "vim_seg_micro", "dyvm": "dyvm_vim_seg_micro"}
# What both runs share: batches of 32, no image augmentation (the mosaics are the data).
COMMON = dict(task="segmentation", dataset="fashion-mnist", batch_size=32, eval_batch_size=128)


def train_options(plan: SegmentationPlan, which: str, output: str, vim_checkpoint: Optional[str] = None,
                  **extra: Any) -> dict[str, Any]:
    """``train()`` options of the demo's Vim run (``which="vim"``) or DyVM fine-tuning (``"dyvm"``);
    every other recipe value is ``dyvm train``'s default for ``--task segmentation``."""
    if which == "vim":
        options = dict(COMMON, model=MODELS["vim"], epochs=plan.vim_epochs, subset=plan.vim_mosaics)
    else:
        options = dict(COMMON, model=MODELS["dyvm"], checkpoint=vim_checkpoint, epochs=plan.dyvm_epochs,
                       subset=plan.dyvm_mosaics, token_keep_ratio=plan.token_keep_ratio,
                       block_keep_ratio=plan.block_keep_ratio)
    return dict(options, val_size=plan.val_mosaics, output=output, **extra)


def _backbone_gflops(model, stats: dict) -> float:
    """Official-convention GMACs of the backbone alone (without neck and decode head)."""
    from .flops import flops_from_stats

    return flops_from_stats(model, stats)["gflops_official"] - model.head_macs() / 1e9


def _latency(models: dict, batch_sizes: tuple[int, ...], rounds: int) -> dict[str, Any]:
    """Median ms per forward of each model at each batch size, in interleaved A/B rounds."""
    from .utils import interleaved_latency

    out: dict[str, Any] = {}
    device = torch.device("cpu")
    for b in batch_sizes:
        x = torch.randn(b, 1, 56, 56)

        def forward(m):
            def call():
                with torch.no_grad():
                    m(x)
            return call

        times = interleaved_latency({k: forward(m) for k, m in models.items()}, device, rounds,
                                    repeats=3 if b == 1 else 1)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        out[f"b{b}"] = dict(ms=med, dyvm_over_vim=med["dyvm"] / med["vim"], rounds=rounds)
    return out


def run_segmentation_demo(output: str = "dyvm-demo-segmentation", data_path: Optional[str] = None,
                          mode: str = "default", seed: int = 0, progress: bool = True,
                          threads: Optional[int] = None) -> dict[str, Any]:
    """Run the demo and write the report folder; returns ``results.json``'s content."""
    from . import __version__
    from .checkpoint import model_from_checkpoint
    from .demo import _phase, publish, staged_output
    from .engine import train
    from .evaluate import evaluate
    from .flops import flops_from_stats
    from .kernels.scan import resolve_backend
    from .mosaics import BACKGROUND, MOSAIC_CLASSES, FashionMNISTMosaics, garment_pool
    from .utils import cpu_name

    if mode not in SEGMENTATION_PLANS:
        raise ValueError(f"mode={mode!r}; expected one of {list(SEGMENTATION_PLANS)}")
    plan = SEGMENTATION_PLANS[mode]
    garment_pool("test", data_path)  # fail early with the message that names the fix
    started, timings = time.time(), {}
    common = dict(data_path=data_path, seed=seed, no_progress=not progress, threads=threads)
    with staged_output(output) as (output, work):
        ckpt = os.path.join(work, "checkpoints")
        _phase(f"1/4 training the Vim segmenter {MODELS['vim']} from scratch ({plan.vim_epochs} epoch(s) of "
               f"{plan.vim_mosaics:,} mosaics)")
        t = time.time()
        runs = {"vim": train(**train_options(plan, "vim", os.path.join(ckpt, "vim"), **common))}
        timings["vim_train_s"] = time.time() - t
        _phase(f"2/4 fine-tuning the DyVM segmenter {MODELS['dyvm']} from it ({plan.dyvm_epochs} epoch(s) of "
               f"{plan.dyvm_mosaics:,} mosaics, ρ={plan.token_keep_ratio}, β={plan.block_keep_ratio})")
        t = time.time()
        runs["dyvm"] = train(**train_options(plan, "dyvm", os.path.join(ckpt, "dyvm"),
                                             runs["vim"]["best_checkpoint"], **common))
        timings["dyvm_train_s"] = time.time() - t

        _phase(f"3/4 evaluating on {plan.test_mosaics:,} test mosaics (official test garments); latency")
        t = time.time()
        test = FashionMNISTMosaics("test", plan.test_mosaics, data_path)
        loader = torch.utils.data.DataLoader(test, batch_size=128, shuffle=False)
        models, results = {}, {}
        for name, run in runs.items():
            model, _ = model_from_checkpoint(run["best_checkpoint"])
            models[name] = model.eval()
            stats = evaluate(model, loader, torch.device("cpu"), progress=progress, desc=name)
            results[name] = dict(arch=model.arch, miou=stats["miou"], pixel_acc=stats["pixel_acc"],
                                 mean_class_acc=stats["mean_class_acc"], per_class_iou=stats["per_class_iou"],
                                 params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                                 **flops_from_stats(model, stats), gflops_backbone=_backbone_gflops(model, stats),
                                 best_val_miou=run["best_acc"], history=run["history"])
            if model.is_dynamic:
                results[name].update(token_keep=stats["token_keep"], keep_counts=model.keep_counts(),
                                     branch_keep=stats["branch_keep"], branch_keep_mean=stats["branch_keep_mean"],
                                     token_keep_ratio=model.token_ratio)
        v, d = results["vim"], results["dyvm"]
        comparison = dict(miou_drop=v["miou"] - d["miou"], pixel_acc_drop=v["pixel_acc"] - d["pixel_acc"],
                          flops_cut_official=1 - d["gflops_official"] / v["gflops_official"],
                          flops_cut_full=1 - d["gflops_full"] / v["gflops_full"],
                          flops_cut_backbone=1 - d["gflops_backbone"] / v["gflops_backbone"])
        timings["evaluate_s"] = time.time() - t
        t = time.time()
        latency = _latency(models, (1, plan.latency_batch), plan.latency_rounds)
        timings["latency_s"] = time.time() - t

        _phase("4/4 pictures and report")
        figures = _pictures(work, models, test, plan.pictures, MOSAIC_CLASSES, BACKGROUND)
        timings["total_s"] = time.time() - started
        flag = " --quick" if mode == "quick" else ""
        results = dict(vim=v, dyvm=d, comparison=comparison, latency=latency, meta=dict(
            command=f"dyvm demo --task segmentation{flag}" + (f" --seed {seed}" if seed else "") +
            (f" --threads {threads}" if threads else ""), mode=mode, plan=asdict(plan), seed=seed,
            date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), dyvm_version=__version__, torch_version=torch.__version__,
            python=platform.python_version(), machine=f"{cpu_name()}, {os.cpu_count()} cores",
            torch_threads=torch.get_num_threads(), scan_backend=resolve_backend(None), timings_s=timings,
            figures=figures, train_options={k: train_options(plan, k, "OUTPUT", "VIM_CHECKPOINT") for k in MODELS},
            recipes={k: _recipe(r["output"]) for k, r in runs.items()}))
        publish(work, output, results, render_report)
    print(f"\nreport written to {output}/report.md ({timings['total_s'] / 60:.1f} min)", file=sys.stderr)
    return results


def _recipe(run_dir: str) -> dict[str, Any]:
    keys = ("model", "checkpoint", "epochs", "batch_size", "lr", "effective_lr", "min_lr", "warmup_epochs",
            "weight_decay", "drop_path", "token_keep_ratio", "block_keep_ratio", "token_weight", "block_weight",
            "keep_prior", "dynamic_lr_scale", "subset", "val_size")
    with open(os.path.join(run_dir, "config.json")) as fh:
        config = json.load(fh)
    config["checkpoint"] = config["checkpoint"] and "the Vim run's best.pth"
    return {k: config.get(k) for k in keys}


@torch.no_grad()
def _pictures(work: str, models: dict, test, count: int, class_names, background: int) -> dict[str, str]:
    from .mosaics import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    from .viz import pruned_stage_map, segmentation_panels

    images = torch.stack([test[i][0] for i in range(count)])
    truth = test.labels[:count].numpy()
    predictions = {name: models[key](images).argmax(1).numpy() for key, name in (("vim", "Vim"), ("dyvm", "DyVM"))}
    pruned = pruned_stage_map(models["dyvm"], images).numpy()
    pictures = (images[:, 0] * FASHION_MNIST_STD[0] + FASHION_MNIST_MEAN[0]).clamp(0, 1).numpy()
    m = models["dyvm"].num_patches
    counts = [f"{k}/{m}" for k in models["dyvm"].keep_counts()]
    segmentation_panels(pictures, truth, predictions, pruned, class_names, os.path.join(work, "predictions.png"),
                        background=background, stage_counts=counts)
    return {"predictions": "predictions.png"}


def render_report(r: dict[str, Any]) -> str:
    """report.md from results.json's content (every number comes from it)."""
    v, d, c, lat, m = r["vim"], r["dyvm"], r["comparison"], r["latency"], r["meta"]
    plan = m["plan"]
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot", "background"]
    lines = [f"# DyVM segmentation of Fashion-MNIST mosaics ({m['mode']} demo)", ""]
    if plan["smoke"]:
        lines += ["**A smoke run**: a few hundred mosaics; it shows that the pipeline works, not the method.", ""]
    lines += [f"Produced by `{m['command']}` on {m['date']} ({m['machine']}, {m['torch_threads']} torch threads, "
              f"scan backend `{m['scan_backend']}`; dyvm {m['dyvm_version']}, torch {m['torch_version']}, "
              f"Python {m['python']}); total {m['timings_s']['total_s'] / 60:.1f} min. Seed {m['seed']}.", "",
              "## Task", "",
              "56×56 mosaics of 2–4 real Fashion-MNIST garments at random places (`dyvm.mosaics`); every pixel is "
              "labelled with the class of the garment it shows (pixel value ≥ 32, topmost garment), or background: "
              "11 classes. Training and validation mosaics are made of the official training garments (validation: "
              "the 5,000 held out of training), test mosaics of the official test garments; a fixed seed per split "
              "makes the same mosaics everywhere.", "",
              "## Models", "",
              f"- **Vim** (`{v['arch']}`): the segmentation backbone (no class token; D = 64, 8 layers, 4-px patches: "
              "196 tokens; features after layers 1, 3, 5, 7), the official neck (strides ×4, ×2, ×1, ×½ of the patch "
              "grid), a light FPN decode head (1×1 laterals to 64 channels, top-down sum, 1×1 classifier) and an FCN "
              "auxiliary head on the third map (training only). The official UPerHead is not used: at this size it "
              "would cost several times the backbone.",
              f"  Trained from scratch: {plan['vim_epochs']} epoch(s) of {plan['vim_mosaics']:,} mosaics.",
              f"- **DyVM** (`{d['arch']}`): the same, with the official DyVM segmentation backbone: token pruning "
              f"before layers 2, 4, 6 (ρ = {plan['token_keep_ratio']}: keeps {', '.join(map(str, d['keep_counts']))} "
              f"of 196 tokens; pruned tokens keep their last features, which later maps re-insert) and per-image SSM "
              f"branch selection (β = {plan['block_keep_ratio']}). Fine-tuned from the Vim for {plan['dyvm_epochs']} "
              f"epoch(s) of {plan['dyvm_mosaics']:,} mosaics with the official objective (decode CE + 0.4 · aux CE + "
              "20 · token ratio + 20 · block ratio; no teacher).", "",
              f"## Results ({plan['test_mosaics']:,} test mosaics)", "",
              "| model | mIoU % | pixel acc. % | GFLOPs official (whole) | backbone only | GFLOPs full | "
              "token keep per stage | branch keep (measured) |", "|---|---|---|---|---|---|---|---|"]
    for name, x in (("Vim", v), ("DyVM", d)):
        tk = ", ".join(f"{k:.2f}" for k in x["token_keep"]) if x.get("token_keep") else "1 (no pruning)"
        bk = f"{x['branch_keep_mean']:.3f}" if x.get("branch_keep") else "1 (all run)"
        lines.append(f"| {name} | {x['miou']:.2f} | {x['pixel_acc']:.2f} | {x['gflops_official'] * 1e3:.1f} M | "
                     f"{x['gflops_backbone'] * 1e3:.1f} M | {x['gflops_full'] * 1e3:.1f} M | {tk} | {bk} |")
    drop = c["miou_drop"]
    verdict = ("DyVM **loses {:.2f} mIoU points** to the Vim it was fine-tuned from".format(drop) if drop > 0 else
               "DyVM does not lose mIoU ({:+.2f} points)".format(-drop))
    lines += ["", f"{verdict}, with **{100 * c['flops_cut_official']:.1f}% fewer FLOPs** for the whole segmenter "
              f"(official convention, measured branch keep; {100 * c['flops_cut_backbone']:.1f}% of the backbone's: "
              "the neck and decode head are not pruned).", "",
              "GFLOPs are G multiply-accumulates per image (shown in M). `official`: DyVM's convention (one SSM "
              "direction per layer, branch keep measured on the test mosaics), with the neck and decode head; "
              "`full`: both directions, norms, predictors and routers.", "",
              "IoU per class (%):", "",
              "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, x in (("Vim", v), ("DyVM", d)):
        lines.append(f"| {name} | " + " | ".join("–" if iou != iou else f"{iou:.1f}" for iou in x["per_class_iou"]) + " |")
    lines += ["", "## Latency (this machine, fp32, eval, interleaved A/B rounds)", "",
              "| batch | Vim ms | DyVM ms | DyVM / Vim |", "|---|---|---|---|"]
    for key, x in lat.items():
        lines.append(f"| {key[1:]} | {x['ms']['vim']:.2f} | {x['ms']['dyvm']:.2f} | {x['dyvm_over_vim']:.2f} |")
    rounds = next(iter(lat.values()))["rounds"]
    slower = [k[1:] for k, x in lat.items() if x["dyvm_over_vim"] >= 1]
    lines += ["", f"Medians over {rounds} rounds whose order alternates. " + (
        f"DyVM is **not faster** at batch {' and '.join(slower)}: at this size the per-stage bookkeeping (scoring, "
        "gathering, restoring the full-length maps) costs about what the pruned tokens save." if slower else
        "DyVM is faster at both batch sizes."), "",
              "## Pictures", "",
              "Input, ground truth, Vim and DyVM predictions, then DyVM's prediction and the input with the pruned "
              "tokens tinted red (stronger = pruned at an earlier stage).", "", "![predictions](predictions.png)", "",
              "## Recipes (`dyvm train --task segmentation` defaults, plus the plan's sizes)", "",
              "| option | Vim | DyVM |", "|---|---|---|"]
    for key in m["recipes"]["vim"]:
        lines.append(f"| {key} | {m['recipes']['vim'][key]} | {m['recipes']['dyvm'][key]} |")
    lines += ["", "Validation mIoU per epoch: " + "; ".join(
        f"{n} " + ", ".join(f"{h['val_miou']:.2f}" for h in x["history"]) for n, x in (("Vim", v), ("DyVM", d))), "",
              "Phase times (s): " + ", ".join(f"{k} {x:.0f}" for k, x in m["timings_s"].items()), ""]
    return "\n".join(lines)


def segmentation_demo_cli(args) -> int:
    """``dyvm demo --task segmentation``: the classification demo's options that do not apply are refused."""
    for flag in ("long", "train_teacher"):
        if getattr(args, flag, False):
            raise ValueError(f"--{flag.replace('_', '-')} applies to the classification demo only")
    for flag in ("finetune_epochs", "recipe"):
        if getattr(args, flag, None) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} applies to the classification demo only")
    run_segmentation_demo(args.output if args.output != "dyvm-demo" else "dyvm-demo-segmentation", args.data_path,
                          "quick" if args.quick else "default", args.seed, progress=not args.no_progress,
                          threads=args.threads)
    return 0
