"""Training: ``dyvm train`` / :func:`train`, laid out as DeiT's ``engine.py``.

* :func:`resolve_config`: options → a :class:`TrainConfig` with the recipe filled in, checked;
* :func:`setup_training`: process group, data, models, losses, optimiser → a :class:`TrainingRun`;
* :func:`train_one_epoch`: the steps of one epoch → the averaged loss parts;
* :func:`dyvm.evaluate.evaluate` on the validation split after each epoch;
* :func:`resume` / :func:`save_checkpoints`: OUTPUT/checkpoint.pth and best.pth;
* :func:`train`: these in order, with the per-epoch log and progress lines.

Tasks (``--task``): ``classification`` (Fashion-MNIST or an ImageFolder) and ``segmentation``
(Fashion-MNIST mosaics, :mod:`dyvm.mosaics`, with a segmenter such as ``vim_seg_micro``: per-pixel
CE + 0.4 · auxiliary CE, and for DyVM the official ratio terms, no teacher; model selection by
validation mIoU).

Modes, chosen by the model name and the checkpoint:
* pre-train a Vim from scratch (``--model vim_tiny``, no checkpoint);
* fine-tune a Vim (``--model vim_small --checkpoint vim_s_midclstok_80p5acc.pth``; a head with
  another class count is replaced);
* fine-tune DyVM from a Vim (``--model dyvm_vim_small --checkpoint vim_s....pth``): predictors and
  routers start fresh, the frozen teacher is the same Vim (or ``--teacher``), the loss is DyVM's.

Multi-process: ``torchrun --nproc_per_node N -m dyvm train ...`` (gloo on CPU, nccl on CUDA).
Determinism: every epoch reseeds all generators from (seed, epoch, rank) and the Gumbel noise is
keyed by sample id, so a resumed run reproduces an uninterrupted one and N processes reproduce one
process with the same global batch.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .data import (FASHION_MNIST_MEAN, FASHION_MNIST_STD, build_dataset, build_transform, check_canvas,
                   collate_skip_none, data_config_for, num_classes_of)
from .dynamic import SampleNoise
from .model_options import (DYNAMIC_OPTIONS, TASKS, check_task, default_pruning_loc,  # noqa: F401 (re-exported)
                            given_options, model_overrides, refuse_dynamic_options)
from .models.registry import create_model, is_dynamic_name, list_models, static_counterpart

log = logging.getLogger("dyvm.train")

# Spec §5.2: the official per-size DyVM scripts (lr is per 512 images of global batch).
DYVM_PRESETS = {
    "tiny": dict(lr=3e-5, batch_size=128, token_keep_ratio=0.9, block_keep_ratio=0.8),
    "small": dict(lr=5e-5, batch_size=64, token_keep_ratio=0.7, block_keep_ratio=0.8),
    "base": dict(lr=5e-5, batch_size=32, token_keep_ratio=0.7, block_keep_ratio=0.7),
}
DYVM_COMMON = dict(epochs=30, warmup_epochs=5, warmup_lr=1e-5, min_lr=1e-6, weight_decay=1e-8, drop_path=0.0,
                   mixup=0.8, cutmix=1.0, smoothing=0.1, aa="rand-m9-mstd0.5-inc1", reprob=0.25, repeated_aug=3,
                   token_weight=10.0, block_weight=10.0, distill_weight=0.5)
# DyVM fine-tuning recipes. ``paper``: exactly the official scripts. ``dyvm`` (the default): the paper's,
# plus the departures that docs/study measured to keep accuracy on short runs and small data; each
# one is named in RECIPE_DEPARTURES and in the demo report.
DYVM_RECIPES = {
    "paper": dict(keep_prior=False, dynamic_lr_scale=1.0, ratio_warmup=0.0, token_sampler="gumbel", token_noise=1.0,
                  block_loss_weighting="layers", drop_pruned_tail=False, keep_ratio_source="decisions",
                  keep_guidance=0.0),
    "dyvm": dict(keep_prior=True, dynamic_lr_scale=20.0, ratio_warmup=0.0, token_sampler="topk", token_noise=0.0,
                 block_loss_weighting="layers", drop_pruned_tail=True, keep_ratio_source="decisions",
                 keep_guidance=0.0),
}
NO_DYNAMIC = dict(keep_prior=False, dynamic_lr_scale=1.0, ratio_warmup=0.0)  # a Vim has no predictors/routers
# options that only a DyVM reads: given for a plain Vim they are an error, not silently ignored
DYVM_ONLY = tuple(name for name in DYNAMIC_OPTIONS if name not in ("use_routers", "use_pruning")) + (
    "keep_prior", "dynamic_lr_scale", "ratio_warmup", "block_loss_weighting", "token_weight", "block_weight",
    "distill_weight", "keep_guidance", "teacher")
RECIPE_DEPARTURES = {
    "keep_prior": "new predictors start at the stage's target keep ratio instead of 1/2",
    "dynamic_lr_scale": "predictors and routers train at this multiple of the backbone lr (1 in the paper)",
    "token_sampler": "training draws each stage's keep set by Gumbel-top-k, exactly inference's kept count per image "
                     "(the paper: a Gumbel-softmax per token, the count held at ρ only on average); the keep-ratio "
                     "loss still reads the decisions, whose mean is then ρ by construction, so the predictors' "
                     "p(keep) saturates and inference chooses among ties (spread evenly; --keep-ratio-source "
                     "probabilities: the loss reads p(keep))",
    "token_noise": "the top-k sampler draws no Gumbel noise: training keeps inference's own top-k (tied scores "
                   "spread over the tied slots as at inference), so a stage whose predictor ties trains on the slots "
                   "inference keeps, not on noise-chosen ones (the paper samples every decision; --token-noise 1 "
                   "samples Gumbel-top-k in proportion to p(keep))",
    "drop_pruned_tail": "with an exact-count sampler training drops the pruned tail of the sequence: the paper's "
                        "values, but no gradient at a pruned token's keep decision (the paper keeps the tail, masked; "
                        "--no-drop-pruned-tail)",
    "block_loss_weighting": "the branch keep-ratio loss weights each layer by what its branches cost at inference "
                            "(its kept tokens), so β is the share of branch compute that runs (the paper: every "
                            "layer alike, so skips in pruned layers count as much as in full ones)",
    "ratio_warmup": "keep-ratio targets (ρ_k and β) go linearly from 1 to their values over this fraction of the "
                    "steps (fixed in the paper)",
    "keep_guidance": "a loss of this weight pulls each stage's p(keep) toward the frozen teacher's own choice (its "
                     "live patches with the most class-token influence from that layer on; binary cross-entropy), "
                     "which docs/study's twenty-second round found to rank above trained static selection where "
                     "objects move in the image (the paper: no such term)",
    "keep_ratio_source": "with an exact-count sampler the keep-ratio loss reads the predicted p(keep), not the "
                         "decisions (the paper's sampler's decisions vary, so its loss on them holds p(keep) at ρ "
                         "on average)",
}

# Vim/DeiT recipe for training a Vim (from scratch, or fine-tuning to new classes with a checkpoint).
VIM_PRETRAIN = dict(lr=5e-4, epochs=300, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5, weight_decay=0.05,
                    drop_path=0.05, mixup=0.8, cutmix=1.0, smoothing=0.1, aa="rand-m9-mstd0.5-inc1", reprob=0.25,
                    repeated_aug=3)
VIM_FINETUNE = dict(VIM_PRETRAIN, lr=1e-4, epochs=30, warmup_epochs=2, drop_path=0.0)
# Small images (<= SMALL_IMAGE px): what the demo measured on 28-px Fashion-MNIST. No RandAugment,
# mixup/cutmix or random erasing (they destroy a 28-px image); a mild crop (>= 80% of the area, the
# demo's --long setting: on 5k handwritten digits a run without it over-fitted from epoch 3 on, at
# 88-89% held-out top-1, one with it reached 94% after 8 epochs); no flip (it turns digits and
# letters into other symbols; pass --hflip 0.5 for pictures of objects).
SMALL_IMAGE = 64
SMALL_AUG = dict(mixup=0.0, cutmix=0.0, aa="none", reprob=0.0, repeated_aug=1, smoothing=0.0, scale_min=0.8,
                 hflip=0.0)
# ... and a Vim trained from scratch on them: the demo teacher's recipe (AdamW at an effective lr of
# 2e-3, i.e. base lr 8e-3 at its batch of 128), in batches of 32: 4× the steps per epoch, which a
# small data set of a few thousand images needs (measured on handwritten digits, see README).
SMALL_PRETRAIN = dict(SMALL_AUG, batch_size=32, epochs=30, warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-5,
                      weight_decay=0.05, drop_path=0.0)
SMALL_EFFECTIVE_LR = 2e-3  # whatever the batch: base lr = 2e-3 × 512 / batch
LARGE_AUG = dict(scale_min=0.08, hflip=0.5)
WARMUP_SHARE = 0.2  # a preset's warm-up never takes more than 20% of the epochs
# DyVM fine-tuning on small images with the dyvm recipe: the backbone must adapt to the pruned
# sequences within a few epochs; docs/study measured base lr 1e-4 … 8e-3 at one epoch and 3e-3 was best
# (the paper's 3e-5 … 5e-5 is for 30 ImageNet epochs and stays the `paper` recipe's).
SMALL_DYVM_LR = 3e-3
# ... and where it prunes (docs/study, the demo's operating point): token pruning before the last three
# layers costs almost nothing after a short fine-tune (the fine-tuned DyVM scores the same with no token
# pruned), while skipping SSM branches does; so the cut comes mostly from tokens (ρ 0.3: 14, 4 and 1 of
# 49 tokens kept at depth 8) and 80% of the branches run. Classification with the `dyvm` recipe only.
SMALL_DYVM_POINT = dict(pruning_loc=[-3, -2, -1], token_keep_ratio=0.3, block_keep_ratio=0.8)
# What a task selects models by (the validation metric, higher is better) and calls it in the log.
TASK_METRIC = {"classification": ("top1", "top-1"), "segmentation": ("miou", "mIoU")}
# Segmentation (variants.md §3): no distillation, both ratio terms weighted 20; the mosaics get no image
# augmentation (the options of the classification transforms do not apply).
# the official segmentation objective; its backbone draws keep decisions by the per-token Gumbel-softmax only
SEGMENTATION_RECIPE = dict(distill_weight=0.0, token_weight=20.0, block_weight=20.0, token_sampler="gumbel")


@dataclass
class TrainConfig:
    """Every option of ``dyvm train`` (None: from the preset of the model size)."""

    model: str = "vim_tiny"
    task: str = "classification"
    output: str = "runs/train"
    checkpoint: Optional[str] = None
    teacher: Optional[str] = None
    dataset: str = "fashion-mnist"
    data_path: Optional[str] = None
    canvas: Optional[int] = None
    img_size: Optional[int] = None
    patch_size: Optional[int] = None
    depth: Optional[int] = None
    embed_dim: Optional[int] = None
    num_classes: Optional[int] = None
    in_chans: Optional[int] = None
    scan_backend: Optional[str] = None
    device: Optional[str] = None
    token_keep_ratio: Optional[float] = None
    block_keep_ratio: Optional[float] = None
    router_threshold: Optional[float] = None
    score: Optional[str] = None
    pruning_loc: Optional[list] = None
    predictor_input: Optional[str] = None
    token_sampler: Optional[str] = None
    slot_prior: Optional[bool] = None
    token_noise: Optional[float] = None
    pruned_token_grad: Optional[bool] = None
    baseline_masks: Optional[str] = None
    drop_pruned_tail: Optional[bool] = None
    keep_ratio_source: Optional[str] = None
    use_routers: bool = True
    use_pruning: bool = True
    recipe: str = "dyvm"
    keep_prior: Optional[bool] = None
    dynamic_lr_scale: Optional[float] = None
    ratio_warmup: Optional[float] = None
    block_loss_weighting: Optional[str] = None
    keep_guidance: Optional[float] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    min_lr: Optional[float] = None
    warmup_epochs: Optional[int] = None
    warmup_lr: Optional[float] = None
    weight_decay: Optional[float] = None
    clip_grad: Optional[float] = None
    mixup: Optional[float] = None
    cutmix: Optional[float] = None
    smoothing: Optional[float] = None
    aa: Optional[str] = None
    reprob: Optional[float] = None
    repeated_aug: Optional[int] = None
    drop_path: Optional[float] = None
    token_weight: Optional[float] = None
    block_weight: Optional[float] = None
    distill_weight: Optional[float] = None
    scale_min: Optional[float] = None
    hflip: Optional[float] = None
    amp: str = "none"
    ema: bool = False
    ema_decay: float = 0.99996
    seed: int = 0
    resume: bool = False
    max_steps_per_epoch: Optional[int] = None
    val_size: Optional[int] = None
    val_fraction: float = 0.2
    eval_batch_size: int = 256
    subset: Optional[int] = None
    workers: int = 0
    teacher_cache_mb: float = 0.0
    corrupt: str = "skip"
    download: bool = False
    tensorboard: bool = False
    no_progress: bool = False
    threads: Optional[int] = None
    config: Optional[str] = None

    def resolved(self) -> "TrainConfig":
        """Fill unset recipe values from the preset of the model's family and size."""
        cfg = TrainConfig(**asdict(self))
        check_task(cfg.task, cfg.model)
        if not is_dynamic_name(cfg.model):
            refuse_dynamic_options(cfg.model, given_options(cfg, DYVM_ONLY + ("use_routers", "use_pruning")),
                                   "fine-tune")
        size = next((s for s in ("tiny", "small", "base") if cfg.model.endswith(s)), "tiny")
        segmentation = cfg.task == "segmentation"  # 56-px mosaics
        inherit_canvas = cfg.canvas is None and cfg.dataset == "fashion-mnist"
        recorded = _checkpoint_records(cfg.checkpoint) if cfg.img_size is None or inherit_canvas else {}
        small = segmentation or (cfg.img_size or recorded.get("config", {}).get("img_size") or 224) <= SMALL_IMAGE
        if is_dynamic_name(cfg.model):
            if cfg.recipe not in DYVM_RECIPES:
                raise ValueError(f"recipe={cfg.recipe!r}; expected one of {sorted(DYVM_RECIPES)}")
            preset = dict(DYVM_COMMON, **DYVM_PRESETS[size], **DYVM_RECIPES[cfg.recipe])
            if small and cfg.recipe == "dyvm":
                preset["lr"] = SMALL_DYVM_LR
                if not segmentation:
                    preset.update(SMALL_DYVM_POINT)
        elif small and not cfg.checkpoint:
            preset = dict(SMALL_PRETRAIN, **NO_DYNAMIC)
            if cfg.lr is None:
                preset["lr"] = SMALL_EFFECTIVE_LR * 512 / (cfg.batch_size or preset["batch_size"])
        else:
            preset = dict(VIM_FINETUNE if cfg.checkpoint else VIM_PRETRAIN, batch_size=128, **NO_DYNAMIC)
        preset.update(SMALL_AUG if small else LARGE_AUG)
        if segmentation:
            preset.update(SEGMENTATION_RECIPE if is_dynamic_name(cfg.model) else
                          {k: v for k, v in SEGMENTATION_RECIPE.items() if k != "token_sampler"})
        if cfg.canvas is None:  # fine-tuning on Fashion-MNIST keeps the canvas its checkpoint was trained on
            cfg.canvas = (recorded.get("train_config", {}).get("canvas") if inherit_canvas else 0) or 0
        warmup_given = cfg.warmup_epochs is not None
        for key, value in preset.items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        if not warmup_given and cfg.epochs:
            cfg.warmup_epochs = min(cfg.warmup_epochs, int(WARMUP_SHARE * cfg.epochs))
        return cfg


def _checkpoint_records(path: Optional[str]) -> dict[str, dict]:
    """What a dyvm checkpoint records of its model and its run, ``{"config": ..., "train_config": ...}``, read once
    ({} entries for official or unreadable files, or no path)."""
    if not path or not os.path.isfile(path):
        return {}
    try:
        ckpt = read_checkpoint(path)
    except ValueError:
        return {}
    if not isinstance(ckpt, dict):
        return {}
    return {key: ckpt[key] for key in ("config", "train_config") if isinstance(ckpt.get(key), dict)}


# ------------------------------------------------------------------------------ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------ model set-up
def _check_config(cfg: TrainConfig) -> None:
    positive = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                    repeated_aug=cfg.repeated_aug)
    for key, value in positive.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    for key in ("lr", "min_lr", "warmup_lr", "weight_decay", "mixup", "cutmix", "smoothing", "reprob", "drop_path",
                "teacher_cache_mb"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    if cfg.warmup_epochs is not None and cfg.epochs is not None and cfg.warmup_epochs > cfg.epochs:
        raise ValueError(f"--warmup-epochs {cfg.warmup_epochs} is longer than the run (--epochs {cfg.epochs})")
    if cfg.warmup_epochs is not None and cfg.warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs must be >= 0, got {cfg.warmup_epochs}")
    if cfg.val_size is not None and cfg.val_size < 0:
        raise ValueError(f"--val-size must be >= 0, got {cfg.val_size}")
    check_canvas(cfg.canvas or 0, cfg.dataset)
    if cfg.canvas and cfg.task == "segmentation":
        raise ValueError(f"--canvas {cfg.canvas}: segmentation trains on its own mosaics, not on a canvas")
    if os.path.exists(cfg.output) and not os.path.isdir(cfg.output):
        raise ValueError(f"--output {cfg.output}: exists and is not a directory (a run folder is written there)")
    if not cfg.resume and os.path.isfile(os.path.join(cfg.output, "checkpoint.pth")):
        raise ValueError(f"--output {cfg.output} already holds a run (checkpoint.pth): pass --resume to continue it, "
                         "or choose another --output")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"amp={cfg.amp!r}; expected none, bf16 or fp16")
    from .losses import BLOCK_LOSS_WEIGHTINGS

    if cfg.block_loss_weighting is not None and cfg.block_loss_weighting not in BLOCK_LOSS_WEIGHTINGS:
        raise ValueError(f"--block-loss-weighting {cfg.block_loss_weighting!r}: expected one of "
                         f"{', '.join(BLOCK_LOSS_WEIGHTINGS)}")
    if cfg.keep_guidance is not None and not (math.isfinite(cfg.keep_guidance) and cfg.keep_guidance >= 0):
        raise ValueError(f"--keep-guidance must be a finite weight >= 0, got {cfg.keep_guidance}")
    if cfg.keep_guidance:
        if cfg.task == "segmentation":
            raise ValueError("--keep-guidance applies to classification only (a segmenter has no class token)")
        if cfg.score not in (None, "predictor") or cfg.use_pruning is False:
            raise ValueError("--keep-guidance trains the keep predictors: it needs token pruning with --score predictor")
    if cfg.ratio_warmup is not None and not 0.0 <= cfg.ratio_warmup <= 1.0:
        raise ValueError(f"ratio_warmup is a fraction of the run in [0, 1], got {cfg.ratio_warmup}")
    if cfg.task == "segmentation":
        if cfg.block_loss_weighting == "cost":
            raise ValueError("--block-loss-weighting cost applies to classification only (--task segmentation "
                             "keeps the official segmentation objective)")
        if cfg.mixup or cfg.cutmix:
            raise ValueError("--mixup/--cutmix apply to classification only (--task segmentation mixes no labels)")
        if cfg.distill_weight:
            raise ValueError("--distill-weight: the segmentation objective has no teacher (variants.md §3); use 0")
        if cfg.dataset != "fashion-mnist":
            raise ValueError(f"--dataset {cfg.dataset}: --task segmentation trains on Fashion-MNIST mosaics only")
        if cfg.token_weight != cfg.block_weight:
            raise ValueError(f"--token-weight {cfg.token_weight} and --block-weight {cfg.block_weight}: the "
                             "segmentation objective weights both ratio terms alike")
    if (cfg.mixup or cfg.cutmix) and cfg.batch_size % 2:
        raise ValueError(f"batch_size={cfg.batch_size} must be even with mixup/cutmix")


def build_models(cfg: TrainConfig, num_classes: int, channels: int, data_mean_std) -> tuple[nn.Module, Optional[nn.Module]]:
    """The student (fresh, from a Vim, or from a dyvm checkpoint) and, for DyVM, the frozen teacher."""
    dynamic = is_dynamic_name(cfg.model)
    kw = {**model_overrides(cfg, dynamic=dynamic), "num_classes": num_classes, "in_chans": channels}
    ckpt = read_checkpoint(cfg.checkpoint) if cfg.checkpoint else None
    if ckpt is not None and isinstance(ckpt, dict) and ckpt.get("arch") and ckpt.get("config"):
        # our own checkpoint: its architecture, our CLI overrides on top (e.g. a DyVM from our Vim)
        base = {k: v for k, v in ckpt["config"].items() if k in ("img_size", "patch_size", "stride", "depth",
                                                                   "embed_dim", "d_state", "channels")}
        kw = {**base, **kw}
    model = create_model(cfg.model, **kw)
    if ckpt is not None:
        report = load_checkpoint(model, ckpt, skip_mismatched_head=True)
        log.info("initialised from %s: %s", cfg.checkpoint, report)
        if report.new_initialised and cfg.keep_prior:
            model.reset_dynamic_parameters(keep_prior=True)
    mean, std = data_mean_std
    model.pretrained_cfg = dict(model.pretrained_cfg, mean=mean, std=std,
                                crop_pct=1.0 if cfg.dataset == "fashion-mnist" or (cfg.img_size or 224) <= SMALL_IMAGE
                                else 0.875)
    teacher = None
    if model.is_dynamic and ((cfg.distill_weight or 0) > 0 or (cfg.keep_guidance or 0) > 0):
        source = cfg.teacher or cfg.checkpoint
        if source is None:
            raise ValueError("--keep-guidance reads a frozen Vim teacher: pass --checkpoint (a Vim) or --teacher"
                             if not cfg.distill_weight else
                             "DyVM fine-tuning distils from a frozen Vim: pass --checkpoint (a Vim) or --teacher, "
                             "or --distill-weight 0")
        teacher_kw = {k: v for k, v in kw.items() if k not in DYNAMIC_OPTIONS and k != "drop_path_rate"}
        teacher = create_model(static_counterpart(cfg.model), **teacher_kw)
        load_checkpoint(teacher, source, strict=False)
        teacher.eval().requires_grad_(False)
        if cfg.keep_guidance and teacher.layout.num_prefix != 1:
            raise ValueError(f"--keep-guidance reads the teacher's influence on its class token; {cfg.model}'s "
                             f"teacher has {teacher.layout.num_prefix} prefix tokens (registers), not one class token")
    return model, teacher


def param_groups(model: nn.Module, weight_decay: float, dynamic_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay for 1-D parameters and ``no_weight_decay()`` names (timm's rule);
    DyVM's predictors and routers optionally at ``dynamic_lr_scale`` × the lr (1 in the paper)."""
    from timm.optim._param_groups import param_groups_weight_decay

    from .checkpoint import _is_dynamic

    if dynamic_lr_scale <= 0:
        raise ValueError(f"dynamic_lr_scale must be > 0, got {dynamic_lr_scale}")
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=model.no_weight_decay())
    if dynamic_lr_scale == 1.0:
        return groups
    dynamic = {id(p) for n, p in model.named_parameters() if _is_dynamic(n)}
    out = []
    for g in groups:
        for is_dyn in (False, True):
            params = [p for p in g["params"] if (id(p) in dynamic) == is_dyn]
            if params:
                out.append(dict(g, params=params, lr_scale=dynamic_lr_scale if is_dyn else 1.0))
    return out


# ------------------------------------------------------------------------------ data, losses, the whole set-up
def resolve_config(config: Optional[TrainConfig] = None, **options: Any) -> TrainConfig:
    """``config`` with ``options`` on top, recipe values filled in from the preset, and checked."""
    unknown = set(options) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"train() got unknown options: {sorted(unknown)}")
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **options}).resolved()
    _check_config(cfg)
    return cfg


def _resolve_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here")
    return torch.device(name)


@dataclass
class DataInfo:
    """What the data says about the model: channels, normalisation, classes."""

    channels: int
    mean_std: tuple[tuple[float, ...], tuple[float, ...]]
    class_names: list[str]
    num_classes: int


def probe_data(cfg: TrainConfig) -> DataInfo:
    """Channels, mean/std and classes of the configured data set (reads no images)."""
    channels = cfg.in_chans or (1 if cfg.dataset == "fashion-mnist" else 3)
    if cfg.task == "segmentation":
        from .mosaics import MOSAIC_CLASSES, garment_pool

        garment_pool("test", cfg.data_path, cfg.download)  # the data is there (or a clear error)
        return DataInfo(channels, (FASHION_MNIST_MEAN * channels, FASHION_MNIST_STD * channels), list(MOSAIC_CLASSES),
                        cfg.num_classes or len(MOSAIC_CLASSES))
    mean_std = ((FASHION_MNIST_MEAN * channels, FASHION_MNIST_STD * channels) if cfg.dataset == "fashion-mnist"
                else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if channels == 3 else ((0.449,), (0.226,)))
    probe = build_dataset(cfg.dataset, "test", None, cfg.data_path, channels, cfg.val_size, cfg.corrupt,
                          download=cfg.download, val_fraction=cfg.val_fraction)
    class_names = list(probe.classes)
    num_classes = cfg.num_classes or num_classes_of(probe)
    if num_classes < len(class_names):
        raise ValueError(f"--num-classes {num_classes} is fewer than the {len(class_names)} classes of the data")
    return DataInfo(channels, mean_std, class_names, num_classes)


def build_loaders(cfg: TrainConfig, model: nn.Module, channels: int, ddp: Dist):
    """(train sampler, train loader, val loader); training items are (image, target, sample key).
    Segmentation: the mosaics (``--subset``: training mosaics, ``--val-size``: validation mosaics)."""
    if cfg.task == "segmentation":
        from .mosaics import CANVAS, FashionMNISTMosaics

        if model.img_size != CANVAS:
            raise ValueError(f"--img-size {model.img_size}: the mosaics are {CANVAS} px")
        train_set = _Indexed(FashionMNISTMosaics("train", cfg.subset, cfg.data_path))
        val_set = FashionMNISTMosaics("val", cfg.val_size, cfg.data_path)
    else:
        data_cfg = data_config_for(model)
        train_tf = build_transform(data_cfg, True, cfg.aa, cfg.reprob, (cfg.scale_min, 1.0), cfg.hflip)
        eval_tf = build_transform(data_cfg, False)
        train_set = _Indexed(build_dataset(cfg.dataset, "train", train_tf, cfg.data_path, channels, cfg.val_size,
                                           cfg.corrupt, cfg.subset, val_fraction=cfg.val_fraction, canvas=cfg.canvas))
        val_set = build_dataset(cfg.dataset, "val", eval_tf, cfg.data_path, channels, cfg.val_size, cfg.corrupt,
                                val_fraction=cfg.val_fraction, canvas=cfg.canvas)
    if len(val_set) == 0:
        raise ValueError("--val-size 0: model selection needs a held-out validation split of at least 1 image")
    if len(train_set) < cfg.batch_size * ddp.world:
        raise ValueError(f"the training set has {len(train_set)} images, fewer than one global batch "
                         f"({cfg.batch_size} × {ddp.world})")
    if cfg.repeated_aug and cfg.repeated_aug > 1:
        sampler = CopyKeyedRepeatAugSampler(train_set, num_replicas=ddp.world, rank=ddp.rank, shuffle=True,
                                            num_repeats=cfg.repeated_aug)
    else:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, num_replicas=ddp.world, rank=ddp.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                              drop_last=True, collate_fn=collate_skip_none, persistent_workers=False)
    val_loader = DataLoader(val_set, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.workers,
                            collate_fn=collate_skip_none)
    return sampler, train_loader, val_loader


def build_criteria(cfg: TrainConfig, model: nn.Module, teacher: Optional[nn.Module], num_classes: int):
    """(mixup or None, the classification loss, DyVM's loss or None for a plain model); segmentation:
    (None, None, the segmentation loss)."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from .losses import DyVMLoss, SegmentationLoss

    if cfg.task == "segmentation":
        return None, None, SegmentationLoss.for_model(model, ratio_weight=cfg.token_weight)
    mixup = None
    if (cfg.mixup or 0) > 0 or (cfg.cutmix or 0) > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        base_criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg.smoothing:
        base_criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        base_criterion = nn.CrossEntropyLoss()
    criterion = (DyVMLoss.for_model(model, base_criterion, teacher, block_loss_weighting=cfg.block_loss_weighting
                                    or "layers", keep_guidance=cfg.keep_guidance or 0.0, token_weight=cfg.token_weight,
                                    block_weight=cfg.block_weight,
                                    distill_weight=cfg.distill_weight if teacher is not None else 0.0)
                 if model.is_dynamic else None)
    if criterion is not None and cfg.teacher_cache_mb:
        criterion.remember_teacher(cfg.teacher_cache_mb)
    return mixup, base_criterion, criterion


@dataclass
class TrainingRun:
    """Everything one run trains with, built by :func:`setup_training`."""

    cfg: TrainConfig
    device: torch.device
    ddp: Dist
    data: DataInfo
    model: nn.Module                 # the model itself (saved, evaluated)
    wrapped: nn.Module               # what the steps call: the model, or its DistributedDataParallel
    teacher: Optional[nn.Module]
    sampler: Any
    train_loader: DataLoader
    val_loader: DataLoader
    mixup: Any                       # timm Mixup, or None
    base_criterion: Optional[nn.Module]  # the classification loss (a plain classifier's whole loss)
    criterion: Any                   # DyVMLoss for a DyVM classifier, SegmentationLoss for a segmenter, else None
    optimizer: torch.optim.Optimizer
    scheduler: Any                   # timm CosineLRScheduler, stepped per update
    scaler: torch.amp.GradScaler
    warmup: Optional["KeepRatioWarmup"]
    ema: Any                         # timm ModelEmaV3, or None
    steps_per_epoch: int
    effective_lr: float              # cfg.lr × global batch / 512

    @property
    def last_path(self) -> str:
        return os.path.join(self.cfg.output, "checkpoint.pth")

    @property
    def best_path(self) -> str:
        return os.path.join(self.cfg.output, "best.pth")


def make_optimizer(groups, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over ``groups`` (parameters or :func:`param_groups`' dicts): torch's fused kernel, one call for every
    tensor, where the parameters are all CPU or all CUDA floating tensors, else the per-tensor loop (torch's own
    default on a CPU). The demo's DyVM step on 2 cores: 10.6 ms → 2.0 ms per optimiser step; the same update up to
    float rounding (≤ 1e-8 after three steps)."""
    from timm.optim import create_optimizer_v2

    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    return create_optimizer_v2(groups, "adamw", lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))


def setup_training(cfg: TrainConfig) -> TrainingRun:
    """Process group, data, models, losses, optimiser and schedule for a resolved ``cfg``.

    The order of the steps is the order in which they draw random numbers: keep it.
    """
    from timm.scheduler import CosineLRScheduler

    device = _resolve_device(cfg.device)
    ddp = init_distributed(device)
    if ddp.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
    seed_everything(cfg.seed + ddp.rank)

    data = probe_data(cfg)
    os.makedirs(cfg.output, exist_ok=True)
    model, teacher = build_models(cfg, data.num_classes, data.channels, data.mean_std)
    sampler, train_loader, val_loader = build_loaders(cfg, model, data.channels, ddp)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    mixup, base_criterion, criterion = build_criteria(cfg, model, teacher, data.num_classes)

    global_batch = cfg.batch_size * ddp.world
    effective_lr = cfg.lr * global_batch / 512
    optimizer = make_optimizer(param_groups(model, cfg.weight_decay, cfg.dynamic_lr_scale), effective_lr,
                               cfg.weight_decay)
    steps_per_epoch = len(train_loader) if cfg.max_steps_per_epoch is None else min(len(train_loader),
                                                                                   cfg.max_steps_per_epoch)
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * steps_per_epoch, lr_min=cfg.min_lr,
                                  warmup_t=cfg.warmup_epochs * steps_per_epoch, warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)
    warmup = (KeepRatioWarmup(model, criterion, cfg.ratio_warmup, cfg.epochs * steps_per_epoch)
              if model.is_dynamic and cfg.ratio_warmup else None)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    wrapped: nn.Module = model
    if ddp.world > 1:
        # score sources other than the predictor leave the predictors out of the graph
        find_unused = model.is_dynamic and model.score != "predictor"
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                      find_unused_parameters=find_unused)
    return TrainingRun(cfg, device, ddp, data, model, wrapped, teacher, sampler, train_loader, val_loader, mixup,
                       base_criterion, criterion, optimizer, scheduler, scaler, warmup, ema, steps_per_epoch,
                       effective_lr)


# ------------------------------------------------------------------------------ checkpoints
@dataclass
class Progress:
    """Where a run stands: the next epoch, the best validation metric so far (top-1, or mIoU for
    segmentation; ``best_acc`` either way), one record per epoch."""

    start_epoch: int = 0
    best_acc: float = -1.0
    history: list = field(default_factory=list)


def resume(run: TrainingRun) -> Progress:
    """Restore model, optimiser, schedule, scaler and EMA from OUTPUT/checkpoint.pth."""
    if not os.path.isfile(run.last_path):
        raise FileNotFoundError(f"--resume: no checkpoint at {run.last_path}")
    state = read_checkpoint(run.last_path, map_location=run.device)
    load_checkpoint(run.model, state, strict=True)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None and state.get("model_ema") is not None:
        run.ema.module.load_state_dict(state["model_ema"])
    progress = Progress(state["epoch"] + 1, state["best_acc"], list(state.get("history", [])))
    if run.ddp.main:
        log.info("resumed from %s at epoch %d", run.last_path, progress.start_epoch)
    return progress


def save_checkpoints(run: TrainingRun, epoch: int, progress: Progress, val_score: float, improved: bool) -> None:
    """OUTPUT/checkpoint.pth (everything :func:`resume` needs) and, when ``improved``, best.pth.
    ``val_score``: the task's validation metric, stored as ``val_top1`` / ``val_miou``."""
    cfg = asdict(run.cfg)
    score = {f"val_{TASK_METRIC[run.cfg.task][0]}": val_score}
    extra = dict(epoch=epoch, best_acc=progress.best_acc, history=progress.history,
                 optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                 scaler=run.scaler.state_dict(), model_ema=None if run.ema is None else run.ema.module.state_dict(),
                 train_config=cfg, classes=run.data.class_names, **score)
    save_checkpoint(run.last_path, run.model, **extra)
    if improved:
        save_checkpoint(run.best_path, run.model, epoch=epoch, best_acc=progress.best_acc, train_config=cfg,
                        classes=run.data.class_names, **score)


# ------------------------------------------------------------------------------ one epoch
class _Logger:
    def __init__(self, path: str, enabled: bool, tensorboard: bool):
        self.enabled, self.path, self.tb = enabled, path, None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.dirname(path))
            except ImportError:
                log.warning("tensorboard is not installed; logging to %s only", path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, record["epoch"])


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class EpochResult:
    """The training half of an epoch: loss parts averaged over its steps, unreadable images skipped."""

    losses: dict[str, float]
    skipped_images: int


def train_one_epoch(run: TrainingRun, epoch: int, show_progress: bool = False) -> EpochResult:
    """One pass over the training loader (at most ``steps_per_epoch`` steps), updating the model.

    The caller seeds the generators and sets the sampler's epoch first (see :func:`train`).
    """
    cfg, device, model = run.cfg, run.device, run.model
    run.wrapped.train()
    sums: dict[str, float] = {}
    n_steps, skipped = 0, 0
    bar = _progress(run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", show_progress, position=1)
    for step, batch in enumerate(run.train_loader):
        if step >= run.steps_per_epoch:
            break
        if batch is None:
            skipped += cfg.batch_size
            continue
        images, targets, ids = batch               # (B, C, H, W), (B,) classes or (B, H, W) labels, (B,) sample keys
        skipped += cfg.batch_size - images.shape[0]
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if run.mixup is not None:
            if images.shape[0] % 2:
                images, targets, ids = images[:-1], targets[:-1], ids[:-1]
            images, targets = run.mixup(images, targets)                  # targets become (B, classes)
        global_step = epoch * run.steps_per_epoch + step
        if run.warmup is not None:
            run.warmup.step(global_step)
        with _autocast(device, cfg.amp):
            if run.criterion is not None:  # DyVM, or a segmenter: the loss reads the whole training output
                out = run.wrapped(images, noise=SampleNoise(ids, cfg.seed, epoch)) if model.is_dynamic else \
                    run.wrapped(images)
                loss, parts = run.criterion(images, out, targets)
            else:
                loss = run.base_criterion(run.wrapped(images).float(), targets)
                parts = {"loss": loss.item()}
        if not math.isfinite(parts["loss"]):
            raise FloatingPointError(f"loss is {parts['loss']} at epoch {epoch} step {step}; "
                                     "lower --lr or use --amp none")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.clip_grad:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step_update(global_step + 1)
        if run.ema is not None:
            run.ema.update(model)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n_steps += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{run.optimizer.param_groups[0]['lr']:.2e}")
    if bar is not None:
        bar.close()
    if skipped and run.ddp.main:
        log.warning("epoch %d: skipped %d unreadable images", epoch, skipped)
    return EpochResult({k: v / max(n_steps, 1) for k, v in sums.items()}, skipped)


def epoch_record(epoch: int, lr: float, train_time: float, result: EpochResult, stats: dict[str, Any]) -> dict:
    """One line of log.jsonl / the history: training losses (``train_*``) and validation scalars (``val_*``)."""
    record = dict(epoch=epoch, lr=lr, train_time_s=train_time, skipped_images=result.skipped_images,
                  **{f"train_{k}": v for k, v in result.losses.items()},
                  **{f"val_{k}": v for k, v in stats.items() if not isinstance(v, (list, dict))})
    if "token_keep" in stats:
        record["val_token_keep"] = stats["token_keep"]
    if "keep_ties" in stats:
        record["val_keep_ties"] = stats["keep_ties"]
    if "branch_keep_mean" in stats:
        record["val_branch_keep_mean"] = stats["branch_keep_mean"]
    return record


# ------------------------------------------------------------------------------ the run
@contextmanager
def denormals_flushed(device: torch.device):
    """Training steps on a CPU with denormal floats flushed to zero on every thread (FTZ and DAZ), the previous
    state restored after: a denormal operand costs an x86 core a microcode assist, and DyVM's straight-through
    gradients of confident keep decisions make many (the demo's fine-tuning steps ran twice as slow on an Intel
    Xeon after ~20 steps; see :func:`dyvm.kernels.scan_cpp.set_flush_denormal`). Values below 2^-126 become 0."""
    if device.type != "cpu":
        yield
        return
    from .kernels import scan_cpp

    previous = scan_cpp.set_flush_denormal(True)
    try:
        yield
    finally:
        scan_cpp.set_flush_denormal(previous)


def train(config: Optional[TrainConfig] = None, **options: Any) -> dict[str, Any]:
    """Train as configured (a :class:`TrainConfig` and/or its fields as keywords).

    Returns a summary: best validation top-1 (segmentation: mIoU, also as ``best_acc``), the checkpoint
    paths and the per-epoch history.
    """
    from .evaluate import evaluate, keep_ties_note

    cfg = resolve_config(config, **options)
    run = setup_training(cfg)
    ddp = run.ddp
    progress = resume(run) if cfg.resume else Progress()
    logger = _Logger(os.path.join(cfg.output, "log.jsonl"), ddp.main, cfg.tensorboard)
    if ddp.main:
        with open(os.path.join(cfg.output, "config.json"), "w") as fh:
            json.dump(dict(asdict(cfg), world_size=ddp.world, effective_lr=run.effective_lr,
                           num_classes=run.data.num_classes), fh, indent=2)

    show = ddp.main and not cfg.no_progress
    metric, label = TASK_METRIC[cfg.task]
    epoch_bar = None
    if show:
        from tqdm import tqdm

        epoch_bar = tqdm(total=cfg.epochs, initial=progress.start_epoch, desc=f"train {cfg.model}", unit="epoch",
                         file=sys.stderr, dynamic_ncols=True, position=0)
    for epoch in range(progress.start_epoch, cfg.epochs):
        # every epoch reseeds from (seed, epoch, rank): a resumed run repeats an uninterrupted one
        seed_everything(cfg.seed * 100_003 + epoch * 1_009 + ddp.rank)
        run.sampler.set_epoch(epoch)
        t0 = time.time()
        with denormals_flushed(run.device):
            result = train_one_epoch(run, epoch, show)
        train_time = time.time() - t0
        if run.warmup is not None:
            run.warmup.finish()
        stats = evaluate(run.model, run.val_loader, run.device, amp=cfg.amp, progress=False)
        record = epoch_record(epoch, run.optimizer.param_groups[0]["lr"], train_time, result, stats)
        progress.history.append(record)
        logger.write(record)
        score = stats[metric]
        improved = score > progress.best_acc
        progress.best_acc = max(progress.best_acc, score)
        if ddp.main:
            save_checkpoints(run, epoch, progress, score, improved)
            line = (f"epoch {epoch + 1}/{cfg.epochs}: loss {record.get('train_loss', float('nan')):.4f}  "
                    f"val {label} {score:.2f}%  best {progress.best_acc:.2f}%  ({train_time:.0f} s)")
            if epoch_bar is not None:
                epoch_bar.update(1)
                epoch_bar.set_postfix({f"val_{metric}": f"{score:.2f}", "best": f"{progress.best_acc:.2f}"})
                epoch_bar.write(line, file=sys.stderr)
            else:  # --no-progress: no bars, but one line per epoch
                print(f"[{cfg.model}] {line}", file=sys.stderr, flush=True)
        if ddp.world > 1:
            dist.barrier()
    if epoch_bar is not None:
        epoch_bar.close()
    note = keep_ties_note(progress.history[-1].get("val_keep_ties")) if progress.history else None
    if note and ddp.main:
        log.warning("validation after the last epoch: %s", note)
    return dict(best_acc=progress.best_acc, checkpoint=run.last_path, best_checkpoint=run.best_path,
                history=progress.history, output=cfg.output, world_size=ddp.world)


class _Indexed(torch.utils.data.Dataset):
    """Adds each item's sample key (the key of its Gumbel noise): the dataset index, plus
    ``copy · len(dataset)`` for the repeated-augmentation copies (see :class:`CopyKeyedRepeatAugSampler`)."""

    def __init__(self, ds):
        self.ds, self.classes = ds, getattr(ds, "classes", None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: int):
        item = self.ds[key % len(self.ds)]
        return None if item is None else (item[0], item[1], key)


def _repeat_aug_sampler_class():
    from timm.data.distributed_sampler import RepeatAugSampler

    class _Sampler(RepeatAugSampler):
        """timm's RepeatAugSampler whose items are keys ``index + copy · N`` (N = dataset size), so the
        repeated-augmentation copies of an image draw different Gumbel noise (i.i.d., as the official
        code), while the key of every item depends only on its position in the global order: one
        process and several processes with the same global batch draw the same noise."""

        def __init__(self, dataset, num_repeats: int = 3, **kwargs):
            if int(num_repeats) != num_repeats:
                raise ValueError(f"repeated_aug must be an integer, got {num_repeats}")
            super().__init__(dataset, num_repeats=int(num_repeats), **kwargs)

        def __iter__(self):
            # the global list is repeat_interleave(permutation): position p holds copy p % R
            positions = range(self.rank, self.total_size, self.num_replicas)[:self.num_selected_samples]
            n, r = len(self.dataset), self.num_repeats
            return iter([index + (pos % r) * n for pos, index in zip(positions, super().__iter__())])

    return _Sampler


def CopyKeyedRepeatAugSampler(dataset, **kwargs):  # noqa: N802 (a class made lazily: timm imports late)
    return _repeat_aug_sampler_class()(dataset, **kwargs)


class KeepRatioWarmup:
    """Linear warm-up of DyVM's keep-ratio targets from 1 (the teacher's behaviour: every token and
    branch kept) to ρ_k and β over the first ``fraction`` of the steps. Applied to the model's
    ``token_ratio`` (used by random/static selection and inference) and to the loss targets."""

    def __init__(self, model: nn.Module, criterion, fraction: float, total_steps: int):
        self.model, self.criterion = model, criterion
        self.final_token = list(model.token_ratio)
        self.final_block = criterion.block_keep_ratio
        self.steps = max(1, round(fraction * total_steps)) if fraction > 0 else 0

    def step(self, global_step: int) -> None:
        """Set the targets for step ``global_step`` (0-based)."""
        if not self.steps:
            return
        t = min(1.0, (global_step + 1) / self.steps)
        ratios = [1.0 - t * (1.0 - r) for r in self.final_token]
        self.model.configure(token_ratio=ratios)
        self.criterion.token_ratio = ratios
        self.criterion.block_keep_ratio = 1.0 - t * (1.0 - self.final_block)

    def finish(self) -> None:
        """The final targets (before evaluating or saving)."""
        if self.steps:
            self.model.configure(token_ratio=self.final_token)
            self.criterion.token_ratio = list(self.final_token)
            self.criterion.block_keep_ratio = self.final_block


def _progress(total: int, desc: str, enabled: bool, position: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False,
                position=position)


def train_cli(args) -> int:
    names = {f.name for f in fields(TrainConfig)}
    options = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if options.get("amp") is None:
        options.pop("amp", None)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = train(**options)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
