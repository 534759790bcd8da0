"""Evaluation: ``dyvm eval`` / :func:`evaluate` and :func:`evaluate_checkpoint`.

Reports top-1/top-5 (segmenters: mIoU and pixel accuracy), the token keep ratio per stage, the
branch keep ratio per layer, GFLOPs in both conventions (branch savings measured on the evaluated
images), latency and throughput.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from contextlib import nullcontext
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from .timing import Runner, interleave, timed


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "none",
             progress: bool = True, desc: str = "eval", hits: bool = False) -> dict[str, Any]:
    """Accuracy (percent) and, for DyVM, token/branch keep ratios, over ``loader``. ``hits``: also
    ``stats["hits"]``, (N,) bool, whether each image's top-1 is right, in the loader's order (for
    :func:`paired_comparison`). A segmenter (``model.task == "segmentation"``) gets :func:`evaluate_segmentation`."""

    if model.task == "segmentation":
        return evaluate_segmentation(model, loader, device, amp, progress, desc)
    model.eval()
    is_dyvm = model.is_dynamic
    correct1 = correct5 = n = 0
    class_correct: dict[int, int] = {}
    class_total: dict[int, int] = {}
    hit_list: list[torch.Tensor] = []
    loss_sum = 0.0
    gate_sum = torch.zeros(model.depth, 2, dtype=torch.float64) if is_dyvm else None
    tie_counts: list[int] = []  # per stage: images whose keep scores tie across the top-k's cut
    # (the stratified rule keeps each stratum's best instead: a tie across a global cut means nothing there)
    ranked_by_top_k = is_dyvm and getattr(model, "token_sampler", None) != "stratified"
    per_class_gates: dict[int, torch.Tensor] = {}
    class_counts: dict[int, int] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc=desc, unit="batch", file=sys.stderr, leave=False)
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
           if amp in ("bf16", "fp16") else nullcontext())
    for batch in loader:
        if bar is not None:
            bar.update(1)
        if batch is None:
            continue
        images, targets = batch[0].to(device), batch[1].to(device)
        with ctx:
            if is_dyvm:
                out = model.forward_inference(images)
                logits = out.logits
                gates = out.gates.double().cpu()                                   # (depth, B, 2)
                gate_sum += gates.sum(1)
                if ranked_by_top_k:
                    ties = [cut_ties(s[..., 0], keep) for s, keep in zip(out.pred_scores, model.keep_counts())]
                    tie_counts = [a + b for a, b in zip(tie_counts, ties)] if tie_counts else ties
                for c in targets.unique().tolist():
                    sel = (targets == c).cpu()
                    per_class_gates[c] = per_class_gates.get(c, 0) + gates[:, sel].sum(1)
                    class_counts[c] = class_counts.get(c, 0) + int(sel.sum())
            else:
                logits = model(images)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == targets).sum().item()
        correct5 += (top == targets[:, None]).any(1).sum().item()
        hit = (top[:, 0] == targets).cpu()
        if hits:
            hit_list.append(hit)
        labels = targets.cpu()
        total = torch.bincount(labels, minlength=logits.shape[1])
        right = torch.bincount(labels, weights=hit.double(), minlength=logits.shape[1])
        for c in total.nonzero().flatten().tolist():  # per class present, not per image
            class_total[c] = class_total.get(c, 0) + int(total[c])
            class_correct[c] = class_correct.get(c, 0) + int(right[c])
        n += images.shape[0]
    if bar is not None:
        bar.close()
    if n == 0:
        raise ValueError("evaluation saw no images (empty or unreadable data)")
    stats: dict[str, Any] = dict(top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, loss=loss_sum / n, images=n,
                                 per_class_top1={c: 100.0 * class_correct[c] / class_total[c] for c in sorted(class_total)})
    if hits:
        stats["hits"] = torch.cat(hit_list)
    if is_dyvm:
        stats["token_keep"] = [k / model.num_patches for k in model.keep_counts()]
        branch = gate_sum / n
        stats["branch_keep"] = branch.tolist()
        stats["branch_keep_mean"] = float(branch.mean())
        stats["branch_keep_per_class"] = {c: (g / class_counts[c]).tolist() for c, g in sorted(per_class_gates.items())}
        if tie_counts:
            stats["keep_ties"] = [t / n for t in tie_counts]
    return stats


def paired_comparison(hits_a: torch.Tensor, hits_b: torch.Tensor) -> dict[str, Any]:
    """Two models' per-image top-1 hits on the same images, (N,) bool each: how many images only A / only B gets
    right, and the exact two-sided McNemar p-value (a binomial test of those discordant images, 1/2 each way when
    the two models are equally accurate), so a top-1 difference can be read against what chance gives."""
    if hits_a.shape != hits_b.shape or hits_a.dim() != 1:
        raise ValueError(f"paired_comparison: hits must be two (N,) tensors of one shape, got {tuple(hits_a.shape)} "
                         f"and {tuple(hits_b.shape)}")
    a, b = hits_a.bool(), hits_b.bool()
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))  # exact integers: no overflow
    return dict(images=int(a.numel()), only_a=only_a, only_b=only_b, p_value=min(1.0, 2 * tail / 2 ** n))


def tied_stages(keep_ties: Optional[Sequence[float]]) -> list[int]:
    """The pruning stages (0-based) whose keep scores tie across the top-k's cut in most images (``keep_ties`` from
    :func:`evaluate`, the share of images per stage)."""
    return [k for k, t in enumerate(keep_ties or ()) if t > 0.5]


def keep_ties_note(keep_ties: Optional[Sequence[float]]) -> Optional[str]:
    """One line for a user when a pruning stage's keep scores tie across the top-k's cut in most images
    (:func:`tied_stages`): there the kept tokens are the same slots in every image (spread evenly over the tied
    ones: :func:`dyvm.dynamic.top_k_spreading_ties`), not ranked by the predictor. None where every stage ranks most
    images."""
    tied = tied_stages(keep_ties)
    if not tied:
        return None
    stages = ", ".join(f"stage {k + 1}" for k in tied)
    shares = ", ".join(f"{100 * t:.0f}%" for t in keep_ties)
    return (f"the keep predictor ties across the top-k cut in most images at {stages} ({shares} per stage): its "
            "kept tokens are the same slots of every image, spread evenly over the tied ones, not ranked (with an "
            "exact-count --token-sampler a keep-ratio loss on the decisions gives the predictor no pull; "
            "--keep-ratio-source probabilities trains a ranking)")


def cut_ties(scores: torch.Tensor, keep: int) -> int:
    """How many images of ``scores`` (B, N) have their ``keep``-th and ``keep+1``-th largest keep scores equal: where
    a predictor's keep log-probabilities saturate (equal, e.g. all 0), inference chooses among ties by position
    (evenly spread over them), not by anything the predictor learnt."""
    if keep >= scores.shape[1] or scores.shape[0] == 0:
        return 0
    top = scores.float().topk(keep + 1, dim=1).values
    return int((top[:, keep - 1] == top[:, keep]).sum())


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """(K, K) int64 counts, rows = true class, columns = predicted, over the pixels of ``pred`` /
    ``target`` (any equal shapes) whose target is not ``ignore_index``."""
    valid = target != ignore_index
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """mIoU, pixel accuracy and mean class accuracy (percent) from a confusion matrix, as mmseg counts
    them: IoU_c = TP / (TP + FP + FN); classes absent from both labels and predictions are left out
    of the means (their IoU is NaN)."""
    c = confusion.double()
    tp, true, predicted = c.diag(), c.sum(1), c.sum(0)
    union = true + predicted - tp
    iou = tp / union                                  # NaN where the class never occurs
    acc = tp / true
    return dict(miou=100.0 * float(iou.nanmean()), pixel_acc=100.0 * float(tp.sum() / c.sum()),
                mean_class_acc=100.0 * float(acc.nanmean()), per_class_iou=(100.0 * iou).tolist())


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "none",
                          progress: bool = True, desc: str = "eval") -> dict[str, Any]:
    """mIoU, pixel accuracy, per-class IoU (percent), mean per-pixel CE and, for DyVM, the token/branch
    keep ratios of a segmenter over ``loader`` of (images (B, C, H, W), labels (B, H, W))."""
    from .losses import SEG_IGNORE_INDEX

    model.eval()
    k = model.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64)
    gate_sum = torch.zeros(model.depth, 2, dtype=torch.float64)
    loss_sum, n, pixels = 0.0, 0, 0
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
           if amp in ("bf16", "fp16") else nullcontext())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc=desc, unit="batch", file=sys.stderr, leave=False)
    for batch in loader:
        if bar is not None:
            bar.update(1)
        images, labels = batch[0].to(device), batch[1].to(device)
        with ctx:
            out = model.forward_inference(images)
            logits = model.segment(out, labels.shape[-2:]).float()
        gate_sum += out.gates.double().sum(1).cpu()
        valid = labels != SEG_IGNORE_INDEX
        loss_sum += nn.functional.cross_entropy(logits, labels, ignore_index=SEG_IGNORE_INDEX, reduction="sum").item()
        pixels += int(valid.sum())
        confusion += confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), k, SEG_IGNORE_INDEX)
        n += images.shape[0]
    if bar is not None:
        bar.close()
    if n == 0:
        raise ValueError("evaluation saw no images (empty data)")
    stats: dict[str, Any] = dict(**segmentation_scores(confusion), loss=loss_sum / max(pixels, 1), images=n)
    if model.is_dynamic:
        stats["token_keep"] = [c / model.num_patches for c in model.keep_counts()]
        branch = gate_sum / n
        stats["branch_keep"] = branch.tolist()
        stats["branch_keep_mean"] = float(branch.mean())
    return stats


def measure_latency(model: nn.Module, batch_size: int, device: torch.device, repeats: int = 10,
                    warmup: int = 2) -> dict[str, float]:
    """Median latency (ms) of an eval forward on random input, and the throughput (images/s)."""
    from .utils import time_call

    model.eval()
    x = torch.randn(batch_size, model.in_chans, model.img_size, model.img_size, device=device)

    def step():
        with torch.no_grad():
            model(x)

    times = time_call(step, device, repeats, warmup)
    median = statistics.median(times)
    return dict(batch=batch_size, latency_ms=1e3 * median, throughput=batch_size / median)


def image_runner(model, images: torch.Tensor, batch: int) -> Runner:
    """A runner of ``model``'s eval forward on real images (N, C, H, W), walking through them ``batch`` at a
    time, one batch per call, from the first again after the last whole batch: a DyVM's routers decide per image,
    so its cost varies with the images, and every batch size averages over all of them (the demo's eight batches
    of 8: docs/speed/2026-12-06d-avx512/batches_of_8.txt)."""
    if batch > images.shape[0]:
        raise ValueError(f"batch {batch} needs at least {batch} images, got {images.shape[0]}")
    model.eval()
    step = {"next": 0}

    def forward():
        i = step["next"]
        step["next"] = 0 if i + 2 * batch > images.shape[0] else i + batch
        with torch.no_grad():
            model(images[i:i + batch])

    return timed(forward, images.device)


def teacher_vs_student(teacher, student, images: torch.Tensor, batch_sizes=(1, 64), rounds: int = 7) -> dict:
    """Inference time of a trained DyVM against its Vim teacher on real images, interleaved per batch size
    (:func:`image_runner`). Per batch: the two medians (ms) and the median per-round time ratio DyVM/Vim
    with its IQR and min-max."""
    groups = {f"b{b}": {"teacher": image_runner(teacher, images, b), "dyvm": image_runner(student, images, b)}
              for b in batch_sizes}
    res = interleave(groups, rounds=rounds, units={f"b{b}": b for b in batch_sizes}, target_seconds=0.3)
    out = {}
    for key, g in res["groups"].items():
        ratio = g["ratios"]["dyvm"]["wall"]["time_summary"]
        out[key] = dict(teacher_ms=1e3 * g["arms"]["teacher"]["seconds_summary"]["wall"]["median"],
                        dyvm_ms=1e3 * g["arms"]["dyvm"]["seconds_summary"]["wall"]["median"],
                        time_ratio=ratio["median"], time_ratio_iqr=[ratio["q1"], ratio["q3"]],
                        time_ratio_range=[ratio["min"], ratio["max"]], latency_cut=1 - ratio["median"])
    return dict(batches=out, rounds=rounds, dtype="fp32", images=int(images.shape[0]), threads=torch.get_num_threads())


def load_for_eval(checkpoint: Optional[str], model_name: Optional[str] = None, overrides: Optional[dict] = None):
    """A model from our checkpoint (architecture inside), or ``model_name`` + an official checkpoint."""
    from .checkpoint import load_checkpoint, model_from_checkpoint, read_checkpoint
    from .model_options import INFERENCE_OPTIONS, given_options, refuse_dynamic_options
    from .models import create_model
    from .models.registry import is_dynamic_name

    overrides = dict(overrides or {})
    if checkpoint is None and model_name is None:
        raise ValueError("give --checkpoint (a dyvm checkpoint) or --model NAME")
    ckpt = read_checkpoint(checkpoint) if checkpoint else None
    arch = model_name or (ckpt.get("arch") if isinstance(ckpt, dict) else None)
    if arch and not is_dynamic_name(arch):
        refuse_dynamic_options(arch, given_options(overrides), "evaluate")
    knobs = {k: overrides.pop(k) for k in INFERENCE_OPTIONS if k in overrides}
    if ckpt is not None and isinstance(ckpt, dict) and ckpt.get("arch") and model_name is None:
        model, _ = model_from_checkpoint(ckpt, **overrides)
    elif model_name is None:
        raise ValueError(f"--checkpoint {checkpoint}: not a dyvm checkpoint (no architecture inside); "
                         "pass --model NAME as well")
    else:
        model = create_model(model_name, **overrides)
        if ckpt is not None:
            load_checkpoint(model, ckpt)
    model.class_names = class_names_of(ckpt, model.num_classes)
    train_config = ckpt.get("train_config") if isinstance(ckpt, dict) else None
    model.trained_canvas = int((train_config or {}).get("canvas") or 0)  # the data it learnt from (dyvm eval's default)
    if knobs:
        if not model.is_dynamic:
            raise ValueError(f"--{'/--'.join(k.replace('_', '-') for k in knobs)} apply to DyVM models only")
        model.configure(**knobs)
    return model


def class_names_of(ckpt: Any, num_classes: int) -> list[str]:
    """The class names a checkpoint stores (``dyvm train`` writes them), else "0", "1", ..."""
    names = ckpt.get("classes") if isinstance(ckpt, dict) else None
    if isinstance(names, (list, tuple)) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def evaluate_checkpoint(checkpoint: Optional[str] = None, model: Optional[str] = None, dataset: str = "fashion-mnist",
                        data_path: Optional[str] = None, split: str = "test", batch_size: int = 256,
                        workers: int = 0, device: Optional[str] = None, latency_batch_sizes=(1, 64),
                        val_size: Optional[int] = None, corrupt: str = "skip", progress: bool = True,
                        download: bool = False, val_fraction: float = 0.2, dtype: str = "fp32",
                        task: Optional[str] = None, canvas: Optional[int] = None,
                        **overrides: Any) -> dict[str, Any]:
    """Everything ``dyvm eval`` reports, as a dict. ``dtype`` "bf16": the accuracy pass runs under bf16 autocast.
    ``canvas``: Fashion-MNIST on a canvas (None: the canvas the checkpoint was trained on, else none).
    A segmenter is evaluated on the Fashion-MNIST mosaics of ``split`` (``val_size``: how many mosaics;
    default all of the split's)."""
    from .data import build_dataset, build_transform, collate_skip_none, data_config_for
    from .flops import flops_from_stats

    from .model_options import check_task

    if task is not None:
        check_task(task)
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = load_for_eval(checkpoint, model, overrides).to(dev)
    if task is not None and task != net.task:
        raise ValueError(f"--task {task}: {getattr(net, 'arch', model)} is a {net.task} model")
    if net.task == "segmentation":
        return _evaluate_segmenter(net, checkpoint, model, dev, split, batch_size, workers, data_path, val_size,
                                   latency_batch_sizes, progress, dtype)
    data_cfg = data_config_for(net)
    if canvas is None:
        canvas = net.trained_canvas if dataset == "fashion-mnist" else 0
    ds = build_dataset(dataset, split, build_transform(data_cfg, False), data_path, net.in_chans, val_size, corrupt,
                       download=download, val_fraction=val_fraction, canvas=canvas)
    names = net.class_names
    if checkpoint and names != [str(i) for i in range(len(names))] and list(ds.classes) != names:
        raise ValueError(f"the data's classes ({', '.join(map(str, ds.classes[:6]))}{', ...' if len(ds.classes) > 6 else ''}) "
                         f"differ from those the checkpoint was trained on ({', '.join(names[:6])}"
                         f"{', ...' if len(names) > 6 else ''}); check --dataset / --data-path")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_skip_none)
    stats = evaluate(net, loader, dev, amp="bf16" if dtype == "bf16" else "none", progress=progress)
    stats["per_class_top1"] = {names[c] if c < len(names) else str(c): v for c, v in stats["per_class_top1"].items()}
    result: dict[str, Any] = dict(model=getattr(net, "arch", model), checkpoint=checkpoint, split=split, classes=names,
                                  canvas=canvas, **stats,
                                  **flops_from_stats(net, stats))
    return _with_run_facts(result, net, dev, latency_batch_sizes, dtype)


def _with_run_facts(result: dict[str, Any], net, dev, latency_batch_sizes, dtype: str) -> dict[str, Any]:
    """What every ``evaluate_checkpoint`` result adds after its metrics: a DyVM's inference knobs, latency
    per batch size, device, precision and thread count."""
    if net.is_dynamic:
        result.update(token_keep_ratio=net.token_ratio, router_threshold=net.router_threshold, score=net.score)
    result["latency"] = [measure_latency(net, b, dev) for b in latency_batch_sizes]
    result["device"] = str(dev)
    result["dtype"] = dtype
    result["threads"] = torch.get_num_threads()
    return result


def _evaluate_segmenter(net, checkpoint, model, dev, split, batch_size, workers, data_path, val_size,
                        latency_batch_sizes, progress, dtype: str = "fp32") -> dict[str, Any]:
    """``evaluate_checkpoint`` for a segmenter: the mosaics of ``split``, mIoU, FLOPs, latency."""
    from .flops import flops_from_stats
    from .mosaics import CANVAS, MOSAIC_CLASSES, FashionMNISTMosaics

    if net.num_classes != len(MOSAIC_CLASSES) or net.img_size != CANVAS or net.in_chans != 1:
        raise ValueError(f"{getattr(net, 'arch', model)}: the mosaics need a 1-channel {CANVAS}-px segmenter with "
                         f"{len(MOSAIC_CLASSES)} classes (got {net.in_chans}, {net.img_size}, {net.num_classes})")
    ds = FashionMNISTMosaics(split, val_size if split == "val" else None, data_path)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    stats = evaluate(net, loader, dev, amp="bf16" if dtype == "bf16" else "none", progress=progress)
    result: dict[str, Any] = dict(model=getattr(net, "arch", model), checkpoint=checkpoint, task="segmentation",
                                  split=split, classes=list(MOSAIC_CLASSES), **stats, **flops_from_stats(net, stats))
    return _with_run_facts(result, net, dev, latency_batch_sizes, dtype)


def format_report(r: dict[str, Any]) -> str:
    canvas = f" on a {r['canvas']}-px canvas" if r.get("canvas") else ""
    lines = [f"model {r['model']}  ({r['split']} split, {r['images']} {'mosaics' if 'miou' in r else 'images'}{canvas}, "
             f"{r.get('dtype', 'fp32')})"]
    if "miou" in r:
        lines.append(f"  mIoU {r['miou']:.2f}%   pixel accuracy {r['pixel_acc']:.2f}%   loss {r['loss']:.4f}")
        lines.append("  IoU per class: " + ", ".join(f"{c} {v:.1f}%" for c, v in zip(r["classes"], r["per_class_iou"])))
    else:
        lines.append(f"  top-1 {r['top1']:.2f}%   top-5 {r['top5']:.2f}%   loss {r['loss']:.4f}")
    lines.append(f"  GFLOPs (GMACs/image): official {r['gflops_official']:.4f}   full {r['gflops_full']:.4f}")
    if r.get("per_class_top1"):
        lines.append("  top-1 per class: " + ", ".join(f"{c} {v:.1f}%" for c, v in r["per_class_top1"].items()))
    if "token_keep" in r:
        lines.append("  token keep per stage: " + ", ".join(f"{k:.3f}" for k in r["token_keep"]))
    if r.get("keep_ties"):
        lines.append("  keep scores tied across the top-k cut, per stage: "
                     + ", ".join(f"{100 * t:.1f}%" for t in r["keep_ties"]) + " of the images")
        note = keep_ties_note(r["keep_ties"])
        if note:
            lines.append(f"  note: {note}")
    if "branch_keep" in r:
        lines.append(f"  branch keep (mean {r['branch_keep_mean']:.3f}) per layer [fwd/bwd]: " +
                     " ".join(f"{f:.2f}/{b:.2f}" for f, b in r["branch_keep"]))
    for lat in r["latency"]:
        lines.append(f"  latency batch {lat['batch']}: {lat['latency_ms']:.1f} ms   "
                     f"throughput {lat['throughput']:.1f} img/s  ({r['device']}, {r['threads']} threads)")
    return "\n".join(lines)


def eval_cli(args) -> int:
    from .model_options import model_overrides
    from .models.registry import is_dynamic_name

    # a DyVM name scales pruning_loc to --depth as training does; without one the checkpoint decides
    overrides = model_overrides(args, dynamic=True if args.model and is_dynamic_name(args.model) else None)
    result = evaluate_checkpoint(args.checkpoint, args.model, args.dataset, args.data_path, args.split,
                                 args.batch_size or 64,
                                 args.workers, args.device, tuple(args.latency_batch_sizes), args.val_size, args.corrupt,
                                 progress=not args.no_progress, download=args.download,
                                 val_fraction=args.val_fraction, dtype=args.dtype, task=args.task,
                                 canvas=args.canvas, **overrides)
    print(format_report(result))
    if args.json:
        from .checkpoint import atomic_write

        atomic_write(args.json, lambda tmp: open(tmp, "w").write(json.dumps(result, indent=2)))
    return 0
