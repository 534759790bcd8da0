"""A block, the bidirectional mixer after ``in_proj``, or a DyVM pruning stage, in one call of the compiled
extension (inference).

``torch.ops.dyvm_scan.mix_forward`` runs, per direction, the causal conv + SiLU, ``x_proj``,
``dt_proj``, ``A = -exp(A_log)`` and the selective scan, then adds the two directions and applies
``out_proj``: the same ATen calls and kernels as the Python mixer, in the same order (identical
float32 results), without returning to Python between them; ``block_forward`` runs the block's
residual add, RMSNorm and ``in_proj`` first (and the DyVM router, when given, reads ``in_proj``'s
output before the branches run). At batch 1 the Python glue of a
layer (about 60 small calls, ~0.25 ms on a 2 GHz core) costs more than the compute of a small
model's layer. It serves eager CPU inference only, with float32 weights (under CPU autocast the ATen
matmuls inside run in 16 bits exactly as the Python ones would, and the scan reads the same float32
copies): no autograd, no mask, nothing traced or counted (see :func:`applies`). ``prune_stage`` does the
same for a pruning stage: the token predictor, the top-k and the rebuilt sequence.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import scan_cpp
from .conv import _backend as conv_backend
from .conv import _kernels_allowed
from .custom_ops import tracing
from .scan import resolve_backend


# benchmarks only (``dyvm bench``'s matmul floor): when set, the scan returns its input u
STUB_SCAN = [False]


def applies(x: Tensor, params: Sequence[Tensor], scan_backend: Optional[str]) -> bool:
    """Whether :func:`mix_forward` / :func:`block_forward` compute what the Python code would for ``x``
    (B, L, ·) and ``params`` (every other tensor they read)."""
    autocast = torch.is_autocast_enabled("cpu")
    if x.device.type != "cpu" or x.dim() != 3 or not (x.dtype == torch.float32 or (
            autocast and x.dtype in (torch.bfloat16, torch.float16))):
        return False
    if any(p.dtype != torch.float32 for p in params):  # float32 weights and residual stream
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return False
    if tracing() or not _kernels_allowed():
        return False
    if conv_backend() not in ("auto", "cpp"):
        return False
    return resolve_backend(scan_backend, x.device) == "cpp" and scan_cpp.available()


def mix_forward(xz: Tensor, forward_params: list[Tensor], backward_params: list[Tensor], out_weight: Tensor,
                out_scale: float, gates: Optional[Tensor] = None, router: Sequence[Tensor] = (),
                router_threshold: float = 0.5) -> list[Tensor]:
    """xz (B, L, 2E) → [(B, L, D)], or with a router [output, router logits (B, 2), gates (B, 2)].

    params per direction: conv weight, conv bias, x_proj weight, dt_proj weight, dt_proj bias, A_log, D.
    gates (B, 2) 0/1 [forward, backward] or None (both on): a direction runs on the images whose gate is on
    (the whole batch, a sub-batch, or not at all) and contributes 0 elsewhere. router: [block_head weight,
    block_head bias, prefix positions (P,) int64]: the gates are then sigmoid(block_head(mean of xz at the
    positions)) > router_threshold (give gates or a router, not both)."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.mix_forward(xz, forward_params, backward_params, out_weight, out_scale, gates,
                                           list(router), router_threshold, STUB_SCAN[0])


def block_forward(hidden: Tensor, residual: Optional[Tensor], norm_weight: Tensor, eps: float, in_weight: Tensor,
                  forward_params: list[Tensor], backward_params: list[Tensor], out_weight: Tensor, out_scale: float,
                  gates: Optional[Tensor] = None, router: Sequence[Tensor] = (),
                  router_threshold: float = 0.5) -> list[Tensor]:
    """A whole block: residual' = residual + hidden (hidden at layer 0: residual None), xz = in_proj(RMSNorm
    (residual')), then :func:`mix_forward`'s mixer on xz. hidden, residual (B, L, D) float32 → [output (B, L, D),
    residual'] (+ [router logits, gates] with a router)."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.block_forward(hidden, residual, norm_weight, eps, in_weight, forward_params,
                                             backward_params, out_weight, out_scale, gates, list(router),
                                             router_threshold, STUB_SCAN[0])


def prune_stage(hidden: Tensor, residual: Tensor, patch_ids: Tensor, predictor: list[Tensor], ln_eps: float,
                keep: int, prefix: Sequence[int], new_prefix: Sequence[int]) -> list[Tensor]:
    """A DyVM pruning stage at inference, every image with its prefix tokens at ``prefix``: the token predictor on
    the patch tokens of hidden + residual, the ``keep`` best per image (ascending) and the new sequence with the
    prefix tokens at ``new_prefix``. hidden, residual (B, L, D), patch_ids (B, L−P) int64; predictor: [LayerNorm
    weight, bias, then (weight, bias) of its four Linears, optional slot bias] → [hidden' (B, keep+P, D), residual',
    patch_ids' (B, keep), kept patch slots (B, keep), keep log-probabilities (B, L−P, 2)]."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.prune_stage(hidden, residual, patch_ids, predictor, ln_eps, keep, list(prefix),
                                           list(new_prefix))
