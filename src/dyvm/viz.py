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


@torch.no_grad()
def sequence_layouts(model, images: Tensor) -> list[tuple[int, list[int]]]:
    """Per point of the inference path (the input sequence, then after each pruning stage): the
    sequence length and where the prefix tokens (class token / registers) sit in it."""
    model.eval()
    out = model.forward_inference(images[:1])
    counts = [model.num_patches] + [k.shape[1] for k in out.keep_indices]
    return [(n + model.num_prefix_tokens, [int(p) for p in pos]) for n, pos in zip(counts, out.prefix_positions)]


def pruned_stage_map(model, images: Tensor) -> Tensor:
    """(N, gh, gw) int: the stage at which each patch was pruned (1, 2, ...), 0 for patches kept to the end."""
    masks = kept_patch_masks(model, images)
    stage = torch.zeros(masks[0].shape, dtype=torch.long) if masks else \
        torch.zeros(images.shape[0], *model.patch_embed.grid_size, dtype=torch.long)
    for s, alive in enumerate(masks):
        stage[~alive & (stage == 0)] = s + 1
    return stage


PRUNED_TINT = (0.85, 0.1, 0.1)


def _shade_pruned(pic: np.ndarray, stage: np.ndarray, stages: int) -> np.ndarray:
    """``pic`` (h, w[, 3]) in [0, 1] as RGB with the pruned patches tinted red: the earlier the pruning,
    the stronger (alpha 0.65 at stage 1 down to 0.25 at the last)."""
    rgb = np.repeat(pic[..., None], 3, -1) if pic.ndim == 2 else pic
    rows, cols = pic.shape[0] // stage.shape[0], pic.shape[1] // stage.shape[1]
    st = np.kron(stage, np.ones((rows, cols), dtype=stage.dtype))
    alpha = np.where(st == 0, 0.0, 0.65 - 0.4 * (st - 1) / max(stages - 1, 1))[..., None]
    return rgb * (1 - alpha) + alpha * np.asarray(PRUNED_TINT)


def label_colours(num_classes: int, background: Optional[int] = None) -> np.ndarray:
    """(K, 3) RGB in [0, 1]: matplotlib's tab10/tab20 colours, black for the ``background`` class."""
    plt = _plt()
    cmap = plt.get_cmap("tab10" if num_classes <= 11 else "tab20")
    colours = np.array([cmap(i % cmap.N)[:3] for i in range(num_classes)])
    if background is not None:
        colours[background] = 0.0
    return colours


def segmentation_panels(pictures: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray],
                        pruned: Optional[np.ndarray], class_names: Sequence[str], path: str,
                        background: Optional[int] = None, stage_counts: Optional[Sequence[str]] = None) -> None:
    """A row per image: the input (N, H, W) in [0, 1], the ground-truth labels (N, H, W), one column per
    entry of ``predictions`` (N, H, W) and, with ``pruned`` (N, gh, gw) from :func:`pruned_stage_map`,
    the last prediction and the input again with the pruned patches tinted red (stronger = pruned earlier)."""
    plt = _plt()
    from matplotlib.patches import Patch

    colours = label_colours(len(class_names), background)
    stages = int(pruned.max()) if pruned is not None and pruned.size else 0
    names = list(predictions)
    cols = 2 + len(names) + (2 if pruned is not None else 0)
    n = len(pictures)
    fig, axes = plt.subplots(n, cols, figsize=(1.5 * cols, 1.5 * n + 0.8), squeeze=False)
    for i in range(n):
        panels = [(pictures[i], "input"), (colours[truth[i]], "ground truth")]
        panels += [(colours[predictions[k][i]], k) for k in names]
        if pruned is not None:
            last = names[-1]
            panels += [(_shade_pruned(colours[predictions[last][i]], pruned[i], stages), f"{last}, pruned tinted"),
                       (_shade_pruned(pictures[i], pruned[i], stages), "pruned tokens")]
        for j, (pic, title) in enumerate(panels):
            axes[i, j].imshow(pic, cmap="gray" if pic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if i == 0:
                axes[i, j].set_title(title, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=colours[c], label=name) for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=6, frameon=False)
    note = "" if pruned is None else "; pruned patches tinted red, stronger = pruned at an earlier stage" + (
        f" (tokens kept per stage: {', '.join(stage_counts)})" if stage_counts else "")
    fig.suptitle("segmentation of Fashion-MNIST mosaics" + note, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    _save(fig, path)


PREFIX_NAMES = {"MiddleClassToken": "class token", "HeadClassToken": "class token", "InterleavedRegisters": "registers"}


def pruning_overlay(model, images: Tensor, display: np.ndarray, path: str, titles: Optional[Sequence[str]] = None,
                    show_sequence: Optional[bool] = None) -> None:
    """A row per image: the image, then the patches kept after each stage (pruned ones greyed out).
    ``show_sequence`` (default: when the model has prefix tokens) adds a last row with the token
    sequence at each point: patch tokens grey, the class token / registers orange where they sit.

    images: (N, C, H, W) model inputs; display: (N, h, w) or (N, h, w, 3) pictures in [0, 1] to draw.
    """
    plt = _plt()
    masks = kept_patch_masks(model, images)
    n, stages = images.shape[0], len(masks)
    if show_sequence is None:
        show_sequence = model.num_prefix_tokens > 0
    rows = n + (1 if show_sequence else 0)
    fig, axes = plt.subplots(rows, stages + 1, figsize=(1.6 * (stages + 1), 1.6 * n + (0.9 if show_sequence else 0)),
                             squeeze=False, gridspec_kw=dict(height_ratios=[1] * n + ([0.35] if show_sequence else [])))
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
    if show_sequence:
        kind = PREFIX_NAMES.get(type(model.layout).__name__, "prefix tokens")
        for s, (length, positions) in enumerate(sequence_layouts(model, images)):
            strip = np.full((1, length, 3), 0.8)
            strip[0, positions] = (1.0, 0.55, 0.0)
            ax = axes[n, s]
            ax.imshow(strip, aspect="auto", interpolation="nearest")
            where = f"at {positions[0]}" if len(positions) == 1 else f"at {positions[0]}…{positions[-1]}"
            ax.set_title(f"{'input' if s == 0 else f'stage {s}'}: {length} tokens,\n{kind} {where}", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.suptitle("patches kept by DyVM at each pruning stage (pruned ones dimmed)" +
                 ("; bottom: the token sequence, class token / registers in orange" if show_sequence else ""), fontsize=8)
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
    title = os.path.basename(image)
    if model.task == "classification":
        with torch.no_grad():
            prob = model.forward_inference(x).logits.float().softmax(-1)[0]
        names = class_names_of(ckpt, model.num_classes)
        p, c = prob.max(0)
        title += f": {names[int(c)]} ({100 * float(p):.0f}%)"
    pruning_overlay(model, x, pic[None], output, titles=[title])
    return output


def viz_cli(args) -> int:
    path = visualize_pruning(args.image, args.checkpoint, args.output, args.token_keep_ratio)
    print(f"wrote {path}")
    return 0
