"""Compiled CPU depthwise causal conv1d + bias + SiLU, forward and backward.

The kernels live in the scan extension (``csrc/selective_scan.cpp``, ops
``torch.ops.dyvm_scan.conv_forward`` / ``conv_backward``), so there is one build;
:func:`dyvm.kernels.scan_cpp.available` says whether it built. ``x`` is read through its
strides (no copy of the mixer's transposed views); the output and ``x``'s gradient are
(B, E, L), contiguous, or channel-last ((B, L, E) memory) with ``channels_last=True``.
Optional: a 0/1 token mask (B, L) applied to the input and to the output, and ``reverse``
(the conv over the reversed sequence). float32 and float64.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import scan_cpp


def supports(x: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor] = None) -> bool:
    """Whether the compiled kernel takes these tensors (CPU, one float32/float64 dtype, 3-D x)."""
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64) or x.device.type != "cpu" or x.dim() != 3:
        return False
    if mask is not None and (mask.dtype != dtype or mask.device.type != "cpu"
                             or tuple(mask.shape) != (x.shape[0], x.shape[2])):
        return False
    if weight.dtype != dtype or weight.device.type != "cpu":
        return False
    if bias is not None and (bias.dtype != dtype or bias.device.type != "cpu"):
        return False
    return True


def _weight_2d(weight: Tensor, channels: int) -> Tensor:
    w = weight.reshape(weight.shape[0], weight.shape[-1]) if weight.dim() == 3 else weight
    if w.dim() != 2 or w.shape[0] != channels or (weight.dim() == 3 and weight.shape[1] != 1):
        raise ValueError(f"weight must be (E, 1, K) or (E, K) with E={channels}, got {tuple(weight.shape)}")
    return w.contiguous()


class _CausalConv1dCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu, mask, reverse, channels_last):
        w = _weight_2d(weight, x.shape[1])
        b = None if bias is None else bias.contiguous()
        ctx.save_for_backward(x, w, b, mask)
        ctx.silu, ctx.reverse, ctx.cl = bool(silu), bool(reverse), bool(channels_last)
        ctx.weight_shape = weight.shape
        return torch.ops.dyvm_scan.conv_forward(x, w, b, bool(silu), mask, ctx.reverse, ctx.cl)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, w, b, mask = ctx.saved_tensors
        grad_out = grad_out.to(x.dtype)
        mask_grad = mask is not None and ctx.needs_input_grad[4]
        dx, dw, db, dm = torch.ops.dyvm_scan.conv_backward(grad_out, x, w, b, ctx.silu, mask, ctx.reverse, ctx.cl,
                                                           mask_grad)
        return (dx if ctx.needs_input_grad[0] else None,
                dw.reshape(ctx.weight_shape) if ctx.needs_input_grad[1] else None,
                db if b is not None and ctx.needs_input_grad[2] else None, None,
                dm if mask_grad else None, None, None)


def causal_conv1d_cpp(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, silu: bool = True,
                      mask: Optional[Tensor] = None, reverse: bool = False, channels_last: bool = False) -> Tensor:
    """``silu(F.conv1d(x, weight, bias, padding=K-1, groups=E)[..., :L])`` with the compiled kernel.

    x: (B, E, L) float32/float64 CPU tensor, any strides; weight (E, 1, K) or (E, K); bias (E,).
    mask (B, L) in x's dtype (0/1 in DyVM, any values work): ``m * act(conv(m * x))``, with its
    gradient (DyVM's straight-through keep decisions need it); reverse: the
    conv over the time-reversed sequence (``conv(x.flip(-1)).flip(-1)``); channels_last: the
    output and x's gradient are (B, L, E) memory viewed as (B, E, L) (else contiguous).
    """
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ conv kernel is unavailable: {scan_cpp.build_error()}")
    if not supports(x, weight, bias, mask):
        raise TypeError("causal_conv1d_cpp needs CPU float32/float64 tensors of one dtype, a 3-D x and a (B, L) "
                        f"mask; got x {x.dtype} {tuple(x.shape)} on {x.device}, weight {weight.dtype} on "
                        f"{weight.device}")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)
                                    or (mask is not None and mask.requires_grad)):
        return _CausalConv1dCpp.apply(x, weight, bias, silu, mask, reverse, channels_last)
    b = None if bias is None else bias.contiguous()
    return torch.ops.dyvm_scan.conv_forward(x, _weight_2d(weight, x.shape[1]), b, bool(silu), mask, bool(reverse),
                                            bool(channels_last))
