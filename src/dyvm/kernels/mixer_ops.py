"""Small fused pieces of the bidirectional mixer's training graph (fewer passes over (B, L, E)).

- :func:`split_xz`: ``in_proj``'s output (B, L, 2E) → the x and z views (B, E, L), one (x, z) pair
  per branch; its backward sums the branches' x gradients (and z gradients) straight into one
  (B, L, 2E) buffer (autograd's own would sum them in a pass of its own, ``cat`` into (B, 2E, L) and
  copy again for ``in_proj``'s matmul).
- :func:`ssm_branch`: x_proj, dt_proj and the scan of one direction; with the ``cpp`` scan in
  training one autograd node whose backward adds x_proj's input gradient into the scan's in place.
- :func:`bidirectional_ssm`: both directions (convs, projections, scans, a router's gates, DyVM's keep mask) as one
  training node where the ``cpp`` kernels serve them: the directions' sums happen in the kernels' stores.
- :func:`gated_sum`: ``y_f · g_f + y_b · g_b`` with per-image gates (B,) in one op, whose
  backward computes the gates' gradients as per-image dot products (no (B, E, L) temporaries).
- :func:`narrow_linear`: ``F.linear`` for a narrow input (``dt_proj``: R = 4-12 features → E), whose
  backward multiplies in the orientation the CPU GEMM is fast at.
- :func:`projection`: ``F.linear`` for ``in_proj`` and ``out_proj`` in float32 CPU training, whose weight gradient
  splits the rows across the threads (the extension's ``weight_grad``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import scan as scan_mod
from .custom_ops import is_channels_last, tracing
from .mix_cpp import panel_linear


class _SplitXZ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, copies):
        e = xz.shape[-1] // 2
        ctx.shape = xz.shape
        return tuple(xz[..., i * e:(i + 1) * e].transpose(1, 2) for _ in range(copies) for i in (0, 1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        shape = ctx.shape
        e = shape[-1] // 2
        ref = next(g for g in grads if g is not None)
        out = torch.empty(shape, dtype=ref.dtype, device=ref.device)
        for i in (0, 1):
            part = out[..., i * e:(i + 1) * e]
            gs = [g.transpose(1, 2) for g in grads[i::2] if g is not None]
            if not gs:
                part.zero_()
            elif len(gs) == 1:
                part.copy_(gs[0])
            else:  # the copies' gradients summed straight into the buffer
                torch.add(gs[0], gs[1], out=part)
                for g in gs[2:]:
                    part.add_(g)
        return out, None


def split_xz(xz: Tensor, copies: int = 1) -> tuple[Tensor, ...]:
    """xz (B, L, 2E) → (x, z) * copies: (B, E, L) views (channel-last memory), one (x, z) pair per
    consumer; the backward sums the copies' x (and z) gradients straight into one (B, L, 2E) buffer."""
    if not torch.is_grad_enabled() or not xz.requires_grad:
        return tuple(xz.transpose(1, 2).chunk(2, dim=1)) * copies
    return _SplitXZ.apply(xz, copies)


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


class _LinearNoBias(torch.autograd.Function):
    """``F.linear(x, weight)`` with a backward for the CPU's GEMM: ``narrow`` (few input features) transposes its
    products; otherwise the weight gradient splits the rows across the threads."""

    @staticmethod
    def forward(ctx, x, weight, narrow):
        ctx.save_for_backward(x, weight)
        ctx.narrow = narrow
        return F.linear(x, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        from . import scan_cpp

        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, weight.shape[0])                               # (M, out)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            # narrow: autograd's own products, g @ W (M, R) and g.T @ x (E, R), have an output only R wide,
            # which the CPU GEMM runs 2-6x slower than the same products transposed (docs/speed/2026-12-03e-avx2)
            dx = (torch.mm(weight.t(), g.t()).t() if ctx.narrow else torch.mm(g, weight)).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])                                 # (M, in)
            dw = torch.mm(x2.t(), g).t().contiguous() if ctx.narrow else scan_cpp.weight_grad(g, x2)
        return dx, dw, None


def narrow_linear(x: Tensor, weight: Tensor) -> Tensor:
    """``F.linear(x, weight)`` without bias: x (..., R), weight (E, R) → (..., E), for small R."""
    if (not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad)
            or torch.is_autocast_enabled(x.device.type)):
        return F.linear(x, weight)
    return _LinearNoBias.apply(x, weight, True)


def projection(x: Tensor, weight: Tensor) -> Tensor:
    """``F.linear(x, weight)`` without bias: x (..., in), weight (out, in) → (..., out); in float32 CPU training (no
    autocast) one node whose weight gradient splits the M rows across the threads (:func:`~dyvm.kernels.scan_cpp.
    weight_grad`), the same values up to float rounding (its sum over rows runs in two parts)."""
    from . import scan_cpp

    if (not torch.is_grad_enabled() or not weight.requires_grad or tracing() or x.device.type != "cpu"
            or x.dtype != torch.float32 or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
            or not x.is_contiguous() or not scan_cpp.weight_grad_applies(x.numel() // max(1, x.shape[-1]))):
        return F.linear(x, weight)
    return _LinearNoBias.apply(x, weight, False)


def ssm_inputs(u: Tensor, x_proj_weight: Tensor, dt_proj_weight: Tensor, d_state: int,
               panels: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor, Tensor]:
    """x_proj and dt_proj of one direction as composed ops: u (B, E, L) → Δ before bias and softplus
    (B, E, L), B and C (B, L, N). ``panels``: the two weights' panels at eager float32 inference
    (:func:`~dyvm.kernels.mix_cpp.panel_linear`, the extension's blocks' route and values), else F.linear."""
    x_dbl = (F.linear(u.transpose(1, 2), x_proj_weight) if panels is None          # (B, L, R+2N)
             else panel_linear(u.transpose(1, 2), panels[0], x_proj_weight.shape[0]))
    dt, B, C = x_dbl.split([dt_proj_weight.shape[1], d_state, d_state], dim=-1)
    delta = (narrow_linear(dt, dt_proj_weight) if panels is None
             else panel_linear(dt, panels[1], dt_proj_weight.shape[0]))
    return delta.transpose(1, 2), B, C


def bidirectional_ssm(xz: Tensor, params: list[Tensor], d_state: int, backend: Optional[str] = None,
                      gates: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Optional[Tensor]:
    """Both SSM directions after ``in_proj`` as one training node where it applies (the ``cpp`` scan, float32 CPU,
    the lanes kernels: :func:`~dyvm.kernels.scan_cpp.bi_ssm_cpp`): xz (B, L, 2E), gates (B, 2) [forward, backward] or
    None, mask (B, L) 0/1 or None (the convs' token mask) → y_f g_f + y_b g_b (B, E, L) channel-last (gated_sum of
    the two branches); params: each direction's seven tensors (conv weight and bias, x_proj, dt_proj weight and bias,
    A, D), forward first. None where it does not apply (the caller then runs the two branches)."""
    from . import scan_cpp

    if (torch.is_grad_enabled() and xz.requires_grad and not scan_mod.routed_as_custom_op() and not tracing()
            and scan_mod.resolve_backend(backend, xz.device) == "cpp"
            and scan_cpp.bi_ssm_cpp_applies(xz, params, d_state, gates, mask)):
        return scan_cpp.bi_ssm_cpp(xz, params, d_state, gates, mask)
    return None


def ssm_branch(u: Tensor, x_proj_weight: Tensor, dt_proj_weight: Tensor, dt_bias: Tensor, A: Tensor, D: Tensor,
               z: Tensor, d_state: int, reverse: bool, backend: Optional[str] = None,
               panels: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """One SSM direction after its conv: u (B, E, L) → x_proj → (Δ = dt_proj(dt), B, C) → the selective
    scan with D, the z gate and dt_bias (softplus) → (B, E, L). x_proj's and dt_proj's weights (R + 2N, E) and
    (E, R), no bias. Training with the ``cpp`` scan on float32 channel-last tensors takes one fused node
    (:func:`~dyvm.kernels.scan_cpp.ssm_branch_cpp`; under CPU autocast too, where x_proj and dt_proj stay float32
    in it, as at inference); everything else the composed ops (the same values)."""
    from . import scan_cpp

    if (torch.is_grad_enabled() and u.requires_grad and u.device.type == "cpu" and u.dtype == torch.float32
            and is_channels_last(u) and is_channels_last(z) and not scan_mod.routed_as_custom_op() and not tracing()
            and all(t.dtype == torch.float32 for t in (x_proj_weight, dt_proj_weight, dt_bias, A, D, z))
            and scan_mod.resolve_backend(backend, u.device) == "cpp"):
        return scan_cpp.ssm_branch_cpp(u, x_proj_weight, dt_proj_weight, dt_bias, A, D, z, d_state, reverse)
    delta, B, C = ssm_inputs(u, x_proj_weight, dt_proj_weight, d_state, panels)
    return scan_mod.selective_scan(u, delta, A, B.transpose(1, 2), C.transpose(1, 2), D, z, dt_bias,
                                   delta_softplus=True, backend=backend, reverse=reverse)
