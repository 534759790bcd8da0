"""Selective scan (Mamba's S6 recurrence) with named backends.

Shapes (one group, as in Vim): ``u, delta, z``: (B, E, L); ``A``: (E, N);
``B, C``: (B, N, L); ``D, delta_bias``: (E,). Output: (B, E, L) in ``u``'s dtype.

    Δ_t = softplus(delta_t + delta_bias)           (if delta_softplus)
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t        h_0 = 0, state (E, N)
    y_t = C_t · h_t + D u_t;   out_t = y_t · silu(z_t)

The state is always computed in float32 (float64 when the inputs are float64), whatever
the input dtype, so bf16/fp16 inputs under autocast are fine on every backend.

Backends (``backend=`` argument, else ``$DYVM_SCAN_BACKEND`` read at call time, else ``auto``):

==========  ==========================================  =================================
name        what                                        dtypes of the state
==========  ==========================================  =================================
reference   plain sequential recurrence (test oracle)   fp32, fp64
torch       time-major PyTorch loop, custom backward    fp32, fp64
cpp         compiled CPU kernel (SIMD over N, OpenMP)   fp32 (AVX-512/AVX2 fast path), fp64
cuda        ``mamba_ssm`` selective_scan_fn              fp32 (CUDA tensors only)
triton      Triton kernels, fwd + bwd (``scan_triton``)   fp32, fp64 (CUDA; CPU interpreted)
auto        on CUDA tensors: cuda when mamba_ssm imports, else triton, else torch;
            elsewhere: cpp where it builds, else torch
==========  ==========================================  =================================
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .custom_ops import (empty_in_layout, fake_grads, grads_or_none, is_channels_last, recompute_grads, to_layout,
                         tracing)

BACKENDS = ("reference", "torch", "cpp", "cuda", "triton", "auto")
ENV_VAR = "DYVM_SCAN_BACKEND"

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: Optional[str] = None, device: torch.device | None = None) -> str:
    """Return the concrete backend name for ``backend`` (or ``$DYVM_SCAN_BACKEND``)."""
    source = "backend"
    if backend is None:
        backend = os.environ.get(ENV_VAR) or "auto"
        source = ENV_VAR
    if backend not in BACKENDS:
        raise ValueError(f"{source}={backend!r} is not a scan backend; expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if device is not None and device.type == "cuda":
        from . import scan_cuda

        from . import triton_util

        if scan_cuda.available():
            return "cuda"
        if triton_util.available():
            return "triton"
        _warn_once("auto-cuda", f"neither mamba_ssm ({scan_cuda.import_error()}) nor triton "
                   f"({triton_util.import_error()}) is importable; falling back to the pure-PyTorch scan on CUDA")
        return "torch"
    from . import scan_cpp

    if scan_cpp.available():
        return "cpp"
    _warn_once("auto-cpp", f"the C++ scan kernel could not be built ({scan_cpp.build_error()}); "
               "falling back to the pure-PyTorch 'torch' scan backend")
    return "torch"


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None, delta_softplus: bool = True,
                   backend: Optional[str] = None, reverse: bool = False) -> Tensor:
    """Selective scan, dispatched to ``backend`` (see module docstring). Returns (B, E, L).

    reverse=True runs the recurrence from the last time step to the first, i.e. it equals
    ``selective_scan(flip(u), flip(delta), ..., flip(z)).flip(-1)`` with every time axis flipped
    (the backward branch of a bidirectional mixer). The ``cpp`` and ``triton`` backends do it in
    their kernels; the others flip around the call. Under torch.compile / torch.export the call
    goes through the custom op ``torch.ops.dyvm.selective_scan`` (same dispatch, made opaque to
    the tracer).
    """
    if routed_as_custom_op() or tracing():
        return torch.ops.dyvm.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend,
                                             is_channels_last(u))
    return _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, reverse)


def _dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, reverse) -> Tensor:
    """The eager dispatch of :func:`selective_scan` (also what the custom op runs)."""
    name = resolve_backend(backend, u.device)
    impl = _IMPLS[name]()
    if getattr(impl, "native_dtypes", False):  # reads any float dtype itself, output in u's dtype
        args = (u, delta, A, B, C, D, z, delta_bias)
        if not reverse:
            return impl(*args, delta_softplus)
        if name in _REVERSE_NATIVE:
            return impl(*args, delta_softplus, reverse=True)
        return _flipped(impl, *args, delta_softplus)
    out_dtype = u.dtype
    state_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    args = [t if t is None else t.to(state_dtype) for t in (u, delta, A, B, C, D, z, delta_bias)]
    if not reverse:
        out = impl(*args, delta_softplus)
    elif name in _REVERSE_NATIVE:
        out = impl(*args, delta_softplus, reverse=True)
    else:
        out = _flipped(impl, *args, delta_softplus)
    return out.to(out_dtype)


def _flipped(impl: Callable, u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> Tensor:
    """``impl`` on time-reversed inputs, its output flipped back (reverse scan for any backend)."""
    f = lambda t: None if t is None else t.flip(-1)  # noqa: E731
    return impl(f(u), f(delta), A, f(B), f(C), D, f(z), delta_bias, delta_softplus).flip(-1)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=True) -> Tensor:
    """The recurrence exactly as written, one time step at a time (slow; the oracle)."""
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, channels, length = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A)                          # (B, E, N)
        drive = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]   # (B, E, N)
        h = decay * h + drive
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[None, :, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def _reference():
    return selective_scan_reference


def _torch():
    from .scan_torch import selective_scan_torch

    return selective_scan_torch


def _cpp():
    from . import scan_cpp

    if not scan_cpp.available():
        raise RuntimeError(f"scan backend 'cpp' is unavailable: {scan_cpp.build_error()}")
    return scan_cpp.selective_scan_cpp


def _cuda():
    from . import scan_cuda

    if not scan_cuda.available():
        raise RuntimeError("scan backend 'cuda' needs the optional mamba_ssm package "
                           f"(pip install 'dyvm[cuda]') and a CUDA device: {scan_cuda.import_error()}")
    return scan_cuda.selective_scan_cuda


def _triton():
    from . import triton_util

    triton_util.require("scan backend 'triton'")
    from .scan_triton import selective_scan_triton

    return selective_scan_triton


_IMPLS: dict[str, Callable] = {"reference": _reference, "torch": _torch, "cpp": _cpp, "cuda": _cuda,
                               "triton": _triton}
# backends whose implementation takes ``reverse=True`` itself (the others get flipped inputs)
_REVERSE_NATIVE = {"cpp", "triton"}


# ------------------------------------------------------------------ custom op
# ``dyvm::selective_scan`` runs the eager dispatch above as one opaque op: torch.compile and
# torch.export trace it through its fake implementation (and its backward op), and
# FlopCounterMode counts it with the formula below (no generic counter sees the recurrence).
# Eager calls go through it only under ``scan_as_custom_op()`` (FLOP counting, forward only).
_AS_CUSTOM_OP = [False]

SCAN_MACS_PER_STEP = 9  # per (channel, state) and time step; + 2 per (channel, step): D skip, z gate


def scan_macs(batch: int, channels: int, length: int, d_state: int) -> int:
    """Multiply-accumulates of one selective scan (the Mamba convention: 9·L·E·N + 2·L·E)."""
    return batch * (SCAN_MACS_PER_STEP * length * channels * d_state + 2 * length * channels)


@torch.library.custom_op("dyvm::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                       reverse: bool = False, backend: Optional[str] = None, channels_last: bool = False) -> Tensor:
    """:func:`selective_scan` as an op; the output is (B, E, L), channel-last memory iff ``channels_last``."""
    return to_layout(_dispatch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, reverse), channels_last)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse=False, backend=None, channels_last=False):
    return empty_in_layout(u, channels_last)


@torch.library.custom_op("dyvm::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(grad: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                                delta_softplus: bool, reverse: bool, backend: Optional[str],
                                needs_grad: list[bool]) -> list[Tensor]:
    """Gradients of (u, delta, A, B, C, D, z, delta_bias), each contiguous; (0,) where none is needed."""
    def scan(*tensors):
        return _dispatch(*tensors, delta_softplus, backend, reverse)

    return recompute_grads(scan, (u, delta, A, B, C, D, z, delta_bias), needs_grad, grad.contiguous())


@_selective_scan_backward_op.register_fake
def _(grad, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, needs_grad):
    return fake_grads((u, delta, A, B, C, D, z, delta_bias), needs_grad, grad)


def _scan_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:8])
    ctx.flags = inputs[8:11]  # delta_softplus, reverse, backend


def _scan_backward(ctx, grad):
    inputs = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:8]]
    grads = torch.ops.dyvm.selective_scan_backward(grad, *inputs, *ctx.flags, needs)
    return (*grads_or_none(grads, inputs, needs), None, None, None, None)


_selective_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup_context)


def _register_flop_formula() -> None:
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.dyvm.selective_scan)
    def _scan_flops(u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
        batch, channels, length = u_shape
        return 2 * scan_macs(batch, channels, length, A_shape[1])  # FLOPs = 2 × MACs, as for mm


_register_flop_formula()


def routed_as_custom_op() -> bool:
    """Whether scans go through the custom op now (inside :class:`scan_as_custom_op`): then no other path may
    call the kernels directly (the conv and the fused training node step aside)."""
    return _AS_CUSTOM_OP[0]


class scan_as_custom_op:
    """Context manager: route every selective scan through ``torch.ops.dyvm.selective_scan``."""

    def __enter__(self):
        self._prev = _AS_CUSTOM_OP[0]
        _AS_CUSTOM_OP[0] = True
        return self

    def __exit__(self, *exc):
        _AS_CUSTOM_OP[0] = self._prev
