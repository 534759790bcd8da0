"""Depthwise causal conv1d + bias + SiLU as Triton kernels, forward and backward.

``out[b, e, t] = silu(bias[e] + sum_k w[e, k] x[b, e, t - (K-1) + k])`` (zero left padding),
the arithmetic of ``conv.causal_conv1d``. Programs cover (batch, block of channels, block of
time steps); ``x`` is read through its strides (the mixer passes a transposed view of
in_proj's output). The output is laid out time-major, (B, L, E) in memory viewed as (B, E, L),
so the scan reads each time step of a channel block contiguously and ``x_proj`` gets a
contiguous (B, L, E) input. Arithmetic in float32 (float64 for float64 inputs).

``reverse=True`` runs the conv over the time-reversed sequence (anti-causal: tap k reads
``x[t + (K-1) - k]``, zero right padding), equal to ``conv(x.flip(-1)).flip(-1)`` without the
copies (a bidirectional mixer's backward branch).

Backward: one kernel recomputes the pre-activation, writes dL/d(pre-activation) and
per-(batch, time block) partials of dw and dbias (summed in torch, deterministic); a second
one forms dx from it. CPU tensors work under Triton's interpreter (``TRITON_INTERPRET=1``, see
``triton_util``).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_util import acc_dtype, launch

# Sums are tl.reduce with tl.sum's own combine function and sigmoids are written out: the
# same code as tl.sum / tl.sigmoid once compiled, but those are @triton.jit library functions
# that the interpreter re-patches on every call (milliseconds each: most of its runtime).
_SUM = tl.standard._sum_combine


@triton.jit
def _load_tap(x_p, t, k, L, sx_l, em, tm, K: tl.constexpr, REVERSE: tl.constexpr):
    """x at the time index tap k reads for outputs t: t - (K-1) + k (causal) or t + (K-1) - k (reverse),
    zero outside [0, L); x_p points at the program's channel rows. (BLOCK_E, BLOCK_T) in x's dtype."""
    if REVERSE:
        src = t + (K - 1) - k
    else:
        src = t - (K - 1) + k
    return tl.load(x_p + src[None, :] * sx_l, mask=em[:, None] & ((src >= 0) & (src < L) & tm)[None, :], other=0.0)


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, E, L,
                     sx_b, sx_e, sx_l, sw_e, sw_k, so_b, so_e, so_l,
                     K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr, ACC: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    em, tm = e < E, t < L
    x_p = x_ptr + pid_b * sx_b + e[:, None] * sx_e
    acc = tl.zeros((BLOCK_E, BLOCK_T), dtype=ACC)
    for k in tl.static_range(K):
        xv = _load_tap(x_p, t, k, L, sx_l, em, tm, K, REVERSE)
        wv = tl.load(w_ptr + e * sw_e + k * sw_k, mask=em, other=0.0).to(ACC)
        acc += wv[:, None] * xv.to(ACC)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + e, mask=em, other=0.0).to(ACC)[:, None]
    if SILU:
        acc = acc * (1.0 / (1.0 + tl.exp(-acc)))
    tl.store(out_ptr + pid_b * so_b + e[:, None] * so_e + t[None, :] * so_l,
             acc.to(out_ptr.dtype.element_ty), mask=em[:, None] & tm[None, :])


@triton.jit
def _conv_bwd_pre_kernel(x_ptr, w_ptr, bias_ptr, g_ptr, dpre_ptr, dw_ptr, db_ptr, E, L, n_tblocks,
                         sx_b, sx_e, sx_l, sw_e, sw_k, sg_b, sg_e, sg_l,
                         K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
                         BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr, ACC: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_t = tl.program_id(2)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    em, tm = e < E, t < L
    m2 = em[:, None] & tm[None, :]
    x_p = x_ptr + pid_b * sx_b + e[:, None] * sx_e
    g = tl.load(g_ptr + pid_b * sg_b + e[:, None] * sg_e + t[None, :] * sg_l, mask=m2, other=0.0).to(ACC)
    if SILU:
        pre = tl.zeros((BLOCK_E, BLOCK_T), dtype=ACC)
        for k in tl.static_range(K):
            xv = _load_tap(x_p, t, k, L, sx_l, em, tm, K, REVERSE)
            wv = tl.load(w_ptr + e * sw_e + k * sw_k, mask=em, other=0.0).to(ACC)
            pre += wv[:, None] * xv.to(ACC)
        if HAS_BIAS:
            pre += tl.load(bias_ptr + e, mask=em, other=0.0).to(ACC)[:, None]
        s = 1.0 / (1.0 + tl.exp(-pre))
        g = g * s * (1.0 + pre * (1.0 - s))
    # dpre: (B, E, L) contiguous; masked slots hold 0 so they add nothing below
    tl.store(dpre_ptr + pid_b * E * L + e[:, None] * L + t[None, :], g, mask=m2)
    part = (pid_b * n_tblocks + pid_t) * E + e     # partials: (B, n_tblocks, E[, K])
    for k in tl.static_range(K):
        xv = _load_tap(x_p, t, k, L, sx_l, em, tm, K, REVERSE)
        tl.store(dw_ptr + part * K + k, tl.reduce(g * xv.to(ACC), 1, _SUM), mask=em)
    if HAS_BIAS:
        tl.store(db_ptr + part, tl.reduce(g, 1, _SUM), mask=em)


@triton.jit
def _conv_bwd_x_kernel(dpre_ptr, w_ptr, dx_ptr, E, L, sw_e, sw_k, sdx_b, sdx_e, sdx_l,
                       K: tl.constexpr, REVERSE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr,
                       ACC: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    em, tm = e < E, t < L
    d_p = dpre_ptr + pid_b * E * L + e[:, None] * L
    acc = tl.zeros((BLOCK_E, BLOCK_T), dtype=ACC)
    for k in tl.static_range(K):
        if REVERSE:  # x[t] feeds out[t - (K-1) + k] through tap k, else out[t + (K-1) - k]
            dst = t - (K - 1) + k
        else:
            dst = t + (K - 1) - k
        dv = tl.load(d_p + dst[None, :], mask=em[:, None] & ((dst >= 0) & (dst < L))[None, :], other=0.0)
        wv = tl.load(w_ptr + e * sw_e + k * sw_k, mask=em, other=0.0).to(ACC)
        acc += wv[:, None] * dv
    tl.store(dx_ptr + pid_b * sdx_b + e[:, None] * sdx_e + t[None, :] * sdx_l,
             acc.to(dx_ptr.dtype.element_ty), mask=em[:, None] & tm[None, :])


# (channels, time steps) per program: modest tiles on GPU; interpreted, few big programs
BLOCKS_CUDA = (32, 64)
BLOCKS_INTERPRETED = (256, 1024)


def _blocks(x: Tensor) -> tuple[int, int]:
    """(BLOCK_E, BLOCK_T) for x (B, E, L)."""
    cap_e, cap_t = BLOCKS_CUDA if x.is_cuda else BLOCKS_INTERPRETED
    return (min(cap_e, triton.next_power_of_2(max(x.shape[1], 1))),
            min(cap_t, triton.next_power_of_2(max(x.shape[2], 1))))


def _weight_2d(weight: Tensor, channels: int) -> Tensor:
    w = weight.reshape(weight.shape[0], weight.shape[-1]) if weight.dim() == 3 else weight
    if w.dim() != 2 or w.shape[0] != channels or (weight.dim() == 3 and weight.shape[1] != 1):
        raise ValueError(f"weight must be (E, 1, K) or (E, K) with E={channels}, got {tuple(weight.shape)}")
    return w


def _time_major_empty(x: Tensor) -> Tensor:
    b, e, l = x.shape
    return x.new_empty(b, l, e).transpose(1, 2)


def _forward(x: Tensor, w: Tensor, bias: Optional[Tensor], silu: bool, reverse: bool = False) -> Tensor:
    batch, channels, length = x.shape
    out = _time_major_empty(x)
    if out.numel() == 0:
        return out
    block_e, block_t = _blocks(x)
    grid = (batch, triton.cdiv(channels, block_e), triton.cdiv(length, block_t))
    launch(_conv_fwd_kernel, grid, x.device, x, w, w if bias is None else bias, out, channels, length,
           *x.stride(), *w.stride(), *out.stride(),
           K=w.shape[1], HAS_BIAS=bias is not None, SILU=bool(silu), REVERSE=bool(reverse),
           BLOCK_E=block_e, BLOCK_T=block_t, ACC=acc_dtype(x, w, bias), num_warps=4)
    return out


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse):
        w = _weight_2d(weight, x.shape[1])
        ctx.save_for_backward(x, w, bias)
        ctx.silu, ctx.reverse = bool(silu), bool(reverse)
        ctx.weight_shape = weight.shape
        return _forward(x, w, bias, silu, reverse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, w, bias = ctx.saved_tensors
        batch, channels, length = x.shape
        ksize = w.shape[1]
        block_e, block_t = _blocks(x)
        n_tblocks = triton.cdiv(length, block_t)
        acc = acc_dtype(x, w, bias)
        work = torch.float64 if acc == tl.float64 else torch.float32
        dx = _time_major_empty(x)
        dpre = x.new_empty(batch, channels, length, dtype=work)
        dw_part = x.new_zeros(batch, n_tblocks, channels, ksize, dtype=work)
        db_part = x.new_zeros(batch, n_tblocks, channels, dtype=work)
        if x.numel() > 0:
            grid = (batch, triton.cdiv(channels, block_e), n_tblocks)
            launch(_conv_bwd_pre_kernel, grid, x.device, x, w, w if bias is None else bias, grad_out,
                   dpre, dw_part, db_part, channels, length, n_tblocks,
                   *x.stride(), *w.stride(), *grad_out.stride(),
                   K=ksize, HAS_BIAS=bias is not None, SILU=ctx.silu, REVERSE=ctx.reverse,
                   BLOCK_E=block_e, BLOCK_T=block_t, ACC=acc, num_warps=4)
            launch(_conv_bwd_x_kernel, grid, x.device, dpre, w, dx, channels, length,
                   *w.stride(), *dx.stride(), K=ksize, REVERSE=ctx.reverse, BLOCK_E=block_e, BLOCK_T=block_t,
                   ACC=acc, num_warps=4)
        dw = dw_part.sum((0, 1)).to(w.dtype).reshape(ctx.weight_shape)
        db = None if bias is None else db_part.sum((0, 1)).to(bias.dtype)
        return (dx if ctx.needs_input_grad[0] else None, dw if ctx.needs_input_grad[1] else None,
                db if ctx.needs_input_grad[2] else None, None, None)


def causal_conv1d_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, silu: bool = True,
                         reverse: bool = False) -> Tensor:
    """``silu(F.conv1d(x, weight, bias, padding=K-1, groups=E)[..., :L])`` with the Triton kernels;
    ``reverse``: over the time-reversed sequence (``conv(x.flip(-1)).flip(-1)``, no copies).

    x: (B, E, L), any strides and float dtype; weight (E, 1, K) or (E, K); bias (E,). Returns
    (B, E, L) in x's dtype, time-major in memory. CUDA tensors (CPU ones when interpreted).
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, E, L), got {tuple(x.shape)}")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _CausalConv1dTriton.apply(x, weight, bias, silu, reverse)
    return _forward(x, _weight_2d(weight, x.shape[1]), bias, silu, reverse)
