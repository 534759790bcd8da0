"""FLOPs of Vim and DyVM, in G multiply-accumulates per image (the unit papers call FLOPs).

Two conventions:

``official`` (DyVM's ``calc_flops.py``, Vim's convention): patch embedding, head and predictor
Linears, and per layer ``l·D·2E + ρ_b·[(l+3)·E·4 + l·E·(R+2N) + l·R·E + 9·l·E·N + 2·l·E] + l·E·D``
with ``l`` the actual sequence length: ONE SSM direction per layer, branch savings from one
average branch keep ratio ``ρ_b``; norms, activations and routers are not counted.

``full``: everything the model computes: both SSM directions (each weighted by how often it
runs, per layer and direction when measured on images), RMSNorms, routers, predictors with their
LayerNorm (the pooled half of a predictor's second Linear once per image, as computed). Elementwise
activations are not counted.

Reference values (official): Vim-T 1.449, Vim-S 5.077, Vim-B 18.868; DyVM-Vim-S (ρ 0.7) 3.292
at ρ_b = 0.9.

Variants (same formula, ``variants.md``): lengths include every prefix token (MambaReg: 12
registers, 208 → 149/108/79), the head term is the model's ``head_macs`` (MambaReg: 12 neck
Linears D→D/r plus the 2304-input head; the segmentation backbone: its neck's transposed
convolutions, an addition of ours: no official segmentation FLOPs exist), predictors score the
patches entering each stage (the segmentation backbone: all M positions). MambaReg-S 5.360 G,
DyVM 3.628 (ρ_b = 1) / 3.513 (0.8); MambaReg-B 19.918 / 13.476 / 13.058; VideoMamba = Vim.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .kernels.scan import scan_macs
from .models.dyvm import DyVM
from .models.vim import VisionMamba

CONVENTIONS = ("official", "full")


def _geometry(model: VisionMamba, img_size: Optional[int]) -> tuple[int, int]:
    """(img_size, number of patches) for the model at ``img_size``."""
    pe = model.patch_embed
    size = pe.img_size if img_size is None else img_size
    if size < pe.patch_size:
        raise ValueError(f"img_size={size} is smaller than the patch size {pe.patch_size}")
    side = (size - pe.patch_size) // pe.stride + 1
    return size, side * side


def sequence_lengths(model: VisionMamba, num_patches: int, token_ratio: Optional[Sequence[float]] = None) -> list[int]:
    """Sequence length (patches + prefix tokens: class token or registers) seen by each layer at inference."""
    lengths, current = [], num_patches
    locs = getattr(model, "pruning_loc", [])
    ratios = list(getattr(model, "token_ratio", [])) if token_ratio is None else list(token_ratio)
    for i in range(model.depth):
        if i in locs:
            current = max(1, int(ratios[locs.index(i)] * num_patches))  # as DyVM.keep_counts
        lengths.append(current + model.num_prefix_tokens)
    return lengths


def _branch_macs(l: int, E: int, R: int, N: int) -> dict[str, int]:
    return {"conv": (l + 3) * E * 4, "x_proj": l * E * (R + 2 * N), "dt_proj": l * R * E,
            "scan": scan_macs(1, E, l, N)}


def branch_macs_per_layer(model: VisionMamba) -> list[int]:
    """Multiply-accumulates of one SSM branch (conv, x_proj, dt_proj, scan) of each layer at inference, over the
    layer's kept tokens: what skipping that layer's branch for one image saves."""
    mixer = model.layers[0].mixer
    return [sum(_branch_macs(l, mixer.d_inner, mixer.dt_rank, mixer.d_state).values())
            for l in sequence_lengths(model, _geometry(model, None)[1])]


def _predictor_macs(n: int, D: int, full: bool = False) -> int:
    """The four Linears of a TokenPredictor over n tokens (its LayerNorm counts as a norm). ``full``: as the
    model computes them, the pooled half's share of the second Linear once per image instead of per token."""
    second = n * (D // 2) * (D // 2) + (D // 2) * (D // 2) if full else n * D * (D // 2)
    return n * (D * D + (D // 2) * (D // 4) + (D // 4) * 2) + second


def measure_branch_keep(model: DyVM, images: Tensor, batch_size: int = 64) -> Tensor:
    """Fraction of images for which each branch runs at inference, (depth, 2)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(model.depth, 2, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            out = model.forward_inference(images[start:start + batch_size])
            total += out.gates.double().sum(1).cpu()
    model.train(was_training)
    return total / images.shape[0]


def flops_breakdown(model: VisionMamba, convention: str = "official", *, branch_keep=None,
                    img_size: Optional[int] = None, token_ratio: Optional[Sequence[float]] = None) -> dict[str, float]:
    """MACs per image by component. ``branch_keep``: a float ρ_b, or a (depth, 2) tensor of per-branch
    keep fractions (``full`` only; ``official`` uses its mean)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}; expected one of {CONVENTIONS}")
    size, m = _geometry(model, img_size)
    mixer = model.layers[0].mixer
    D, E, R, N = model.embed_dim, mixer.d_inner, mixer.dt_rank, mixer.d_state
    if branch_keep is None:
        branch_keep = 1.0
    keep = torch.as_tensor(branch_keep, dtype=torch.float64)
    if keep.dim() == 0:
        keep = keep.expand(model.depth, 2)
    if tuple(keep.shape) != (model.depth, 2) or bool((keep < 0).any() or (keep > 1).any()):
        raise ValueError(f"branch_keep_ratio must be in [0, 1] (a float or a (depth={model.depth}, 2) tensor)")
    pe = model.patch_embed
    parts = dict.fromkeys(["patch_embed", "in_proj", "out_proj", "conv", "x_proj", "dt_proj", "scan",
                           "predictors", "head", "norms", "routers"], 0.0)
    parts["patch_embed"] = D * pe.patch_size ** 2 * model.in_chans * m
    parts["head"] = model.head_macs()
    lengths = sequence_lengths(model, m, token_ratio)
    full = convention == "full"
    for i, l in enumerate(lengths):
        parts["in_proj"] += l * D * 2 * E
        parts["out_proj"] += l * E * D
        weight = float(keep[i].sum()) if full else float(keep.mean())
        for name, macs in _branch_macs(l, E, R, N).items():
            parts[name] += weight * macs
        if full:
            parts["norms"] += 2 * l * D
            if getattr(mixer, "block_head", None) is not None:
                parts["routers"] += 2 * E * 2
    for k, loc in enumerate(getattr(model, "pruning_loc", [])):
        # the predictor scores the patches entering the stage (all M positions for the segmentation backbone)
        n = m if getattr(model, "predictor_scores_all_positions", False) else lengths[loc - 1] - model.num_prefix_tokens
        parts["predictors"] += _predictor_macs(n, D, full)
        if full:
            parts["norms"] += 2 * n * D
    if full:
        parts["norms"] += 2 * lengths[-1] * D
    return parts


def count_flops(model: VisionMamba, convention: str = "official", *, branch_keep_ratio: Optional[float] = None,
                img_size: Optional[int] = None, images: Optional[Tensor] = None,
                token_ratio: Optional[Sequence[float]] = None) -> float:
    """G multiply-accumulates per image.

    For a DyVM, ``branch_keep_ratio`` defaults to the ratio measured on ``images`` when given (per
    layer and direction in the ``full`` convention), else to the model's β; for a Vim it is 1.
    ``token_ratio`` overrides the model's cumulative keep ratios (for what-if questions).
    """
    keep = branch_keep_ratio
    if model.is_dynamic and model.use_routers and keep is None:
        keep = measure_branch_keep(model, images) if images is not None else model.block_keep_ratio
        if convention == "official" and isinstance(keep, Tensor):
            keep = float(keep.mean())
    elif keep is not None and not model.is_dynamic:
        pass  # an explicit ratio for a Vim: a what-if (e.g. the official formula at ρ_b < 1)
    if keep is not None and not isinstance(keep, Tensor):
        keep = float(keep)
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"branch_keep_ratio must be in [0, 1], got {keep}")
    return sum(flops_breakdown(model, convention, branch_keep=keep, img_size=img_size,
                               token_ratio=token_ratio).values()) / 1e9


def flops_from_stats(model: VisionMamba, stats: dict) -> dict[str, float]:
    """GFLOPs in both conventions, branch savings from what ``evaluate`` measured (``stats['branch_keep']``,
    (depth, 2): its mean for ``official``, per layer and direction for ``full``)."""
    if model.is_dynamic and model.use_routers and "branch_keep" in stats:
        keep = torch.tensor(stats["branch_keep"], dtype=torch.float64)
        return dict(gflops_official=count_flops(model, "official", branch_keep_ratio=float(keep.mean())),
                    gflops_full=sum(flops_breakdown(model, "full", branch_keep=keep).values()) / 1e9)
    return dict(gflops_official=count_flops(model, "official"), gflops_full=count_flops(model, "full"))


def solve_keep_ratio(model: DyVM, target_gflops: float, convention: str = "official",
                     branch_keep_ratio: Optional[float] = None, tol: float = 1e-4) -> float:
    """Largest token keep ratio ρ (cumulative ρ, ρ², ...) whose FLOPs do not exceed ``target_gflops``.

    Apply it with ``model.configure(token_keep_ratio=ρ)``; no retraining needed.
    """
    if not model.is_dynamic or not model.pruning_loc:
        raise ValueError("solve_keep_ratio needs a DyVM model with token pruning")
    n_stages, m = len(model.pruning_loc), model.num_patches

    def flops_at(rho: float) -> float:
        return count_flops(model, convention, branch_keep_ratio=branch_keep_ratio,
                           token_ratio=[rho ** (k + 1) for k in range(n_stages)])

    lowest = (1.0 / m) ** (1.0 / n_stages)  # the smallest ρ that keeps >= 1 token at the last stage
    lowest = min(1.0, lowest * (1 + 1e-9))
    while int(lowest ** n_stages * m) < 1:
        lowest = min(1.0, lowest + 1e-6)
    if flops_at(lowest) > target_gflops:
        raise ValueError(f"target_gflops={target_gflops}: even keeping one token per stage costs "
                         f"{flops_at(lowest):.4f} G")
    if flops_at(1.0) <= target_gflops:
        return 1.0
    lo, hi = lowest, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flops_at(mid) <= target_gflops else (lo, mid)
    return lo


def count_flops_with_torch(model: nn.Module, x: Tensor) -> float:
    """G MACs per image as torch's FlopCounterMode sees one eval forward (matmuls, convs and the
    scan, registered as a custom op with its formula; no norms). A cross-check of the analytic count."""
    from torch.utils.flop_counter import FlopCounterMode

    from .kernels.scan import scan_as_custom_op

    was_training = model.training
    model.eval()
    with torch.no_grad(), scan_as_custom_op(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2 / x.shape[0] / 1e9
