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
same for a pruning stage: the token predictor, the top-k and the rebuilt sequence; ``stack_forward`` runs every
block and stage of a model in one call (the checks once per forward instead of once per layer: in the middle of
a forward the Python between two layers costs far more than in a warm loop, ~12% of the demo model's batch-1 time),
and ``forward_logits`` a classifier's whole eval forward, from the images to the head.
The router's head (:func:`router_forward`) and the token predictor (:func:`predictor_forward`) are plain loops
rather than ATen calls (at batch 1 their ~25 small calls cost more than their arithmetic); the Python router and
predictor call the same functions at inference (as the ops ``dyvm::router`` / ``dyvm::token_predictor`` in traced
programs), so every path scores and routes with identical values. Where ``in_proj`` and ``out_proj`` are large
(Vim-T and up), both the blocks and the Python mixer run them on oneDNN with the weights packed once
(:func:`pack_weight`, :func:`linear`; 0.5-0.9x sgemm's time on the AMD AVX-512 kind); ``x_proj`` and ``dt_proj``,
and ``in_proj`` / ``out_proj`` where they are small, run on weight panels laid out once (:func:`weight_panel`,
:func:`panel_linear`: register tiles that sum each output in input order, so a row's values do not depend on the
batch or the threads). Again the same route and values on every path.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from . import scan_cpp
from .conv import _backend as conv_backend
from .conv import _kernels_allowed
from .custom_ops import tracing
from .scan import resolve_backend


# benchmarks only (``dyvm bench``'s matmul floor): when set, the scan returns its input u
STUB_SCAN = [False]


def _global_forward_hooks() -> bool:
    return bool(nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


def forward_hooked(*modules: Optional[nn.Module]) -> bool:
    """Whether a forward (pre-)hook, global or on one of ``modules``, would see their calls: the fused
    inference path calls none of them, so it steps aside and the Python path runs (and the hooks fire)."""
    return _global_forward_hooks() or any(m is not None and (m._forward_hooks or m._forward_pre_hooks)
                                          for m in modules)


def tree_hooked(*roots: nn.Module) -> bool:
    """:func:`forward_hooked` over ``roots`` and every module below them: a plain walk of the children, 1.4-1.6x
    faster than ``nn.Module.modules()``'s named, de-duplicated one (it runs on every eager inference call)."""
    if _global_forward_hooks():
        return True
    stack = list(roots)
    while stack:
        m = stack.pop()
        if m is None:  # an unset child slot
            continue
        if m._forward_hooks or m._forward_pre_hooks:
            return True
        stack.extend(m._modules.values())
    return False


def applies(x: Tensor, params: Sequence[Tensor], scan_backend: Optional[str]) -> bool:
    """Whether :func:`mix_forward` / :func:`block_forward` compute what the Python code would for ``x``
    (B, L, ·) and ``params`` (every other tensor they read)."""
    autocast = torch.is_autocast_enabled("cpu")
    if x.device.type != "cpu" or x.dim() != 3 or not (x.dtype == torch.float32 or (
            autocast and x.dtype in (torch.bfloat16, torch.float16))):
        return False
    f32 = torch.float32
    for p in params:  # float32 weights and residual stream (one plain loop: it runs on every eager inference call)
        if p.dtype != f32:
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
                router_threshold: float = 0.5, out_packed: Optional[Tensor] = None,
                panels: Sequence[Tensor] = ()) -> list[Tensor]:
    """xz (B, L, 2E) → [(B, L, D)], or with a router [output, router logits (B, 2), gates (B, 2)].

    params per direction: conv weight, conv bias, x_proj weight, dt_proj weight, dt_proj bias, A = -exp(A_log), D.
    gates (B, 2) 0/1 [forward, backward] or None (both on): a direction runs on the images whose gate is on
    (the whole batch, a sub-batch, or not at all) and contributes 0 elsewhere. router: [block_head weight,
    block_head bias, prefix positions (P,) int64]: the gates are then sigmoid(block_head(mean of xz at the
    positions)) > router_threshold (give gates or a router, not both). out_packed: out_proj's weight packed by
    :func:`pack_weight` (``out_proj`` then runs as :func:`linear` does); panels: empty, or the x_proj and dt_proj
    panels (:func:`weight_panel`) of the forward then the backward branch (they then run as :func:`panel_linear`),
    optionally followed by in_proj's and out_proj's (an empty tensor: none; used as :func:`linear` uses them)."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.mix_forward(xz, forward_params, backward_params, out_weight, out_scale, gates,
                                           list(router), router_threshold, STUB_SCAN[0], out_packed, list(panels))


def block_forward(hidden: Tensor, residual: Optional[Tensor], norm_weight: Tensor, eps: float, in_weight: Tensor,
                  forward_params: list[Tensor], backward_params: list[Tensor], out_weight: Tensor, out_scale: float,
                  gates: Optional[Tensor] = None, router: Sequence[Tensor] = (),
                  router_threshold: float = 0.5, in_packed: Optional[Tensor] = None,
                  out_packed: Optional[Tensor] = None, panels: Sequence[Tensor] = ()) -> list[Tensor]:
    """A whole block: residual' = residual + hidden (hidden at layer 0: residual None), xz = in_proj(RMSNorm
    (residual')), then :func:`mix_forward`'s mixer on xz. hidden, residual (B, L, D) float32 → [output (B, L, D),
    residual'] (+ [router logits, gates] with a router)."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.block_forward(hidden, residual, norm_weight, eps, in_weight, forward_params,
                                             backward_params, out_weight, out_scale, gates, list(router),
                                             router_threshold, STUB_SCAN[0], in_packed, out_packed, list(panels))


def _loops_ready() -> bool:
    """Whether the extension's predictor and router loops may run now: while a program is traced, a plain read of
    whether the extension is loaded (dynamo would break its graph in the loader; eager calls loaded it), else
    loaded or buildable and not refused (FLOP counting)."""
    if tracing():
        return scan_cpp.loaded()
    return _kernels_allowed() and scan_cpp.available()


def predictor_applies(x: Tensor, params: Sequence[Tensor]) -> bool:
    """Whether :func:`predictor_forward` serves a token predictor at inference: x (B, N, D) float32 on the CPU,
    contiguous float32 parameters, no autograd, the extension built and allowed (traced programs call it as the
    op ``dyvm::token_predictor``, so compiled and exported models score tokens as eager ones do)."""
    if x.device.type != "cpu" or x.dim() != 3 or x.dtype != torch.float32:
        return False
    if any(p.dtype != torch.float32 or p.device.type != "cpu" or not p.is_contiguous() for p in params):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return False
    return _loops_ready()


def predictor_forward(x: Tensor, predictor: list[Tensor], ln_eps: float) -> Tensor:
    """A DyVM token predictor at inference, every token live: x (B, N, D) float32 → keep / drop log-probabilities
    (B, N, 2), the values :func:`prune_stage` computes (plain loops in the extension: LayerNorm, the four Linears,
    GELU with oneDNN's erf approximation, the pooled half, log-softmax or the slot prior). predictor: as for
    :func:`prune_stage`."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.predictor_forward(x, predictor, ln_eps)


@torch.library.custom_op("dyvm::token_predictor", mutates_args=())
def _token_predictor_op(x: Tensor, predictor: list[Tensor], ln_eps: float) -> Tensor:
    """:func:`predictor_forward` as an op, for ``torch.compile`` and ``torch.export`` (forward only)."""
    return predictor_forward(x, predictor, ln_eps)


@_token_predictor_op.register_fake
def _(x, predictor, ln_eps):
    return x.new_empty((x.shape[0], x.shape[1], 2))


def token_predictor(x: Tensor, predictor: list[Tensor], ln_eps: float) -> Tensor:
    """:func:`predictor_forward`, through the op ``dyvm::token_predictor`` where a program is being traced."""
    return (_token_predictor_op if tracing() else predictor_forward)(x, predictor, ln_eps)


def router_applies(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
    """Whether :func:`router_forward` serves a DyVM router's head at inference: x (B, C) on the CPU (float32, or
    16-bit under autocast), a contiguous float32 head with a bias, no autograd, the extension built and allowed."""
    if x.device.type != "cpu" or x.dim() != 2 or not x.is_floating_point() or x.dtype == torch.float64 or bias is None:
        return False
    if any(p.dtype != torch.float32 or p.device.type != "cpu" or not p.is_contiguous() for p in (weight, bias)):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return False
    return _loops_ready()


def router_forward(x: Tensor, weight: Tensor, bias: Tensor, threshold: float) -> list[Tensor]:
    """A DyVM router's head at inference: x (B, C) → [logits (B, 2) float32 = x · weight^T + bias, gates (B, 2) 0/1
    = sigmoid(logits) > threshold], in plain loops, the values the extension's blocks compute."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.router_forward(x, weight, bias, threshold)


@torch.library.custom_op("dyvm::router", mutates_args=())
def _router_op(x: Tensor, weight: Tensor, bias: Tensor, threshold: float) -> list[Tensor]:
    """:func:`router_forward` as an op, for ``torch.compile`` and ``torch.export`` (forward only)."""
    return router_forward(x, weight, bias, threshold)


@_router_op.register_fake
def _(x, weight, bias, threshold):
    return [x.new_empty((x.shape[0], 2), dtype=torch.float32), x.new_empty((x.shape[0], 2), dtype=torch.float32)]


def router(x: Tensor, weight: Tensor, bias: Tensor, threshold: float) -> list[Tensor]:
    """:func:`router_forward`, through the op ``dyvm::router`` where a program is being traced."""
    return (_router_op if tracing() else router_forward)(x, weight, bias, threshold)


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


def stack_forward(hidden: Tensor, residual: Optional[Tensor], patch_ids: Tensor, layers: list[Tensor],
                  eps: Sequence[float], out_scale: float, routed: bool, router_threshold: float,
                  positions: Sequence[Sequence[int]], stages: Sequence[tuple[int, int, list[Tensor], float]] = (),
                  packed: Sequence[Tensor] = (), panels: Sequence[Tensor] = ()) -> list[Tensor]:
    """Every block of the model (:func:`block_forward` per layer) and the DyVM pruning stages (:func:`prune_stage`
    before the layers they name) in one call, every image with its prefix tokens at the same positions.

    layers: per layer [RMSNorm weight, in_proj weight, forward branch (7), backward branch (7), out_proj weight]
    (+ [block_head weight, bias] when ``routed``); eps: per layer; positions: the prefix positions at the start and
    after each stage; stages: (layer, keep, predictor tensors, LayerNorm eps); packed: empty, or per layer in_proj's
    and out_proj's weights packed by :func:`pack_weight`; panels: empty, or per layer those of
    :func:`mix_forward` (4 or 6, the same count for every layer) → [output (B, L', D), residual,
    patch_ids, per stage (patch_ids', kept slots, log-probabilities), with routers their logits and gates
    (depth, B, 2)]."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.stack_forward(hidden, residual, patch_ids, *_stack_lists(
        layers, eps, out_scale, routed, router_threshold, positions, stages, packed, panels))


def _stack_lists(layers, eps, out_scale, routed, router_threshold, positions, stages, packed, panels) -> tuple:
    """The extension's flat form of :func:`stack_forward`'s arguments after ``patch_ids``, shared with
    :func:`forward_logits`: the per-stage tuples split into lists, the segments' positions joined."""
    return (layers, [float(e) for e in eps], out_scale, routed, router_threshold,
            [p for segment in positions for p in segment], [s[0] for s in stages], [s[1] for s in stages],
            [t for s in stages for t in s[2]], [len(s[2]) for s in stages], [float(s[3]) for s in stages],
            STUB_SCAN[0], list(packed), list(panels))


def forward_logits(images: Tensor, patch_weight: Tensor, patch_bias: Tensor, patch: int, stride: int, narrow: bool,
                   prefix_tokens: Tensor, pos_embed: Tensor, layers: list[Tensor], eps: Sequence[float],
                   out_scale: float, routed: bool, router_threshold: float, positions: Sequence[Sequence[int]],
                   stages: Sequence[tuple[int, int, list[Tensor], float]], packed: Sequence[Tensor],
                   panels: Sequence[Tensor], norm_weight: Tensor, norm_eps: float, head_weight: Tensor,
                   head_bias: Tensor) -> list[Tensor]:
    """A classifier's whole eval forward in one call: images (B, C, H, W) float32 → [logits (B, classes), the
    images' sum]. The patch embedding (``narrow``: patches of at most 64 values as one matmul, else the strided
    convolution), ``prefix_tokens`` (P, D) at ``positions[0]`` and ``pos_embed``, :func:`stack_forward` with the
    other arguments, then RMSNorm (``norm_weight``) of residual + hidden at the first prefix token of the last
    segment and the head. Where the sum is not finite (a NaN or an infinity in the images) nothing else runs and the
    logits are empty. ``STUB_SCAN`` applies as in :func:`stack_forward`."""
    return torch.ops.dyvm_scan.forward_logits(
        images, patch_weight, patch_bias, patch, stride, narrow, prefix_tokens, pos_embed,
        *_stack_lists(layers, eps, out_scale, routed, router_threshold, positions, stages, packed, panels),
        norm_weight, norm_eps, head_weight, head_bias)


def pack_weight(weight: Tensor, dtype: torch.dtype = torch.float32) -> Optional[Tensor]:
    """A Linear's float32 CPU weight (out, in) in oneDNN's packed layout, in ``dtype`` (float32, or bfloat16 for the
    blocks under bf16 autocast, whose matmuls then skip autocast's weight cast and give its values), for
    :func:`linear` and the blocks' ``in_proj`` / ``out_proj`` (None where torch has no oneDNN or the weight is not
    a float32 CPU tensor)."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype))


def _cpu_float32_inference(x: Tensor, weight: Tensor) -> bool:
    """x and weight float32 CPU tensors, and no gradient wanted from either."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def norm_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`rms_norm` serves an RMSNorm of ``x`` now: CPU inference with a float32 input and weight (under
    autocast too: RMSNorm runs in float32 either way), no autograd, the extension built and allowed (traced
    programs call it as the op ``dyvm::rms_norm``, so compiled and exported models normalise as eager ones do)."""
    return _cpu_float32_inference(x, weight) and _loops_ready()


def panel_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether ``x_proj`` and ``dt_proj`` run as :func:`panel_linear`, and ``in_proj`` and ``out_proj`` as
    :func:`linear`, now: eager CPU inference on a float32 input (under CPU autocast too: panels keep their products
    in float32, the packs are in autocast's dtype; see ``BiMambaMixer.all_panels``), nothing traced or counted, the
    extension built and allowed."""
    return _cpu_float32_inference(x, weight) and not tracing() and _loops_ready()


def add_rms_norm(hidden: Tensor, residual: Optional[Tensor], weight: Tensor, eps: float) -> list[Tensor]:
    """[RMSNorm(res) (..., D) float32, res] with res = residual + hidden (hidden alone where residual is None), in
    one pass per row: the values of the extension's blocks, within float rounding of ATen's RMSNorm."""
    if not scan_cpp.available():
        raise RuntimeError(f"the C++ kernels are unavailable: {scan_cpp.build_error()}")
    return torch.ops.dyvm_scan.add_rms_norm(hidden, residual, weight, eps)


@torch.library.custom_op("dyvm::rms_norm", mutates_args=())
def _rms_norm_op(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """:func:`add_rms_norm` without a residual, as an op, for ``torch.compile`` and ``torch.export`` (forward only)."""
    return add_rms_norm(x, None, weight, eps)[0]


@_rms_norm_op.register_fake
def _(x, weight, eps):
    return torch.empty_like(x, dtype=torch.float32)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm of x (..., D) by :func:`add_rms_norm`, through the op ``dyvm::rms_norm`` where a program is traced."""
    return _rms_norm_op(x, weight, eps) if tracing() else add_rms_norm(x, None, weight, eps)[0]


def linear(x: Tensor, weight: Tensor, packed: Optional[Tensor], panel: Optional[Tensor] = None) -> Tensor:
    """x (..., in) · weight (out, in)^T at inference: oneDNN on ``packed`` (:func:`pack_weight`) where the extension's
    rule says it pays (``in_proj`` / ``out_proj`` of Vim-T and up), else on ``panel`` (:func:`weight_panel`, given
    for small weights) from 2 rows, else ``F.linear``: the route and the values of the extension's blocks for the
    same shapes."""
    return torch.ops.dyvm_scan.linear(x, weight, packed, panel)


def weight_panel(weight: Tensor) -> Tensor:
    """A float32 CPU weight (out, in) laid out for :func:`panel_linear`: (in, out rounded up to 16), zero-padded."""
    return torch.ops.dyvm_scan.panel(weight.detach())


def panel_linear(x: Tensor, panel: Tensor, out_features: int) -> Tensor:
    """x (..., in) float32 · weight (out, in)^T at inference, from the weight's :func:`weight_panel`: register tiles
    summing each output's products in input order (values independent of tiling and threads). ``x_proj`` and
    ``dt_proj`` take this route at eager float32 inference, in the extension's blocks and in the Python mixer alike
    (MKL's sgemm ran these narrow matmuls at 0.3-0.6x the core's rate)."""
    return torch.ops.dyvm_scan.panel_linear(x, panel, out_features)
