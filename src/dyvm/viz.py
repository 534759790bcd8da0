"""Pictures: which patches survive each pruning stage, branch usage heat maps, accuracy-FLOPs curves.

All functions write PNG files with matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    from .checkpoint import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    _plt().close(fig)


@torch.no_grad()
def kept_patch_masks(model, images: Tensor) -> list[Tensor]:
    """Per stage, (N, gh, gw) bool: the patches still alive after that stage (inference path)."""
    model.eval()
    out = model.forward_inference(images)
    grid = model.patch_embed.grid_size
    masks = []
    for kept in out.keep_indices:
        alive = torch.zeros(images.shape[0], model.num_patches, dtype=torch.bool)
        alive.scatter_(1, kept.cpu(), True)
        masks.append(alive.view(-1, *grid))
    return masks


def pruning_overlay(model, images: Tensor, display: np.ndarray, path: str, titles: Optional[Sequence[str]] = None
                    ) -> None:
    """A row per image: the image, then the patches kept after each stage (pruned ones greyed out).

    images: (N, C, H, W) model inputs; display: (N, h, w) or (N, h, w, 3) pictures in [0, 1] to draw.
    """
    plt = _plt()
    masks = kept_patch_masks(model, images)
    n, stages = images.shape[0], len(masks)
    fig, axes = plt.subplots(n, stages + 1, figsize=(1.6 * (stages + 1), 1.6 * n), squeeze=False)
    for i in range(n):
        pic = display[i]
        cmap = "gray" if pic.ndim == 2 else None
        axes[i, 0].imshow(pic, cmap=cmap, vmin=0, vmax=1)
        axes[i, 0].set_title(titles[i] if titles else "input", fontsize=7)
        for s, mask in enumerate(masks):
            keep = mask[i].float().numpy()
            up = np.kron(keep, np.ones((pic.shape[0] // keep.shape[0] + 1, pic.shape[1] // keep.shape[1] + 1)))
            up = up[:pic.shape[0], :pic.shape[1]]
            shaded = pic * (0.25 + 0.75 * (up if pic.ndim == 2 else up[..., None]))
            axes[i, s + 1].imshow(shaded, cmap=cmap, vmin=0, vmax=1)
            axes[i, s + 1].set_title(f"stage {s + 1}: {int(keep.sum())}/{keep.size}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.suptitle("patches kept by DyVM at each pruning stage (pruned ones dimmed)", fontsize=9)
    _save(fig, path)


def branch_heatmap(branch_keep: Sequence[Sequence[float]], per_class: dict, class_names: Sequence[str],
                   path: str) -> None:
    """Heat maps of how often each SSM branch runs: layer × (forward, backward), overall and per class."""
    plt = _plt()
    panels = [("all test images", np.asarray(branch_keep))] + [
        (class_names[int(c)] if int(c) < len(class_names) else str(c), np.asarray(v)) for c, v in sorted(per_class.items(), key=lambda kv: int(kv[0]))]
    cols = min(6, len(panels))
    rows = (len(panels) + cols - 1) // cols
    depth = panels[0][1].shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 0.25 * depth * rows + 1.0), squeeze=False)
    im = None
    for ax, (title, data) in zip(axes.ravel(), panels):
        im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([0, 1], ["fwd", "bwd"], fontsize=6)
        ax.set_yticks(range(depth), [str(i) for i in range(depth)], fontsize=5)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("layer", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="fraction of images running the branch")
    fig.suptitle("SSM branch usage (DyVM routers)", fontsize=9)
    _save(fig, path)


def accuracy_flops_curve(curves: dict[str, list[tuple[float, float]]], path: str,
                         points: Optional[dict[str, tuple[float, float]]] = None, xlabel: str = "GFLOPs (official)"
                         ) -> None:
    """Top-1 vs GFLOPs, one line per keep-score source, with marked operating points."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, pts in curves.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    for name, (x, y) in (points or {}).items():
        ax.scatter([x], [y], marker="*", s=120, zorder=5, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: it hid points inside
    ax.set_title("accuracy vs compute: turning the inference keep ratio", fontsize=9)
    _save(fig, path)


def training_curves(histories: dict[str, list[dict]], path: str) -> None:
    """Validation top-1 per epoch for each run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for name, hist in histories.items():
        ax.plot([h["epoch"] + 1 for h in hist], [h["val_top1"] for h in hist], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def load_image(path: str, model) -> tuple[Tensor, np.ndarray]:
    """An image file → (model input (1, C, H, W), display picture in [0, 1])."""
    from PIL import UnidentifiedImageError

    from .data import build_transform, data_config_for, read_image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r}: no such file")
    try:
        img = read_image(path, model.in_chans)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"image {path!r} could not be read ({type(exc).__name__})") from None
    cfg = data_config_for(model)
    x = build_transform(cfg, False)(img)[None]
    mean = torch.tensor(cfg["mean"]).view(-1, 1, 1)
    std = torch.tensor(cfg["std"]).view(-1, 1, 1)
    pic = (x[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return x, (pic[..., 0] if pic.shape[-1] == 1 else pic)


def visualize_pruning(image: str, checkpoint: str, output: str, token_keep_ratio: Optional[float] = None) -> str:
    """Render the pruning overlay of one image file for a DyVM checkpoint; returns the PNG path."""
    from .checkpoint import model_from_checkpoint
    from .evaluate import class_names_of
    from .model_options import model_overrides

    model, ckpt = model_from_checkpoint(checkpoint, **model_overrides(dict(token_keep_ratio=token_keep_ratio)))
    if not model.is_dynamic or not model.pruning_loc:
        raise ValueError(f"checkpoint {checkpoint!r} is not a DyVM model with token pruning")
    x, pic = load_image(image, model)
    model.eval()
    with torch.no_grad():
        prob = model.forward_inference(x).logits.float().softmax(-1)[0]
    names = class_names_of(ckpt, model.num_classes)
    p, c = prob.max(0)
    title = f"{os.path.basename(image)}: {names[int(c)]} ({100 * float(p):.0f}%)"
    pruning_overlay(model, x, pic[None], output, titles=[title])
    return output


def viz_cli(args) -> int:
    path = visualize_pruning(args.image, args.checkpoint, args.output, args.token_keep_ratio)
    print(f"wrote {path}")
    return 0
