"""VideoMamba image models (official ``Image_Classification/Vim&VideoMamba/vim/models/videomamba.py``).

What differs from Vim: the class token is prepended (index 0) and stays there after every
pruning (``[cls, kept…, pruned…]``); ``pos_embed`` (1, M+1, D) has the class row first; the mixer
output is ``out_proj(y_f + y_b)`` with no division by 2. The router reads index 0.
"""
from __future__ import annotations

from typing import Any

from .dyvm import DyVM
from .presets import build_model
from .registry import register_model
from .tokens import HeadClassToken, PrefixLayout
from .vim import VisionMamba


class VideoMambaVariant:
    """What VideoMamba changes; mixed in before :class:`VisionMamba` or :class:`DyVM`."""

    FIXED_OPTIONS = {"rms_norm": True, "if_abs_pos_embed": True, "if_rope": False, "if_rope_residual": False,
                     "bimamba_type": "v2", "if_cls_token": True, "use_middle_cls_token": False}
    class_row = "first"

    def __init__(self, if_divide_out: bool = False, **kwargs: Any):
        super().__init__(if_divide_out=if_divide_out, **kwargs)

    def build_layout(self) -> PrefixLayout:
        return HeadClassToken()


class VideoMamba(VideoMambaVariant, VisionMamba):
    """Plain VideoMamba (the official ``VideoMamba<Size>Teacher``)."""


class DyVMVideoMamba(VideoMambaVariant, DyVM):
    """DyVM on VideoMamba (the official ``DyVM`` of ``videomamba.py``)."""


@register_model
def videomamba_tiny(**kwargs: Any) -> VideoMamba:
    """VideoMamba-T: D=192, 24 layers; ckpt videomamba_t16_in1k_res224.pth."""
    return build_model(VideoMamba, "videomamba_tiny", "videomamba", "tiny", **kwargs)


@register_model
def videomamba_small(**kwargs: Any) -> VideoMamba:
    """VideoMamba-S: D=384, 24 layers."""
    return build_model(VideoMamba, "videomamba_small", "videomamba", "small", **kwargs)


@register_model
def dyvm_videomamba_tiny(**kwargs: Any) -> DyVMVideoMamba:
    """DyVM on VideoMamba-T: ρ=0.9 (keeps 176/158/142 of 196 patches), β=0.8."""
    return build_model(DyVMVideoMamba, "dyvm_videomamba_tiny", "videomamba", "tiny", **kwargs)


@register_model
def dyvm_videomamba_small(**kwargs: Any) -> DyVMVideoMamba:
    """DyVM on VideoMamba-S: ρ=0.7 (keeps 137/96/67 of 196 patches), β=0.8."""
    return build_model(DyVMVideoMamba, "dyvm_videomamba_small", "videomamba", "small", **kwargs)
