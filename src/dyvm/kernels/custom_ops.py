"""What the kernels' ``torch.library`` custom ops share (the ops live next to their kernels:
``dyvm::selective_scan`` in :mod:`.scan`, ``dyvm::causal_conv1d`` in :mod:`.conv`).

Eager calls never go through the ops (the dispatch is exactly the one of the plain functions);
under ``torch.compile`` / ``torch.export`` (:func:`tracing`) the kernels are reached through
them, so dynamo sees one opaque op with a fake (meta) implementation instead of tracing into a
C++ extension or a Triton launcher. Each op's implementation calls the plain function, so the
numerics are the eager ones. An op's output layout is an explicit argument (the fake and the
real output must agree on strides); its backward is a second op that recomputes the forward
with the backend's own autograd (C++, Triton or PyTorch backward) and returns the gradients.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor


def tracing() -> bool:
    """Whether dynamo (torch.compile) or torch.export is tracing the current call."""
    return torch.compiler.is_compiling()


def is_channels_last(t: Tensor) -> bool:
    """Whether (B, E, L) ``t`` is (B, L, E) memory viewed as (B, E, L) (the mixer's layout)."""
    return t.dim() == 3 and t.shape[1] > 1 and t.stride(1) == 1


def empty_in_layout(like: Tensor, channels_last: bool) -> Tensor:
    """An uninitialised (B, E, L) tensor like ``like``: contiguous, or channel-last memory."""
    if channels_last:
        b, e, length = like.shape
        return like.new_empty((b, length, e)).transpose(1, 2)
    return like.new_empty(like.shape)


def to_layout(t: Tensor, channels_last: bool) -> Tensor:
    """``t`` (B, E, L) in the layout the op's fake promised (a copy only when it is not)."""
    if channels_last:
        return t if is_channels_last(t) else t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous()


def _autograd_reenabled():
    """A guard re-enabling autograd inside an op's implementation (the dispatcher excludes the
    autograd keys below an op's autograd kernel; the backward op needs them to recompute)."""
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.AutogradFunctionality, keys.AutogradOther, keys.AutogradNestedTensor, keys.ADInplaceOrView):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def recompute_grads(fn: Callable[..., Tensor], inputs: Sequence[Optional[Tensor]], needs_grad: Sequence[bool],
                    grad: Tensor) -> list[Tensor]:
    """Gradients of ``fn(*inputs)`` w.r.t. each input for ``grad`` (contiguous), computed with the
    backends' own autograd; an input that is None or needs none gets an empty (0,) tensor."""
    with _autograd_reenabled(), torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_(need) for t, need in zip(inputs, needs_grad)]
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        found = iter(torch.autograd.grad(fn(*leaves), wanted, grad, allow_unused=True) if wanted else ())
    out = []
    for t in leaves:
        if t is None or not t.requires_grad:
            out.append(grad.new_empty(0))
        else:
            g = next(found)
            out.append(torch.zeros_like(t) if g is None else g.contiguous())
    return out


def fake_grads(inputs: Sequence[Optional[Tensor]], needs_grad: Sequence[bool], grad: Tensor) -> list[Tensor]:
    """The fake (meta) counterpart of :func:`recompute_grads`."""
    return [t.new_empty(t.shape) if t is not None and need else grad.new_empty(0)
            for t, need in zip(inputs, needs_grad)]


def grads_or_none(grads: Sequence[Tensor], inputs: Sequence[Optional[Tensor]], needs_grad: Sequence[bool]) -> list:
    """The backward op's tensors → what an autograd formula returns (None where no gradient)."""
    return [g if t is not None and need else None for g, t, need in zip(grads, inputs, needs_grad)]
