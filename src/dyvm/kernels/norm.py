"""RMSNorm, computed in float32 (Mamba's fused kernel semantics)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import mix_cpp, scan_cpp
from .custom_ops import tracing


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """``x / sqrt(mean(x², -1) + eps) * weight`` in float32 (float64 stays float64). x: (..., D). At CPU inference
    in float32 one pass of the extension (:func:`~dyvm.kernels.mix_cpp.rms_norm`, the extension's blocks' values,
    eager or traced), else ATen's calls (training, other devices, float64, FLOP counting)."""
    if mix_cpp.norm_applies(x, weight):
        return mix_cpp.rms_norm(x, weight, eps)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(dtype)
    return xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * weight.to(dtype)


class _AddRMSNorm(torch.autograd.Function):
    """Training's residual add and RMSNorm as one node: [RMSNorm(res), res] with res = residual + hidden (hidden
    alone without a residual), one pass of the extension each way (``add_rms_norm`` forward, ``rms_norm_backward``),
    where ATen's composed ops took seven passes over (..., D) forward and about ten backward."""

    @staticmethod
    def forward(ctx, hidden, residual, weight, eps):
        out, res = mix_cpp.add_rms_norm(hidden, residual, weight, eps)
        ctx.save_for_backward(res, weight)
        ctx.eps, ctx.has_residual = eps, residual is not None
        ctx.set_materialize_grads(False)
        return out, res

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_res):
        res, weight = ctx.saved_tensors
        if grad_out is None:
            d_res, d_weight = grad_res, None
        else:
            d_res, d_weight = torch.ops.dyvm_scan.rms_norm_backward(grad_out, res, weight, ctx.eps, grad_res)
        return d_res, d_res if ctx.has_residual else None, d_weight, None


def add_rms_norm_for_training(hidden: Tensor, residual: Optional[Tensor], weight: Tensor,
                              eps: float) -> Optional[tuple[Tensor, Tensor]]:
    """Training: (RMSNorm(res), res) with res = residual + hidden in float32 (hidden alone where residual is None),
    as one autograd node (:class:`_AddRMSNorm`) where the extension serves it: CPU, hidden float32 (or 16-bit under
    autocast), residual and weight float32, autograd recording. None elsewhere (the caller then runs ATen's ops;
    the values agree to float rounding)."""
    if not (torch.is_grad_enabled() and hidden.device.type == "cpu" and weight.dtype == torch.float32
            and hidden.dtype in (torch.float32, torch.bfloat16, torch.float16) and hidden.dim() >= 1
            and (residual is None or (residual.dtype == torch.float32 and residual.shape == hidden.shape))
            and not tracing() and scan_cpp.available()):
        return None
    return tuple(_AddRMSNorm.apply(hidden, residual, weight, eps))


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
