"""Shared plumbing of the Triton kernels: availability, launching on CUDA or the interpreter.

Triton kernels compile for GPUs only. With ``TRITON_INTERPRET=1`` set before triton is
imported, ``triton.jit`` returns interpreted kernels (numpy, one program instance after the
other) that also take CPU tensors: far too slow for real use, but it runs the very same kernel
code, which is how the test suite checks the kernels without a GPU (in a subprocess, see
``tests/test_triton.py``). Triton decides this per process, at import (its standard library
is made of ``@triton.jit`` functions), so CPU tensors without the interpreter are an error.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch


@lru_cache(maxsize=None)
def _import() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising at import
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def available() -> bool:
    """Whether ``triton`` imports (kernels then run on CUDA, or interpreted on CPU)."""
    return _import()[0]


def import_error() -> str:
    return _import()[1]


def require(what: str) -> None:
    if not available():
        raise RuntimeError(f"{what} needs the triton package (installed with CUDA builds of torch): "
                           f"{import_error()}")


def interpreted(kernel) -> bool:
    """Whether ``kernel`` (a ``@triton.jit`` function) runs in Triton's interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def launch(kernel, grid: tuple, device: torch.device, *args, num_warps: Optional[int] = None, **meta) -> None:
    """``kernel[grid](*args, **meta)`` on ``device`` (CUDA, or any device when interpreted)."""
    if interpreted(kernel):
        kernel[grid](*args, **meta)
        return
    if device.type != "cuda":
        raise RuntimeError(f"the Triton kernels need CUDA tensors (got {device}); to run them on CPU in "
                           "Triton's interpreter, set TRITON_INTERPRET=1 before triton is first imported")
    with torch.cuda.device(device):
        kernel[grid](*args, num_warps=num_warps, **meta) if num_warps else kernel[grid](*args, **meta)


def acc_dtype(*tensors):
    """The kernels' arithmetic dtype: float64 when any input is float64, else float32."""
    import triton.language as tl

    return tl.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else tl.float32


def bel_strides(t: Optional[torch.Tensor]) -> tuple[int, int, int]:
    """Strides of a (B, E, L) tensor (zeros for an absent one)."""
    return (0, 0, 0) if t is None else tuple(t.stride())
