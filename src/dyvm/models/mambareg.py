"""MambaReg (Vim with registers; official ``Image_Classification/MambaReg/vim/models/mambareg.py``).

What differs from Vim: no class token but ``num_cls_tokens`` (12) learned registers with their
own ``pos_embed_cls``, interleaved evenly among the patches ([M//13 patches, register] × 12, then
the rest) and re-spread evenly among the kept patches after every pruning; they are never pruned.
The routers read the mean of ``xz`` over the registers; the head maps each register through
``neck`` (D → D/r, no bias), flattens (12·D/r), applies ``norm_neck`` (RMSNorm) and ``head``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from ..kernels.norm import RMSNorm
from .dyvm import DyVM
from .presets import build_model
from .registry import register_model
from .tokens import InterleavedRegisters, PrefixLayout, TokenSequence
from .vim import VisionMamba


class MambaRegVariant:
    """What MambaReg changes; mixed in before :class:`VisionMamba` or :class:`DyVM`."""

    FIXED_OPTIONS = {"rms_norm": True, "if_abs_pos_embed": True, "if_rope": False, "if_rope_residual": False,
                     "bimamba_type": "v2"}
    class_row = None  # pos_embed covers the patches only

    def __init__(self, num_cls_tokens: int = 12, cls_reduce: int = 2, stride: Optional[int] = None,
                 patch_size: int = 16, **kwargs: Any):
        if num_cls_tokens < 1:
            raise ValueError(f"num_cls_tokens must be >= 1, got {num_cls_tokens}")
        embed_dim = kwargs.get("embed_dim", 192)
        if cls_reduce < 2:  # the official code raises NotImplementedError for 1
            raise ValueError(f"cls_reduce={cls_reduce} is not supported (the official MambaReg needs >= 2)")
        if num_cls_tokens % cls_reduce or embed_dim % cls_reduce:
            raise ValueError(f"cls_reduce={cls_reduce} must divide num_cls_tokens={num_cls_tokens} and "
                             f"embed_dim={embed_dim} (the official head and neck sizes disagree otherwise)")
        if stride is not None and stride != 16:  # the official PatchEmbed is built without stride
            raise ValueError(f"stride={stride}: the official MambaReg always patchifies with stride 16")
        self.num_registers, self.cls_reduce = num_cls_tokens, cls_reduce
        super().__init__(patch_size=patch_size, stride=16, **kwargs)
        self.config.update(num_cls_tokens=num_cls_tokens, cls_reduce=cls_reduce)

    def build_layout(self) -> PrefixLayout:
        return InterleavedRegisters(self.num_registers)

    def _build_prefix(self) -> None:
        """``cls_token`` and ``pos_embed_cls`` (1, R, D) for the registers, ``pos_embed`` (1, M, D)."""
        d = self.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_registers, d))
        self.pos_embed_cls = nn.Parameter(torch.zeros(1, self.num_registers, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, d))

    def _build_head(self) -> None:
        reduced = self.embed_dim // self.cls_reduce
        self.neck = nn.Linear(self.embed_dim, reduced, bias=False)
        self.norm_neck = RMSNorm(self.num_registers * reduced, eps=self.config["norm_epsilon"])
        self.num_features = self.num_registers * reduced
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    def _init_weights(self) -> None:
        super()._init_weights()
        trunc_normal_(self.pos_embed_cls, std=0.02)
        trunc_normal_(self.neck.weight, std=0.02)

    def embed_tokens(self, patches: Tensor) -> TokenSequence:
        """Patches get ``pos_embed`` (then dropout), registers ``pos_embed_cls``; then interleaved."""
        patches = self.pos_drop(patches + self.pos_embed)
        registers = (self.cls_token + self.pos_embed_cls).expand(patches.shape[0], -1, -1)
        return TokenSequence.from_parts(registers.to(patches.dtype), patches, self.layout)

    def forward_head(self, prefix_features: Tensor, pre_logits: bool = False) -> Tensor:
        """Normalised registers (B, R, D) → neck → (B, R·D/r) → norm_neck → logits (B, C)."""
        pooled = self.norm_neck(self.neck(prefix_features).flatten(1))
        return pooled if pre_logits else self.head(pooled)


    def head_macs(self) -> int:
        linear = self.head.in_features * self.head.out_features if isinstance(self.head, nn.Linear) else 0
        return self.num_registers * self.neck.in_features * self.neck.out_features + linear


class MambaReg(MambaRegVariant, VisionMamba):
    """Plain MambaReg (the official ``MambaReg<Size>Teacher``)."""


class DyVMMambaReg(MambaRegVariant, DyVM):
    """DyVM on MambaReg (the official ``DyVM`` of ``mambareg.py``)."""


@register_model
def mambareg_small(**kwargs: Any) -> MambaReg:
    """MambaReg-S: D=384, 24 layers, 12 registers, cls_reduce 2; ckpt mambar_small_patch16_224.pth."""
    return build_model(MambaReg, "mambareg_small", "mambareg", "small", **kwargs)


@register_model
def mambareg_base(**kwargs: Any) -> MambaReg:
    """MambaReg-B: D=768, 24 layers, 12 registers, cls_reduce 4; ckpt mambar_base_patch16_224.pth."""
    return build_model(MambaReg, "mambareg_base", "mambareg", "base", **kwargs)


@register_model
def dyvm_mambareg_small(**kwargs: Any) -> DyVMMambaReg:
    """DyVM on MambaReg-S: ρ=0.7, β=0.8."""
    return build_model(DyVMMambaReg, "dyvm_mambareg_small", "mambareg", "small", **kwargs)


@register_model
def dyvm_mambareg_base(**kwargs: Any) -> DyVMMambaReg:
    """DyVM on MambaReg-B: ρ=0.7, β=0.7."""
    return build_model(DyVMMambaReg, "dyvm_mambareg_base", "mambareg", "base", **kwargs)
