"""Depthwise causal conv1d (Mamba's short convolution), with optional bias and SiLU.

Backends (``$DYVM_CONV_BACKEND``, read at call time):

- ``auto`` (default, also when unset): on CPU float32/float64 tensors of one dtype, the
  compiled kernel of the scan extension (``conv_cpp``) when it builds; on CUDA the
  ``causal_conv1d`` package's kernel when it imports, else the Triton kernels
  (``conv_triton``) when triton imports; else ``F.conv1d`` + ``F.silu``.
- ``cpp``: like ``auto``, but raise if the compiled extension is unavailable.
- ``triton``: the Triton kernels on any tensors (CPU ones only under ``TRITON_INTERPRET=1``).
- ``torch``: always ``F.conv1d`` + ``F.silu`` (the reference; for A/B tests).

The compiled and Triton kernels are skipped under a ``TorchDispatchMode`` (e.g.
``FlopCounterMode``, which counts ``F.conv1d`` but knows nothing of the kernels). Under
``torch.compile`` / ``torch.export`` the call goes through the custom op
``torch.ops.dyvm.causal_conv1d``, whose implementation is this same dispatch.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .custom_ops import empty_in_layout, fake_grads, grads_or_none, recompute_grads, to_layout, tracing

ENV_VAR = "DYVM_CONV_BACKEND"
BACKENDS = ("auto", "cpp", "torch", "triton")


def _backend() -> str:
    name = os.environ.get(ENV_VAR) or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={name!r} is not a conv backend; expected one of {', '.join(BACKENDS)}")
    return name


def _kernels_allowed() -> bool:
    """False while FLOPs are counted (custom op, dispatch mode)."""
    from .scan import routed_as_custom_op

    return not (routed_as_custom_op() or torch._C._len_torch_dispatch_stack() > 0)


def _use_cpp(x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str, mask: Optional[Tensor] = None) -> bool:
    if backend in ("torch", "triton") or x.device.type != "cpu":
        return False
    from . import conv_cpp, scan_cpp

    if not conv_cpp.supports(x, weight, bias, mask):
        return False
    if not _kernels_allowed():
        return False
    if not scan_cpp.available():
        if backend == "cpp":
            raise RuntimeError(f"{ENV_VAR}=cpp but the C++ kernels are unavailable: {scan_cpp.build_error()}")
        return False
    return True


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, silu: bool = True,
                  mask: Optional[Tensor] = None, reverse: bool = False, channels_last: bool = False) -> Tensor:
    """x: (B, E, L), weight: (E, 1, K) or (E, K), bias: (E,). Left zero-padding K-1. Returns (B, E, L).

    mask: optional (B, L) 0/1 token mask, applied to the input and to the output
    (``m * act(conv(m * x))``: the bias would make masked slots non-zero), differentiable in m.
    reverse: the conv runs over the time-reversed sequence (``conv(x.flip(-1)).flip(-1)``:
    anti-causal), as the backward branch of a bidirectional mixer needs. channels_last: a layout
    hint, the compiled kernel then returns (B, L, E) memory viewed as (B, E, L).
    On CPU the compiled kernel is used where it applies (mask and reverse done in the kernel),
    on CUDA the ``causal_conv1d`` package's kernel when it imports (mask and reverse around the
    call), else the Triton one (same arithmetic; reverse in the kernels, mask around the call); see
    the module docstring.
    """
    if mask is not None:
        mask = mask.to(x.dtype)
    if tracing():
        return torch.ops.dyvm.causal_conv1d(x, weight, bias, silu, mask, reverse, channels_last)
    return _dispatch(x, weight, bias, silu, mask, reverse, channels_last)


def _dispatch(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool, mask: Optional[Tensor], reverse: bool,
              channels_last: bool) -> Tensor:
    """The eager dispatch of :func:`causal_conv1d` (also what the custom op runs); mask in x's dtype."""
    backend = _backend()
    if _use_cpp(x, weight, bias, backend, mask):
        from .conv_cpp import causal_conv1d_cpp

        return causal_conv1d_cpp(x, weight, bias, silu, mask, reverse, channels_last)
    m = None if mask is None else mask[:, None, :]
    if m is not None:
        x = x * m
    out = _causal_conv1d_plain(x, weight, bias, silu, backend, reverse)
    return out if m is None else out * m


def _causal_conv1d_plain(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool, backend: str,
                         reverse: bool = False) -> Tensor:
    """The conv with no mask; ``reverse``: the Triton kernels run it anti-causally themselves, the other
    paths on flipped copies."""
    from . import triton_util
    from .scan_cuda import causal_conv1d_cuda

    fast = causal_conv1d_cuda() if x.is_cuda and backend in ("auto", "cpp") else None
    if backend == "triton" or (backend == "auto" and x.is_cuda and fast is None and triton_util.available()):
        if _kernels_allowed():
            triton_util.require(f"{ENV_VAR}=triton")
            from .conv_triton import causal_conv1d_triton

            return causal_conv1d_triton(x, weight, bias, silu, reverse=reverse)
    if reverse:
        return _causal_conv1d_plain(x.flip(-1), weight, bias, silu, backend).flip(-1)
    if weight.dim() == 2:
        weight = weight.unsqueeze(1)
    if fast is not None:
        return fast(x.contiguous(), weight.squeeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                    activation="silu" if silu else None)
    length = x.shape[-1]
    out = F.conv1d(x, weight, bias, padding=weight.shape[-1] - 1, groups=x.shape[1])[..., :length]
    return F.silu(out) if silu else out


# ------------------------------------------------------------------ custom op (see custom_ops.py)
@torch.library.custom_op("dyvm::causal_conv1d", mutates_args=())
def _causal_conv1d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool, mask: Optional[Tensor],
                      reverse: bool, channels_last: bool) -> Tensor:
    """:func:`causal_conv1d` as an op; the output is (B, E, L), channel-last memory iff ``channels_last``."""
    return to_layout(_dispatch(x, weight, bias, silu, mask, reverse, channels_last), channels_last)


@_causal_conv1d_op.register_fake
def _(x, weight, bias, silu, mask, reverse, channels_last):
    return empty_in_layout(x, channels_last)


@torch.library.custom_op("dyvm::causal_conv1d_backward", mutates_args=())
def _causal_conv1d_backward_op(grad: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool,
                               mask: Optional[Tensor], reverse: bool, channels_last: bool,
                               needs_grad: list[bool]) -> list[Tensor]:
    """Gradients of (x, weight, bias, mask), each contiguous; (0,) where none is needed."""
    def conv(x, weight, bias, mask):
        return _dispatch(x, weight, bias, silu, mask, reverse, channels_last)

    return recompute_grads(conv, (x, weight, bias, mask), needs_grad, grad.contiguous())


@_causal_conv1d_backward_op.register_fake
def _(grad, x, weight, bias, silu, mask, reverse, channels_last, needs_grad):
    return fake_grads((x, weight, bias, mask), needs_grad, grad)


def _conv_setup_context(ctx, inputs, output) -> None:
    x, weight, bias, silu, mask, reverse, channels_last = inputs
    ctx.save_for_backward(x, weight, bias, mask)
    ctx.flags = (silu, reverse, channels_last)


def _conv_backward(ctx, grad):
    x, weight, bias, mask = inputs = ctx.saved_tensors
    needs = [bool(ctx.needs_input_grad[i]) for i in (0, 1, 2, 4)]
    silu, reverse, channels_last = ctx.flags
    grads = torch.ops.dyvm.causal_conv1d_backward(grad, x, weight, bias, silu, mask, reverse, channels_last, needs)
    dx, dw, db, dm = grads_or_none(grads, inputs, needs)
    return dx, dw, db, None, dm, None, None


_causal_conv1d_op.register_autograd(_conv_backward, setup_context=_conv_setup_context)
