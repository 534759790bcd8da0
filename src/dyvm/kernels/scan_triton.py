"""Selective scan as Triton kernels, forward and backward (nothing to compile ahead of time).

Same arithmetic as ``scan.selective_scan_reference`` (shapes in ``scan.py``). One program per
(batch element, block of ``BLOCK_E`` channels) walks the time axis with the (BLOCK_E, N)
state in registers; the state is float32 (float64 for float64 inputs) whatever the input
dtype, and inputs are read in their own dtype and strides (no copies of the mixer's
transposed views, no casts of bf16/fp16 inputs).

Backward: the forward stores the state at the start of every ``CHUNK`` time steps. The
backward program walks the chunks in reverse; for each it recomputes the chunk's states from
its checkpoint into a small scratch buffer, then runs the reverse recurrence
``dh_t = dy_t C_t + exp(Δ_{t+1} A) dh_{t+1}`` over the chunk, reading ``h_{t-1}`` back.
Per-(batch, channel) partials of dA, dD and dΔ-bias, and per-channel-block partials of the
shared dB and dC, are summed in torch (deterministic, no atomics).

``reverse=True`` (a bidirectional mixer's backward branch) walks memory from the last time step
to the first: scan step s reads and writes time index L - 1 - s, so no flipped copies are made.
Checkpoints and scratch stay in scan order.

CPU tensors work under Triton's interpreter (``TRITON_INTERPRET=1``, see ``triton_util``).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_util import acc_dtype, bel_strides, launch

CHUNK = 16  # time steps between forward checkpoints (= scratch depth of the backward)

# Sums are tl.reduce with tl.sum's own combine function and sigmoids are written out: the
# same code as tl.sum / tl.sigmoid once compiled, but those are @triton.jit library functions
# that the interpreter re-patches on every call (milliseconds each: most of its runtime).
_SUM = tl.standard._sum_combine


@triton.jit
def _time_index(s, L, REVERSE: tl.constexpr):
    """The time index in memory of scan step s: L - 1 - s when the scan runs in reverse."""
    if REVERSE:
        return L - 1 - s
    return s


@triton.jit
def _scan_fwd_kernel(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, out_ptr, ck_ptr,
                     E, L, N, n_chunks,
                     su_b, su_e, su_l, sdt_b, sdt_e, sdt_l, sa_e, sa_n,
                     sb_b, sb_n, sb_l, sc_b, sc_n, sc_l, sz_b, sz_e, sz_l, so_b, so_e, so_l,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, SAVE: tl.constexpr, CHUNK: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    em, nm = e < E, n < N
    m2 = em[:, None] & nm[None, :]
    A = tl.load(a_ptr + e[:, None] * sa_e + n[None, :] * sa_n, mask=m2, other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(d_ptr + e, mask=em, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e, mask=em, other=0.0).to(ACC)
    u_p = u_ptr + pid_b * su_b + e * su_e
    dt_p = dt_ptr + pid_b * sdt_b + e * sdt_e
    z_p = z_ptr + pid_b * sz_b + e * sz_e
    o_p = out_ptr + pid_b * so_b + e * so_e
    b_p = b_ptr + pid_b * sb_b + n * sb_n
    c_p = c_ptr + pid_b * sc_b + n * sc_n
    ck_p = ck_ptr + pid_b * n_chunks * E * N + e[:, None] * N + n[None, :]
    h = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    for s in range(L):  # scan step s; t: its time index in memory
        if SAVE:
            if s % CHUNK == 0:
                tl.store(ck_p + (s // CHUNK) * E * N, h, mask=m2)
        t = _time_index(s, L, REVERSE)
        ut = tl.load(u_p + t * su_l, mask=em, other=0.0).to(ACC)
        delta = tl.load(dt_p + t * sdt_l, mask=em, other=0.0).to(ACC)
        if HAS_BIAS:
            delta += bias
        if SOFTPLUS:
            delta = tl.maximum(delta, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(delta)))
        Bt = tl.load(b_p + t * sb_l, mask=nm, other=0.0).to(ACC)
        Ct = tl.load(c_p + t * sc_l, mask=nm, other=0.0).to(ACC)
        h = tl.exp(delta[:, None] * A) * h + (delta * ut)[:, None] * Bt[None, :]
        y = tl.reduce(h * Ct[None, :], 1, _SUM)
        if HAS_D:
            y += Dv * ut
        if HAS_Z:
            zt = tl.load(z_p + t * sz_l, mask=em, other=0.0).to(ACC)
            y = y * zt * (1.0 / (1.0 + tl.exp(-zt)))
        tl.store(o_p + t * so_l, y.to(out_ptr.dtype.element_ty), mask=em)


@triton.jit
def _scan_bwd_kernel(u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, g_ptr, ck_ptr, hs_ptr,
                     du_ptr, ddt_ptr, dz_ptr, da_ptr, db_ptr, dc_ptr, dd_ptr, dbias_ptr,
                     B, E, L, N, n_chunks,
                     su_b, su_e, su_l, sdt_b, sdt_e, sdt_l, sa_e, sa_n,
                     sb_b, sb_n, sb_l, sc_b, sc_n, sc_l, sz_b, sz_e, sz_l, sg_b, sg_e, sg_l,
                     sdu_b, sdu_e, sdu_l, sddt_b, sddt_e, sddt_l, sdz_b, sdz_e, sdz_l,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    em, nm = e < E, n < N
    m2 = em[:, None] & nm[None, :]
    A = tl.load(a_ptr + e[:, None] * sa_e + n[None, :] * sa_n, mask=m2, other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(d_ptr + e, mask=em, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e, mask=em, other=0.0).to(ACC)
    u_p = u_ptr + pid_b * su_b + e * su_e
    dt_p = dt_ptr + pid_b * sdt_b + e * sdt_e
    z_p = z_ptr + pid_b * sz_b + e * sz_e
    g_p = g_ptr + pid_b * sg_b + e * sg_e
    du_p = du_ptr + pid_b * sdu_b + e * sdu_e
    ddt_p = ddt_ptr + pid_b * sddt_b + e * sddt_e
    dz_p = dz_ptr + pid_b * sdz_b + e * sdz_e
    b_p = b_ptr + pid_b * sb_b + n * sb_n
    c_p = c_ptr + pid_b * sc_b + n * sc_n
    ck_p = ck_ptr + pid_b * n_chunks * E * N + e[:, None] * N + n[None, :]
    hs_p = hs_ptr + pid_b * CHUNK * E * N + e[:, None] * N + n[None, :]
    # dB, dC partials of this channel block: (n_eblocks, B, L, N) contiguous
    dbc_off = (pid_e * B + pid_b) * L * N + n

    dh = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    dA_acc = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    dD_acc = tl.zeros((BLOCK_E,), dtype=ACC)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=ACC)
    for kk in range(n_chunks):
        k = n_chunks - 1 - kk
        t0 = k * CHUNK
        steps = tl.minimum(CHUNK, L - t0)
        # recompute the chunk's states; scratch slot i holds h_{t0+i-1} (the state before step t0+i)
        h = tl.load(ck_p + k * E * N, mask=m2, other=0.0)
        for i in range(steps):
            tl.store(hs_p + i * E * N, h, mask=m2)
            t = _time_index(t0 + i, L, REVERSE)  # t0 + i: the scan step
            ut = tl.load(u_p + t * su_l, mask=em, other=0.0).to(ACC)
            delta = tl.load(dt_p + t * sdt_l, mask=em, other=0.0).to(ACC)
            if HAS_BIAS:
                delta += bias
            if SOFTPLUS:
                delta = tl.maximum(delta, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(delta)))
            Bt = tl.load(b_p + t * sb_l, mask=nm, other=0.0).to(ACC)
            h = tl.exp(delta[:, None] * A) * h + (delta * ut)[:, None] * Bt[None, :]
        tl.debug_barrier()
        for j in range(steps):
            i = steps - 1 - j
            t = _time_index(t0 + i, L, REVERSE)
            h_prev = tl.load(hs_p + i * E * N, mask=m2, other=0.0)
            ut = tl.load(u_p + t * su_l, mask=em, other=0.0).to(ACC)
            raw = tl.load(dt_p + t * sdt_l, mask=em, other=0.0).to(ACC)
            if HAS_BIAS:
                raw += bias
            if SOFTPLUS:
                delta = tl.maximum(raw, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(raw)))
            else:
                delta = raw
            Bt = tl.load(b_p + t * sb_l, mask=nm, other=0.0).to(ACC)
            Ct = tl.load(c_p + t * sc_l, mask=nm, other=0.0).to(ACC)
            gt = tl.load(g_p + t * sg_l, mask=em, other=0.0).to(ACC)
            decay = tl.exp(delta[:, None] * A)
            du_t = delta * ut
            h = decay * h_prev + du_t[:, None] * Bt[None, :]
            if HAS_Z:
                zt = tl.load(z_p + t * sz_l, mask=em, other=0.0).to(ACC)
                sz = 1.0 / (1.0 + tl.exp(-zt))
                y = tl.reduce(h * Ct[None, :], 1, _SUM)
                if HAS_D:
                    y += Dv * ut
                dzt = gt * y * sz * (1.0 + zt * (1.0 - sz))
                tl.store(dz_p + t * sdz_l, dzt.to(dz_ptr.dtype.element_ty), mask=em)
                dy = gt * zt * sz
            else:
                dy = gt
            dh += dy[:, None] * Ct[None, :]
            tl.store(dc_ptr + dbc_off + t * N, tl.reduce(dy[:, None] * h, 0, _SUM), mask=nm)
            tl.store(db_ptr + dbc_off + t * N, tl.reduce(dh * du_t[:, None], 0, _SUM), mask=nm)
            dhB = tl.reduce(dh * Bt[None, :], 1, _SUM)
            X = dh * decay * h_prev
            dA_acc += X * delta[:, None]
            ddelta = tl.reduce(X * A, 1, _SUM) + ut * dhB
            dut = delta * dhB
            if HAS_D:
                dut += Dv * dy
                dD_acc += dy * ut
            if SOFTPLUS:
                ddelta = ddelta * (1.0 / (1.0 + tl.exp(-raw)))
            dbias_acc += ddelta
            tl.store(du_p + t * sdu_l, dut.to(du_ptr.dtype.element_ty), mask=em)
            tl.store(ddt_p + t * sddt_l, ddelta.to(ddt_ptr.dtype.element_ty), mask=em)
            dh = dh * decay
        tl.debug_barrier()
    # per-(batch, channel) partials, summed over the batch in torch
    tl.store(da_ptr + pid_b * E * N + e[:, None] * N + n[None, :], dA_acc, mask=m2)
    if HAS_D:
        tl.store(dd_ptr + pid_b * E + e, dD_acc, mask=em)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * E + e, dbias_acc, mask=em)


# (channels per program, warps) of each kernel on CUDA: the fastest tiles of benchmarks/gpu_check.py's
# sweep on an H200 (2026-12-04; Vim-T's shape, batch 64 and 256, bf16 and fp32). Small single-warp
# programs win: more of them run side by side, and in the backward the per-step sums over the block's
# channels (dB, dC) stay inside one warp. The interpreter runs programs one after the other, so
# there few big ones are fastest.
FWD_TILE_CUDA = (8, 1)
BWD_TILE_CUDA = (16, 1)
BLOCK_E_INTERPRETED = 256


def _blocks(u: Tensor, nstate: int, block_e_cuda: int) -> tuple[int, int]:
    """(BLOCK_E, BLOCK_N) for u (B, E, L) and d_state ``nstate``."""
    block_n = triton.next_power_of_2(max(nstate, 1))
    cap = max(1, min(block_e_cuda, 4096 // block_n)) if u.is_cuda else BLOCK_E_INTERPRETED
    return min(cap, triton.next_power_of_2(max(u.shape[1], 1))), block_n


def _time_major_empty(like: Tensor) -> Tensor:
    """A (B, E, L) tensor laid out (B, L, E) in memory: each time step of a channel block is
    contiguous for the kernels, and the mixer's next op (out_proj) wants (B, L, E) anyway."""
    b, e, l = like.shape
    return like.new_empty(b, l, e).transpose(1, 2)


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save: bool, reverse: bool = False):
    """Output (B, E, L) in u's dtype (time-major memory), and the checkpoints (B, n_chunks, E, N) or None."""
    batch, channels, length = u.shape
    nstate = A.shape[1]
    out = _time_major_empty(u)
    n_chunks = triton.cdiv(length, CHUNK)
    acc = acc_dtype(u, delta, A, B, C, D, z, delta_bias)
    state_dtype = torch.float64 if acc == tl.float64 else torch.float32
    ck = u.new_empty((batch, n_chunks, channels, nstate) if save else (1,), dtype=state_dtype)
    if out.numel() == 0:
        return out, ck
    block_e, block_n = _blocks(u, nstate, FWD_TILE_CUDA[0])
    grid = (batch, triton.cdiv(channels, block_e))
    launch(_scan_fwd_kernel, grid, u.device,
           u, delta, A, B, C, u if D is None else D, u if z is None else z,
           u if delta_bias is None else delta_bias, out, ck,
           channels, length, nstate, n_chunks,
           *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *bel_strides(z), *out.stride(),
           HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
           SOFTPLUS=bool(delta_softplus), SAVE=save, CHUNK=CHUNK, REVERSE=bool(reverse),
           BLOCK_E=block_e, BLOCK_N=block_n, ACC=acc, num_warps=FWD_TILE_CUDA[1])
    return out, ck


def _backward(grad_out, u, delta, A, B, C, D, z, delta_bias, delta_softplus, ck, reverse: bool = False):
    batch, channels, length = u.shape
    nstate = A.shape[1]
    n_chunks = ck.shape[1]
    block_e, block_n = _blocks(u, nstate, BWD_TILE_CUDA[0])
    n_eblocks = triton.cdiv(channels, block_e)
    work = ck.dtype  # the state dtype: fp32, or fp64 for fp64 inputs
    du, ddelta = _time_major_empty(u), _time_major_empty(delta)
    dz = None if z is None else _time_major_empty(z)
    dA_part = u.new_empty(batch, channels, nstate, dtype=work)
    dB_part = u.new_empty(n_eblocks, batch, length, nstate, dtype=work)
    dC_part = u.new_empty(n_eblocks, batch, length, nstate, dtype=work)
    dD_part = u.new_empty(batch, channels, dtype=work)
    dbias_part = u.new_empty(batch, channels, dtype=work)
    scratch = u.new_empty(batch, CHUNK, channels, nstate, dtype=work)
    if u.numel() > 0:
        launch(_scan_bwd_kernel, (batch, n_eblocks), u.device,
               u, delta, A, B, C, u if D is None else D, u if z is None else z,
               u if delta_bias is None else delta_bias, grad_out, ck, scratch,
               du, ddelta, du if dz is None else dz, dA_part, dB_part, dC_part, dD_part, dbias_part,
               batch, channels, length, nstate, n_chunks,
               *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *bel_strides(z),
               *grad_out.stride(), *du.stride(), *ddelta.stride(), *bel_strides(dz),
               HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
               SOFTPLUS=bool(delta_softplus), CHUNK=CHUNK, REVERSE=bool(reverse),
               BLOCK_E=block_e, BLOCK_N=block_n, ACC=acc_dtype(u, delta, A, B, C, D, z, delta_bias),
               num_warps=BWD_TILE_CUDA[1])
    else:
        for t in (dA_part, dB_part, dC_part, dD_part, dbias_part):
            t.zero_()
    dA = dA_part.sum(0).to(A.dtype)
    dB = dB_part.sum(0).to(B.dtype).transpose(1, 2)
    dC = dC_part.sum(0).to(C.dtype).transpose(1, 2)
    dD = None if D is None else dD_part.sum(0).to(D.dtype)
    dbias = None if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype)
    return du, ddelta, dA, dB, dC, dD, dz, dbias


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        out, ck = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save=True, reverse=reverse)
        ctx.delta_softplus, ctx.reverse = delta_softplus, reverse
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ck)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, z, delta_bias, ck = ctx.saved_tensors
        grads = _backward(grad_out, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ck, ctx.reverse)
        return (*grads, None, None)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                          D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                          delta_bias: Optional[Tensor] = None, delta_softplus: bool = True,
                          reverse: bool = False) -> Tensor:
    """Selective scan with the Triton kernels; u, delta, z (B, E, L), A (E, N), B, C (B, N, L),
    D, delta_bias (E,). Any strides and float dtypes (mixed is fine); output (B, E, L) in u's
    dtype, laid out (B, L, E) in memory; gradients in each input's dtype. ``reverse``: the
    recurrence runs from the last time step to the first (see ``scan.selective_scan``). CUDA
    tensors, or CPU ones under Triton's interpreter."""
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        raise ValueError(f"scan backend 'triton' needs all tensors on one device, got {sorted(map(str, devices))}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save=False, reverse=reverse)[0]


# the dispatcher (scan.selective_scan) passes the inputs in their own dtypes: the kernels read
# bf16/fp16 directly and keep the state in fp32
selective_scan_triton.native_dtypes = True
