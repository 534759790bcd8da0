"""Small fused pieces of the bidirectional mixer's training graph (fewer passes over (B, L, E)).

- :func:`split_xz`: ``in_proj``'s output (B, L, 2E) → the x and z views (B, E, L), and optionally some
  whole rows (the DyVM router's class token); its backward writes all their gradients into one
  (B, L, 2E) buffer (autograd's own would ``cat`` into (B, 2E, L) and copy again for ``in_proj``'s
  matmul, and give the rows a zero-filled (B, L, 2E) gradient of their own to add).
- :func:`gated_sum`: ``y_f · g_f + y_b · g_b`` with per-image gates (B,) in one op, whose
  backward computes the gates' gradients as per-image dot products (no (B, E, L) temporaries).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _xz_grad(shape: torch.Size, dx: Optional[Tensor], dz: Optional[Tensor]) -> Tensor:
    """The (B, L, 2E) gradient of xz from those of its x and z views (None: zero)."""
    e = shape[-1] // 2
    ref = dx if dx is not None else dz
    out = torch.empty(shape, dtype=ref.dtype, device=ref.device)
    for part, g in ((out[..., :e], dx), (out[..., e:], dz)):
        if g is None:
            part.zero_()
        else:
            part.copy_(g.transpose(1, 2))
    return out


class _SplitXZ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz):
        e = xz.shape[-1] // 2
        ctx.shape = xz.shape
        return xz[..., :e].transpose(1, 2), xz[..., e:].transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dx, dz):
        return _xz_grad(ctx.shape, dx, dz)


class _SplitXZRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, rows):
        e = xz.shape[-1] // 2
        ctx.shape = xz.shape
        ctx.save_for_backward(rows)
        picked = xz.reshape(-1, xz.shape[-1]).index_select(0, rows)
        return xz[..., :e].transpose(1, 2), xz[..., e:].transpose(1, 2), picked

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dx, dz, dpicked):
        shape, (rows,) = ctx.shape, ctx.saved_tensors
        if dx is None and dz is None:
            out = dpicked.new_zeros(shape)
        else:
            out = _xz_grad(shape, dx, dz)
        if dpicked is not None:
            out.view(-1, shape[-1]).index_add_(0, rows, dpicked.to(out.dtype))
        return out, None


def split_xz(xz: Tensor, rows: Optional[Tensor] = None):
    """xz (B, L, 2E) → x, z: (B, E, L) views (channel-last memory); one-buffer backward. With ``rows``
    (K,) int64 indices into the flattened (B·L) rows: also those rows, (K, 2E), whose gradient is added
    into the same buffer (no (B, L, 2E) zeros of their own)."""
    if not torch.is_grad_enabled() or not xz.requires_grad:
        x, z = xz.transpose(1, 2).chunk(2, dim=1)
        if rows is None:
            return x, z
        return x, z, xz.reshape(-1, xz.shape[-1]).index_select(0, rows)
    if rows is None:
        return _SplitXZ.apply(xz)
    return _SplitXZRows.apply(xz, rows)


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
