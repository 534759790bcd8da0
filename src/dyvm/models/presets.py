"""Per-size presets of every model family (one table) and the one builder every factory uses.

ρ (token keep ratio) and β (block keep ratio) are those of the official training scripts
(``variants.md``); a family without a script for a size has none (the DyVM defaults apply).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SizePreset:
    """Dimensions and DyVM targets of one size of one family."""

    embed_dim: int
    depth: int = 24
    token_keep_ratio: Optional[float] = None   # ρ of the official script (cumulative ρ, ρ², ρ³)
    block_keep_ratio: Optional[float] = None   # β of the official script
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific constructor keywords


PRESETS: dict[str, dict[str, SizePreset]] = {
    "vim": {"tiny": SizePreset(192, token_keep_ratio=0.9, block_keep_ratio=0.8),
            "small": SizePreset(384, token_keep_ratio=0.7, block_keep_ratio=0.8),
            "base": SizePreset(768, token_keep_ratio=0.7, block_keep_ratio=0.7)},
    "videomamba": {"tiny": SizePreset(192, token_keep_ratio=0.9, block_keep_ratio=0.8),
                   "small": SizePreset(384, token_keep_ratio=0.7, block_keep_ratio=0.8)},
    "mambareg": {"small": SizePreset(384, token_keep_ratio=0.7, block_keep_ratio=0.8,
                                     extra=dict(num_cls_tokens=12, cls_reduce=2)),
                 "base": SizePreset(768, token_keep_ratio=0.7, block_keep_ratio=0.7,
                                    extra=dict(num_cls_tokens=12, cls_reduce=4))},
    # segmentation: β is the 0.8 hard-coded in the official backbone's loss
    "seg": {"tiny": SizePreset(192, token_keep_ratio=0.9, block_keep_ratio=0.8, extra=dict(img_size=512)),
            "small": SizePreset(384, token_keep_ratio=0.8, block_keep_ratio=0.8, extra=dict(img_size=512)),
            # this machine's scale: a segmenter for 56-px Fashion-MNIST mosaics (dyvm.mosaics: 10 garment
            # classes + background), 4-px patches (196 tokens), features after layers 1, 3, 5 and the last
            # (the official 5/11/17/23 of 24 scaled; the literal 23 names the last layer)
            "micro": SizePreset(64, depth=8, token_keep_ratio=0.7, block_keep_ratio=0.8,
                                extra=dict(img_size=56, patch_size=4, in_chans=1, num_classes=11,
                                           out_indices=[1, 3, 5, 23], decode_channels=64))},
}


def data_config(model: nn.Module) -> dict:
    """timm-style pretrained_cfg (read by ``timm.data.resolve_data_config``)."""
    return dict(input_size=(model.in_chans, model.img_size, model.img_size), mean=IMAGENET_MEAN,
                std=IMAGENET_STD, crop_pct=0.875, interpolation="bicubic", num_classes=model.num_classes,
                first_conv="patch_embed.proj", classifier="head")


def build_model(cls: type, arch: str, family: str, size: str, **kwargs: Any) -> nn.Module:
    """``cls`` built with the preset of ``family``/``size`` (patch 16), ``kwargs`` overriding it.

    A dynamic model (``cls.is_dynamic``) also gets the preset's ρ and β unless ``token_ratio`` /
    ``token_keep_ratio`` / ``block_keep_ratio`` are given."""
    preset = PRESETS[family][size]
    cfg: dict[str, Any] = dict(patch_size=16, depth=preset.depth, embed_dim=preset.embed_dim, d_state=16)
    cfg.update(preset.extra)
    if cls.is_dynamic:
        if preset.block_keep_ratio is not None:
            cfg["block_keep_ratio"] = preset.block_keep_ratio
        if preset.token_keep_ratio is not None and "token_ratio" not in kwargs:
            cfg["token_keep_ratio"] = preset.token_keep_ratio
    cfg.update(kwargs)
    model = cls(**cfg)
    model.pretrained_cfg = model.default_cfg = data_config(model)
    model.arch = arch
    return model
