"""RMSNorm, computed in float32 (Mamba's fused kernel semantics)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import mix_cpp


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """``x / sqrt(mean(x², -1) + eps) * weight`` in float32 (float64 stays float64). x: (..., D). At CPU inference
    in float32 one pass of the extension (:func:`~dyvm.kernels.mix_cpp.rms_norm`, the extension's blocks' values,
    eager or traced), else ATen's calls (training, other devices, float64, FLOP counting)."""
    if mix_cpp.norm_applies(x, weight):
        return mix_cpp.rms_norm(x, weight, eps)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(dtype)
    return xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * weight.to(dtype)


class RMSNorm(nn.Module):
    """RMSNorm with a weight only (state-dict key ``weight``, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
