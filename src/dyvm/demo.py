"""``dyvm demo``: the paper's pipeline in miniature on Fashion-MNIST, with a report.

1. train a small Vim teacher from scratch (28 px, patch 4: 49 patch tokens + a class token);
2. fine-tune DyVM from it with distillation from the frozen teacher (the paper's recipe, scaled
   down: fewer epochs, no mixup/RandAugment on 28-px images);
3. evaluate both on the official 10,000-image test split (model selection used a validation
   split held out of the training set);
4. sweep the inference keep ratio of the trained DyVM (no retraining) with its predictor, random
   and static (evenly spaced) token selection: accuracy vs GFLOPs;
5. write ``report.md``, ``results.json`` and PNG figures into ``--output`` (atomically).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

# Model and schedule per mode. Time budgets on 2 CPU cores: quick ≈ 3 min, default ≈ 15 min,
# long ≤ 90 min (the run that checks the paper's claim).
MODEL = dict(img_size=28, patch_size=4, in_chans=1)


@dataclass
class DemoPlan:
    depth: int
    embed_dim: int
    pruning_loc: list
    token_keep_ratio: float
    block_keep_ratio: float
    teacher_epochs: int
    dyvm_epochs: int
    teacher_lr: float
    dyvm_lr: float
    subset: Optional[int]
    test_images: Optional[int]
    sweep: list = field(default_factory=list)
    ablations: bool = False
    batch_size: int = 128
    scale_min: float = 1.0        # RandomResizedCrop's minimum area (1.0: no crop augmentation)
    warmup_epochs: int = 0


PLANS = {
    "quick": DemoPlan(depth=4, embed_dim=48, pruning_loc=[1, 2, 3], token_keep_ratio=0.7, block_keep_ratio=0.8,
                      teacher_epochs=2, dyvm_epochs=1, teacher_lr=8e-3, dyvm_lr=1e-3, subset=6000,
                      test_images=2000, sweep=[1.0, 0.85, 0.7, 0.55, 0.4]),
    "default": DemoPlan(depth=8, embed_dim=64, pruning_loc=[2, 4, 6], token_keep_ratio=0.7, block_keep_ratio=0.8,
                        teacher_epochs=2, dyvm_epochs=1, teacher_lr=8e-3, dyvm_lr=1e-3, subset=None,
                        test_images=None, sweep=[1.0, 0.8, 0.6, 0.4]),
    "long": DemoPlan(depth=8, embed_dim=64, pruning_loc=[2, 4, 6], token_keep_ratio=0.7, block_keep_ratio=0.8,
                     teacher_epochs=7, dyvm_epochs=5, teacher_lr=8e-3, dyvm_lr=1e-3, subset=None, test_images=None,
                     sweep=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4], ablations=False, scale_min=0.8, warmup_epochs=1),
}


def _phase(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"\n== {msg}", file=sys.stderr, flush=True)


def _test_loader(model, data_path, n_images, batch_size=500):
    from torch.utils.data import DataLoader, Subset

    from .data import build_dataset, build_transform, data_config_for

    ds = build_dataset("fashion-mnist", "test", build_transform(data_config_for(model), False), data_path,
                       model.in_chans)
    if n_images:
        ds = Subset(ds, list(range(n_images)))
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def _latency(model, batch_sizes=(1, 64)) -> dict[str, float]:
    from .evaluate import measure_latency

    return {f"b{b}": measure_latency(model, b, torch.device("cpu"), repeats=7 if b == 1 else 5)["latency_ms"]
            for b in batch_sizes}


def _summarise(model, stats: dict, latency: dict) -> dict[str, Any]:
    from .flops import flops_from_stats
    from .models.dyvm import DyVM

    out = dict(top1=stats["top1"], top5=stats["top5"], latency_ms=latency,
               params_m=sum(p.numel() for p in model.parameters()) / 1e6, **flops_from_stats(model, stats))
    if isinstance(model, DyVM):
        out.update(token_keep=stats["token_keep"], branch_keep=stats.get("branch_keep"),
                   branch_keep_mean=stats.get("branch_keep_mean", 1.0),
                   branch_keep_per_class=stats.get("branch_keep_per_class"),
                   token_keep_ratio=model.token_ratio, router_threshold=model.router_threshold)
    return out


def run_demo(output: str = "dyvm-demo", data_path: Optional[str] = None, mode: str = "default", seed: int = 0,
             teacher_epochs: Optional[int] = None, dyvm_epochs: Optional[int] = None, progress: bool = True,
             threads: Optional[int] = None, download: bool = False) -> dict[str, Any]:
    """Run the demo and write the report folder; returns ``results.json``'s content."""
    from . import __version__
    from .checkpoint import model_from_checkpoint
    from .data import FASHION_MNIST_CLASSES, find_fashion_mnist
    from .engine import train
    from .evaluate import evaluate
    from .flops import count_flops
    from .viz import accuracy_flops_curve, branch_heatmap, pruning_overlay, training_curves

    if mode not in PLANS:
        raise ValueError(f"mode={mode!r}; expected one of {list(PLANS)}")
    plan = PLANS[mode]
    if teacher_epochs is not None:
        plan.teacher_epochs = teacher_epochs
    if dyvm_epochs is not None:
        plan.dyvm_epochs = dyvm_epochs
    if plan.teacher_epochs < 1 or plan.dyvm_epochs < 1:
        raise ValueError("teacher_epochs and dyvm_epochs must be >= 1")
    try:
        find_fashion_mnist(data_path)  # fail early with a clear message (naming the command that fixes it)
    except FileNotFoundError:
        if not download:
            raise
        from .data import FashionMNIST

        data_path = data_path or "data"
        FashionMNIST(data_path, download=True)
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".dyvm-demo-", dir=parent)
    quiet = False  # the phase lines are printed even with --no-progress (it only turns off the bars)
    started = time.time()
    timings: dict[str, float] = {}
    try:
        arch = dict(MODEL, depth=plan.depth, embed_dim=plan.embed_dim)
        common = dict(dataset="fashion-mnist", data_path=data_path, batch_size=plan.batch_size, subset=plan.subset,
                      val_size=5000, eval_batch_size=500, mixup=0.0, cutmix=0.0, aa="none", reprob=0.0, smoothing=0.0,
                      repeated_aug=1, scale_min=plan.scale_min, hflip=0.5, seed=seed, no_progress=not progress,
                      threads=threads, warmup_epochs=plan.warmup_epochs, weight_decay=0.05, min_lr=1e-5,
                      warmup_lr=1e-5)
        ckpt_dir = os.path.join(work, "checkpoints")

        # 1. teacher --------------------------------------------------------------------
        _phase(f"1/5 training the Vim teacher ({plan.teacher_epochs} epochs, D={plan.embed_dim}, "
               f"depth {plan.depth}, 49 patches)", quiet)
        t = time.time()
        teacher_run = train(model="vim_tiny", output=os.path.join(ckpt_dir, "teacher"), epochs=plan.teacher_epochs,
                            lr=plan.teacher_lr, drop_path=0.0, **arch, **common)
        timings["teacher_train_s"] = time.time() - t
        teacher_ckpt = teacher_run["best_checkpoint"]

        # 2. DyVM (and, in the long run, the token-only / block-only ablations) -------------
        variants = {"dyvm": {}}
        if plan.ablations:
            variants.update(token_only={"use_routers": False}, block_only={"use_pruning": False})
        runs = {}
        for name, extra in variants.items():
            _phase(f"2/5 fine-tuning {name} from the teacher with distillation ({plan.dyvm_epochs} epochs, "
                   f"ρ={plan.token_keep_ratio}, β={plan.block_keep_ratio})", quiet)
            t = time.time()
            runs[name] = _train_dyvm(train, name, extra, teacher_ckpt, os.path.join(ckpt_dir, name), plan, arch, common)
            timings[f"{name}_train_s"] = time.time() - t

        # 3. evaluation on the test split -------------------------------------------------
        _phase("3/5 evaluating on the Fashion-MNIST test split", quiet)
        t = time.time()
        teacher, _ = model_from_checkpoint(teacher_ckpt)
        loader = _test_loader(teacher, data_path, plan.test_images)
        results: dict[str, Any] = {}
        results["teacher"] = _summarise(teacher, evaluate(teacher, loader, torch.device("cpu"), progress=progress,
                                                          desc="teacher"), _latency(teacher))
        models = {}
        for name, run in runs.items():
            model, _ = model_from_checkpoint(run["best_checkpoint"])
            models[name] = model
            stats = evaluate(model, loader, torch.device("cpu"), progress=progress, desc=name)
            results[name] = _summarise(model, stats, _latency(model))
            results[name]["flops_reduction_official"] = 1 - results[name]["gflops_official"] / results["teacher"]["gflops_official"]
            results[name]["flops_reduction_full"] = 1 - results[name]["gflops_full"] / results["teacher"]["gflops_full"]
            results[name]["top1_drop"] = results["teacher"]["top1"] - results[name]["top1"]
        timings["evaluate_s"] = time.time() - t

        # 4. accuracy vs FLOPs by turning the inference keep ratio -------------------------
        _phase("4/5 accuracy vs GFLOPs: sweeping the inference keep ratio (predictor, random, static)", quiet)
        t = time.time()
        dy = models["dyvm"]
        curves: dict[str, list] = {}
        from tqdm import tqdm

        jobs = [(s, r) for s in ("predictor", "random", "static") for r in plan.sweep]
        for score, rho in tqdm(jobs, desc="sweep", unit="eval", file=sys.stderr, disable=not progress):
            dy.configure(token_keep_ratio=rho, score=score)
            torch.manual_seed(seed)
            stats = evaluate(dy, loader, torch.device("cpu"), progress=False)
            g = count_flops(dy, "official", branch_keep_ratio=stats["branch_keep_mean"])
            curves.setdefault(score, []).append(dict(token_keep_ratio=rho, gflops_official=g, top1=stats["top1"],
                                                     branch_keep_mean=stats["branch_keep_mean"]))
        dy.configure(token_keep_ratio=plan.token_keep_ratio, score="predictor")
        results["curves"] = curves
        timings["sweep_s"] = time.time() - t

        # 5. pictures and report ------------------------------------------------------------
        _phase("5/5 pictures and report", quiet)
        figures = _figures(work, dy, loader, results, runs, teacher_run, FASHION_MNIST_CLASSES,
                           accuracy_flops_curve, branch_heatmap, pruning_overlay, training_curves)
        timings["total_s"] = time.time() - started
        results["meta"] = _meta(mode, plan, seed, data_path, output, timings, figures, __version__)
        results["claim"] = _claim(results)
        with open(os.path.join(work, "results.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        with open(os.path.join(work, "report.md"), "w") as fh:
            fh.write(render_report(results))
        _move_into_place(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"\nreport written to {output}/report.md ({timings['total_s'] / 60:.1f} min)", file=sys.stderr)
    return results


def _train_dyvm(train, name, extra, teacher_ckpt, out, plan: DemoPlan, arch, common):
    """Fine-tune one DyVM variant; ``extra`` switches a mechanism off for the ablations."""
    return train(model="dyvm_vim_tiny", output=out, checkpoint=teacher_ckpt, epochs=plan.dyvm_epochs,
                 lr=plan.dyvm_lr, token_keep_ratio=plan.token_keep_ratio, block_keep_ratio=plan.block_keep_ratio,
                 pruning_loc=plan.pruning_loc, drop_path=0.0, keep_prior=True, dynamic_lr_scale=20.0,
                 **extra, **arch, **common)


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
    curves = {f"DyVM, {s} scores" if s == "predictor" else f"{s} pruning (same model)":
              [(p["gflops_official"], p["top1"]) for p in pts] for s, pts in results["curves"].items()}
    points = {"trained DyVM operating point": (d["gflops_official"], d["top1"]),
              "Vim teacher": (results["teacher"]["gflops_official"], results["teacher"]["top1"])}
    accuracy_flops_curve(curves, os.path.join(work, "accuracy_vs_flops.png"), points)
    figures["accuracy_vs_flops"] = "accuracy_vs_flops.png"
    histories = {"Vim teacher": teacher_run["history"]}
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


def _claim(results: dict) -> dict[str, Any]:
    """The paper's finding at this scale: ≥35% fewer FLOPs (official), ≤1.0 point lost, and better
    than random/static pruning at equal FLOPs."""
    d = results["dyvm"]
    curves = results["curves"]
    at = {}
    for s in ("random", "static"):
        at[s] = _interp(curves.get(s, []), d["gflops_official"])
    beats = {s: (v is not None and d["top1"] > v) for s, v in at.items()}
    return dict(flops_reduction_official=d["flops_reduction_official"], top1_drop=d["top1_drop"],
                flops_cut_at_least_35pct=d["flops_reduction_official"] >= 0.35, top1_drop_at_most_1pt=d["top1_drop"] <= 1.0,
                top1_at_equal_flops=at, beats_random_and_static=all(beats.values()), beats=beats)


def _meta(mode, plan, seed, data_path, output, timings, figures, version) -> dict[str, Any]:
    from .bench import cpu_name
    from .kernels.scan import resolve_backend

    cpu = cpu_name()
    command = "dyvm demo" + {"quick": " --quick", "long": " --long", "default": ""}[mode] + (f" --seed {seed}" if seed else "")
    return dict(command=command, argv=sys.argv, mode=mode, seed=seed, plan=plan.__dict__, data_path=data_path,
                date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), dyvm_version=version, torch_version=torch.__version__,
                python=platform.python_version(), machine=f"{cpu}, {os.cpu_count()} cores",
                torch_threads=torch.get_num_threads(), scan_backend=resolve_backend(None), timings_s=timings,
                figures=figures, output=output)


def _fmt_keep(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def render_report(r: dict[str, Any]) -> str:
    """report.md from results.json's content (every number of the report comes from it)."""
    t, d, m = r["teacher"], r["dyvm"], r["meta"]
    rows = [("Vim teacher", t)] + [(n.replace("_", "-"), r[n]) for n in ("dyvm", "token_only", "block_only") if n in r]
    lines = [f"# DyVM on Fashion-MNIST ({m['mode']} demo)", "",
             f"Produced by `{m['command']}` on {m['date']} ({m['machine']}, {m['torch_threads']} torch threads, "
             f"scan backend `{m['scan_backend']}`; dyvm {m['dyvm_version']}, torch {m['torch_version']}, "
             f"Python {m['python']}); total {m['timings_s']['total_s'] / 60:.1f} min. Seed {m['seed']}.", "",
             f"Teacher: a Vim (middle class token, bidirectional SSM) trained from scratch on "
             f"{'the first ' + format(m['plan']['subset'], ',') + ' of ' if m['plan']['subset'] else ''}the 55,000 training "
             "images (5,000 more held out for model selection). DyVM: fine-tuned from it with distillation, token pruning before "
             f"layers {m['plan']['pruning_loc']} (ρ = {m['plan']['token_keep_ratio']}) and per-image SSM branch selection "
             f"(β = {m['plan']['block_keep_ratio']}). Accuracy on the official test split "
             f"({'all 10,000' if not m['plan']['test_images'] else m['plan']['test_images']} images).", "",
             "| model | top-1 % | GFLOPs official | GFLOPs full | latency b1 ms | latency b64 ms | token keep per stage | branch keep (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, x in rows:
        tk = _fmt_keep(x["token_keep"]) if x.get("token_keep") else "1 (no pruning)"
        bk = f"{x['branch_keep_mean']:.3f}" if x.get("branch_keep") else "1 (all run)"
        lines.append(f"| {name} | {x['top1']:.2f} | {x['gflops_official'] * 1e3:.2f} M | {x['gflops_full'] * 1e3:.2f} M | "
                     f"{x['latency_ms']['b1']:.2f} | {x['latency_ms']['b64']:.1f} | {tk} | {bk} |")
    c = r["claim"]
    lines += ["", "GFLOPs are G multiply-accumulates per image (shown in M here): `official` is DyVM's convention (one SSM "
              "direction per layer, measured branch keep ratio), `full` counts both directions, norms, predictors and "
              "routers.", "",
              "## The paper's claim at this scale", "",
              f"- FLOPs cut (official convention): **{100 * c['flops_reduction_official']:.1f}%** "
              f"({'≥' if c['flops_cut_at_least_35pct'] else '<'} 35%)",
              f"- top-1 change vs the teacher: **{-c['top1_drop']:+.2f} points** "
              f"({'within' if c['top1_drop_at_most_1pt'] else 'more than'} 1.0 point lost)",
              "- at DyVM's FLOPs, random pruning of the same model reaches "
              + ", static (evenly spaced) pruning ".join(
                  f"{v:.2f}%" if v is not None else "n/a" for v in c["top1_at_equal_flops"].values())
              + f" vs DyVM's {d['top1']:.2f}% "
              f"({'DyVM wins both' if c['beats_random_and_static'] else 'DyVM does not win both'})", "",
              "![accuracy vs FLOPs](accuracy_vs_flops.png)", "",
              "## Branch keep per layer (fraction of test images running forward / backward)", "",
              "| layer | " + " | ".join(str(i) for i in range(len(d["branch_keep"]))) + " |",
              "|---|" + "---|" * len(d["branch_keep"]),
              "| fwd | " + " | ".join(f"{f:.2f}" for f, _ in d["branch_keep"]) + " |",
              "| bwd | " + " | ".join(f"{b:.2f}" for _, b in d["branch_keep"]) + " |", "",
              "![branch usage](branch_usage.png)", "",
              "## Which patches survive", "", "![pruning](pruning.png)", "",
              "## Training", "", "![training curves](training.png)", "",
              "## Accuracy vs GFLOPs when turning the inference keep ratio (no retraining)", "",
              "| ρ | " + " | ".join(f"{s} GFLOPs (M) / top-1" for s in r["curves"]) + " |",
              "|---|" + "---|" * len(r["curves"])]
    first = next(iter(r["curves"].values()))
    for i, p in enumerate(first):
        cells = [f"{pts[i]['gflops_official'] * 1e3:.2f} / {pts[i]['top1']:.2f}" for pts in r["curves"].values()]
        lines.append(f"| {p['token_keep_ratio']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in m["timings_s"].items()), ""]
    return "\n".join(lines)


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
    run_demo(args.output, args.data_path, mode, args.seed, args.teacher_epochs, args.dyvm_epochs,
             progress=not args.no_progress, threads=args.threads, download=args.download)
    return 0
