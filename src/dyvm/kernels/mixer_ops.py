"""Small fused pieces of the bidirectional mixer's training graph (fewer passes over (B, L, E)).

- :func:`split_xz`: ``in_proj``'s output (B, L, 2E) → the x and z views (B, E, L); its backward
  writes both gradients into one (B, L, 2E) buffer (autograd's own would ``cat`` into (B, 2E, L)
  and then copy again for ``in_proj``'s matmul).
- :func:`gated_sum`: ``y_f · g_f + y_b · g_b`` with per-image gates (B,) in one op, whose
  backward computes the gates' gradients as per-image dot products (no (B, E, L) temporaries).
- :func:`narrow_linear`: ``F.linear`` for a narrow input (``dt_proj``: R = 4-12 features → E), whose
  backward multiplies in the orientation the CPU GEMM is fast at.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


class _SplitXZ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz):
        e = xz.shape[-1] // 2
        ctx.shape = xz.shape
        return xz[..., :e].transpose(1, 2), xz[..., e:].transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dx, dz):
        shape = ctx.shape
        e = shape[-1] // 2
        ref = dx if dx is not None else dz
        out = torch.empty(shape, dtype=ref.dtype, device=ref.device)
        for part, g in ((out[..., :e], dx), (out[..., e:], dz)):
            if g is None:
                part.zero_()
            else:
                part.copy_(g.transpose(1, 2))
        return out


def split_xz(xz: Tensor) -> tuple[Tensor, Tensor]:
    """xz (B, L, 2E) → x, z: (B, E, L) views (channel-last memory); one-buffer backward."""
    if not torch.is_grad_enabled() or not xz.requires_grad:
        return tuple(xz.transpose(1, 2).chunk(2, dim=1))
    return _SplitXZ.apply(xz)


class _GatedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y_f, y_b, g_f, g_b):
        gf, gb = g_f.to(y_f.dtype)[:, None, None], g_b.to(y_b.dtype)[:, None, None]
        ctx.save_for_backward(y_f, y_b, g_f, g_b)
        return (y_f * gf).addcmul_(y_b, gb)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        y_f, y_b, g_f, g_b = ctx.saved_tensors
        outs = []
        for i, g in ((0, g_f), (1, g_b)):
            outs.append(grad * g.to(grad.dtype)[:, None, None] if ctx.needs_input_grad[i] else None)
        dg = []
        for i, y in ((2, y_f), (3, y_b)):
            dg.append(_per_image_dot(grad, y).to(g_f.dtype) if ctx.needs_input_grad[i] else None)
        return outs[0], outs[1], dg[0], dg[1]


def _per_image_dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ over all but the first dim of a ⊙ b, without a full-size temporary where the layouts allow."""
    if a.stride() == b.stride():
        order = sorted(range(1, a.dim()), key=lambda d: -a.stride(d))
        pa, pb = a.permute(0, *order), b.permute(0, *order)
        if pa.is_contiguous() and pb.is_contiguous():
            return torch.linalg.vecdot(pa.reshape(a.shape[0], -1), pb.reshape(b.shape[0], -1))
    return (a * b).flatten(1).sum(1)


def gated_sum(y_f: Tensor, y_b: Tensor, g_f: Optional[Tensor], g_b: Optional[Tensor]) -> Tensor:
    """``y_f * g_f[:, None, None] + y_b * g_b[:, None, None]`` (gates None: no gating)."""
    if g_f is None and g_b is None:
        return y_f + y_b
    if g_f is None or g_b is None or not (g_f.requires_grad or g_b.requires_grad) or not torch.is_grad_enabled():
        yf = y_f if g_f is None else y_f * g_f.to(y_f.dtype)[:, None, None]
        yb = y_b if g_b is None else y_b * g_b.to(y_b.dtype)[:, None, None]
        return yf + yb
    return _GatedSum.apply(y_f, y_b, g_f, g_b)


class _NarrowLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, weight.shape[0])                               # (M, E)
        # autograd's own products, g @ W (M, R) and g.T @ x (E, R), have an output only R wide, which
        # the CPU GEMM runs 2-6x slower than the same products transposed (docs/speed/2026-12-03e-avx2)
        dx = torch.mm(weight.t(), g.t()).t().reshape(x.shape) if ctx.needs_input_grad[0] else None
        dw = torch.mm(x.reshape(-1, x.shape[-1]).t(), g).t().contiguous() if ctx.needs_input_grad[1] else None
        return dx, dw


def narrow_linear(x: Tensor, weight: Tensor) -> Tensor:
    """``F.linear(x, weight)`` without bias: x (..., R), weight (E, R) → (..., E), for small R."""
    if (not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad)
            or torch.is_autocast_enabled(x.device.type)):
        return F.linear(x, weight)
    return _NarrowLinear.apply(x, weight)
