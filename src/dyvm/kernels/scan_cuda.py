"""Thin adapters to the optional CUDA kernels of ``mamba_ssm`` and ``causal_conv1d``.

Both packages compute exactly the arithmetic of ``scan.selective_scan_reference`` and
``conv.causal_conv1d``; they are used only on CUDA tensors and only when they import.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Optional

import torch


@lru_cache(maxsize=None)
def _load_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # ImportError, or a CUDA library mismatch raised at import
        return None, f"{type(exc).__name__}: {exc}"
    return selective_scan_fn, ""


def available() -> bool:
    return torch.cuda.is_available() and _load_scan()[0] is not None


def import_error() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    return _load_scan()[1]


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True):
    """mamba_ssm's fused scan; inputs (B,E,L)/(E,N)/(B,N,L) as in ``scan.selective_scan``."""
    fn = _load_scan()[0]
    if not u.is_cuda:
        raise ValueError("scan backend 'cuda' needs CUDA tensors; got u on " + str(u.device))
    return fn(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
              D, None if z is None else z.contiguous(), delta_bias, delta_softplus)


@lru_cache(maxsize=None)
def causal_conv1d_cuda() -> Optional[Callable]:
    """``causal_conv1d_fn`` from the causal_conv1d package, or None when it does not import."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        return None
    return causal_conv1d_fn
