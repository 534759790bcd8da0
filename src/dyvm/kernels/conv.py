"""Depthwise causal conv1d (Mamba's short convolution)."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, silu: bool = True) -> Tensor:
    """x: (B, E, L), weight: (E, 1, K) or (E, K), bias: (E,). Left zero-padding K-1. Returns (B, E, L).

    On CUDA the ``causal_conv1d`` package's kernel is used when it imports (same arithmetic).
    """
    if weight.dim() == 2:
        weight = weight.unsqueeze(1)
    if x.is_cuda:
        from .scan_cuda import causal_conv1d_cuda

        fast = causal_conv1d_cuda()
        if fast is not None:
            return fast(x.contiguous(), weight.squeeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                        activation="silu" if silu else None)
    length = x.shape[-1]
    out = F.conv1d(x, weight, bias, padding=weight.shape[-1] - 1, groups=x.shape[1])[..., :length]
    return F.silu(out) if silu else out
