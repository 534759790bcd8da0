"""Vision Mamba (Vim), the official middle-class-token "bimamba v2" model.

Parameter names and shapes are those of the official checkpoints (hustvl/Vim), so an
official state dict loads with ``load_state_dict(sd, strict=True)``.

Sequence layout: M patch tokens in row-major order with the class token inserted at index
``M // 2``; ``pos_embed`` (1, M+1, D) is added after the insertion. Each of the ``depth``
blocks is Add → RMSNorm → Mixer with the residual stream kept in float32; the head reads the
class token after the final RMSNorm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from torch import Tensor, nn

from ..kernels import causal_conv1d, mix_cpp
from ..kernels.custom_ops import tracing
from ..kernels.mix_cpp import forward_hooked, tree_hooked
from ..kernels.mixer_ops import bidirectional_ssm, gated_sum, projection, split_xz, ssm_branch, ssm_inputs
from ..kernels.norm import RMSNorm, add_rms_norm_for_training
from ..kernels.scan_cpp import influence_terms
from ..weights import resize_pos_embed
from .config import ModelConfig
from .presets import IMAGENET_MEAN, IMAGENET_STD, build_model, data_config  # noqa: F401 (re-exported)
from .registry import register_model
from .remembered import InferenceCache, StackPlan, StackPlans
from .tokens import MiddleClassToken, PrefixLayout, TokenSequence


# in a block's panel list, the place of an in_proj / out_proj panel the layer does not use (lists hold no None)
_NO_PANEL = torch.empty(0)


def _decay_rates(a_log: Tensor) -> Tensor:
    """A = -exp(A_log) in float32, as the scan reads it."""
    return -torch.exp(a_log.float())


class BiMambaMixer(nn.Module):
    """One mixer with two independent SSM branches (forward and backward over the sequence).

    Shared: ``in_proj`` (D→2E, no bias) and ``out_proj`` (E→D, no bias). Per direction: a
    depthwise causal conv, ``x_proj`` (E→R+2N), ``dt_proj`` (R→E), ``A_log`` (E,N) and ``D`` (E);
    the backward branch's names carry a ``_b`` suffix. With ``router=True`` the DyVM
    ``block_head`` (2E→2) is added: it reads the class token's ``in_proj`` output and gates
    each branch per image.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Optional[int] = None, divide_out: bool = True, router: bool = False,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.divide_out = divide_out
        self.scan_backend: Optional[str] = None  # None: argument-less dispatch (env var / auto)
        self._inference_cache = InferenceCache()  # see _derived
        E, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        for suffix in ("", "_b"):
            self.add_module("conv1d" + suffix, nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1))
            self.add_module("x_proj" + suffix, nn.Linear(E, R + 2 * N, bias=False))
            dt_proj = nn.Linear(R, E, bias=True)
            nn.init.uniform_(dt_proj.weight, -R ** -0.5, R ** -0.5)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            with torch.no_grad():  # inverse softplus, so that softplus(bias) = dt
                dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            dt_proj.bias._no_reinit = True
            self.add_module("dt_proj" + suffix, dt_proj)
            a_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
            self.register_parameter("A_log" if not suffix else "A_b_log", nn.Parameter(a_log))
            self.register_parameter("D" + suffix, nn.Parameter(torch.ones(E)))
        self.out_proj = nn.Linear(E, d_model, bias=False)
        self.block_head = nn.Linear(2 * E, 2) if router else None
        if router:
            self.reset_router()

    def reset_router(self, bias: float = 5.0) -> None:
        """DyVM router init: weight 0, bias 5 (both branches on with probability σ(5))."""
        nn.init.zeros_(self.block_head.weight)
        nn.init.constant_(self.block_head.bias, bias)

    def _ssm_inputs(self, backward: bool, x: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Conv, x_proj and dt_proj of one direction, all in sequence order: x (B, E, L), mask (B, L) 0/1
        or None → u (B, E, L), Δ before bias and softplus (B, E, L), B and C (B, L, N). The backward
        direction's conv runs over the reversed sequence (``reverse=True``; backends without it flip
        around the call)."""
        s = "_b" if backward else ""
        u = self._conv(backward, x, mask)
        delta, B, C = ssm_inputs(u, getattr(self, "x_proj" + s).weight, getattr(self, "dt_proj" + s).weight,
                                 self.d_state, self._panels(backward, u))
        return u, delta, B, C

    def _branch_params(self, backward: bool) -> list[Tensor]:
        """One direction's seven tensors as the Python branch (:meth:`_branch`) and the training node
        (:func:`~dyvm.kernels.mixer_ops.bidirectional_ssm`) read them: conv weight and bias, x_proj weight, dt_proj
        weight and bias (float32), A = -exp(A_log) (with its gradient), D (float32)."""
        s = "_b" if backward else ""
        conv, dt_proj = getattr(self, "conv1d" + s), getattr(self, "dt_proj" + s)
        A = -torch.exp(getattr(self, "A_b_log" if backward else "A_log").float())
        return [conv.weight, conv.bias, getattr(self, "x_proj" + s).weight, dt_proj.weight, dt_proj.bias.float(), A,
                getattr(self, "D" + s).float()]

    def _conv(self, backward: bool, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        """One direction's causal conv + SiLU: x (B, E, L) → u (B, E, L) channel-last; mask (B, L) 0/1 or None
        zeroes pruned slots before the conv and after it (its bias would make them non-zero)."""
        conv = getattr(self, "conv1d_b" if backward else "conv1d")
        return causal_conv1d(x, conv.weight, conv.bias, silu=True, mask=mask, reverse=backward, channels_last=True)

    def _branch(self, backward: bool, x: Tensor, z: Tensor, mask: Optional[Tensor]) -> Tensor:
        """One SSM direction. x, z: (B, E, L) in sequence order; mask (B, L) 0/1 or None. The backward
        branch scans the reversed sequence (``reverse=True``); its result is in sequence order."""
        _, _, x_proj_weight, dt_proj_weight, dt_bias, A, D = self._branch_params(backward)
        u = self._conv(backward, x, mask)
        return ssm_branch(u, x_proj_weight, dt_proj_weight, dt_bias, A, D, z, self.d_state, backward,
                          backend=self.scan_backend, panels=self._panels(backward, u))

    def token_stats(self, xz: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Per-token averages of the two directions, what the Predictor-B / Predictor-Δ ablations
        read: B̄ = (B_f + B_b)/2 (B, L, N) and Δ̄ (B, L, E), Δ before its bias and softplus, both
        directions in sequence order."""
        x, _ = split_xz(xz)
        m = None if mask is None else mask.reshape(mask.shape[0], -1).to(x.dtype)
        _, d_f, b_f, _ = self._ssm_inputs(False, x, m)
        _, d_b, b_b, _ = self._ssm_inputs(True, x, m)
        return (b_f + b_b) / 2, ((d_f + d_b) / 2).transpose(1, 2)

    @torch.no_grad()
    def token_influence(self, u: Tensor, position: int, chunk: int = 16) -> Tensor:
        """How much each token feeds this mixer's output at ``position``: u (B, L, D) the mixer's input → (B, L),
        the norm of token j's term in the output there. Both SSM directions unrolled into their "hidden attention"
        (Ali et al., 2024): token j reaches ``position`` through C_pos · Π exp(Δ_s A) · B_j Δ_j u_j (the forward
        branch from j <= position, the backward one from j >= position), then through the output gate and
        ``out_proj``. The D skip term (only the token at ``position`` itself) is left out. Each direction's terms are
        one pass of the extension on CPUs where it is built (:func:`~dyvm.kernels.scan_cpp.influence_terms`), else
        PyTorch ops over ``chunk`` images at a time, bounding the (chunk, L, E, N) temporaries."""
        x, z = self.in_proj(u).chunk(2, -1)                                               # (B, L, E) each
        length = torch.arange(u.shape[1], device=u.device)[:, None]
        total = 0.0
        for backward in (False, True):   # in (B, L, E), the layout the kernels leave u and Δ in
            s = "_b" if backward else ""
            inp, delta, b, c = self._ssm_inputs(backward, x.transpose(1, 2), None)         # (B, E, L) ×2, (B, L, N) ×2
            inp, delta = inp.transpose(1, 2), delta.transpose(1, 2)
            a = _decay_rates(getattr(self, "A_b_log" if backward else "A_log"))          # (E, N)
            terms = influence_terms(inp, delta, getattr(self, "dt_proj" + s).bias, a, b, c, position, backward)
            if terms is not None:   # the extension: the steps below in one pass, over the reaching tokens only
                total = total + terms
                continue
            delta = delta + getattr(self, "dt_proj" + s).bias.float()
            # softplus as max(x, 0) + log(1 + exp(-|x|)): ATen's softplus and log1p took ~10x the time here (not
            # vectorised), and the log of 1 + e rounds only where e < 6e-8, far under the Δ that matter
            delta = delta.clamp(min=0) + torch.log(torch.exp(-delta.abs()) + 1)
            cum = delta.cumsum(1)
            if backward:  # reversed scan: j >= position arrives through Δ_position .. Δ_{j-1}
                before = cum - delta
                span, reach = before - before[:, position:position + 1], length >= position
            else:         # j <= position arrives through Δ_{j+1} .. Δ_position
                span, reach = cum[:, position:position + 1] - cum, length <= position
            cb = (c[:, position, None, :] * b).float()                                    # (B, L, N)
            paths = torch.cat([(torch.exp(a * span[i:i + chunk, ..., None].clamp(min=0))
                                * cb[i:i + chunk, :, None]).sum(-1) for i in range(0, u.shape[0], chunk)])
            total = total + paths * delta * inp * reach                                   # (B, L, E)
        gate = F.silu(z[:, position].float())                                             # (B, E)
        scale = 0.5 if self.divide_out else 1.0
        return F.linear(total * gate[:, None], self.out_proj.weight.float()).norm(dim=-1) * scale

    def _selected_branches(self, xz: Tensor, x: Tensor, z: Tensor, mask: Optional[Tensor], gates: Tensor) -> Tensor:
        """Inference: each branch runs for the images whose gate (B, 2) is on and contributes 0 for the
        others, so the compute really drops: a branch on for every image runs on the whole batch, one
        on for some runs on that sub-batch, one off for all does not run. The gates are read once.

        xz: ``in_proj``'s output (B, L, 2E) and x, z its (B, E, L) views; returns y (B, E, L) on channel-last
        memory. A sub-batch is one row copy of xz (its x and z views stay channel-last for the kernels), and
        its output is added into y by rows (no zero-filled full-size part per branch)."""
        counts = [round(c) for c in gates.sum(0).tolist()]                # gates are exactly 0 or 1
        batch, channels, length = x.shape
        zeros = lambda dtype=x.dtype: x.new_zeros(batch, length, channels, dtype=dtype).transpose(1, 2)  # noqa: E731
        y = None
        for backward, n_on in ((False, counts[0]), (True, counts[1])):
            if n_on == 0:
                continue
            if n_on == batch:
                part = self._branch(backward, x, z, mask)
                y = part if y is None else y + part     # a branch's output is never changed in place
                continue
            idx = (gates[:, int(backward)] > 0.5).nonzero().squeeze(1)
            sub = self._branch(backward, *split_xz(xz.index_select(0, idx)), None if mask is None else mask[idx])
            # in sub's dtype: under autocast the pure-PyTorch conv runs in 16 bits, and so does its branch
            y = zeros(sub.dtype).index_add_(0, idx, sub) if y is None else y.index_add(0, idx, sub)
        return zeros() if y is None else y

    def train(self, mode: bool = True) -> "BiMambaMixer":
        """Also forgets the derived inference tensors (:meth:`_derived`): torch's fused optimisers (``dyvm train``'s
        AdamW) write the parameters without bumping their version counters, so after training steps the version
        check alone would hand the next evaluation the A, packs and panels of the weights before those steps (it did:
        every validation after ``dyvm train``'s first epoch read stale ones). A training loop switches to train mode
        before its steps and to eval mode before evaluating, so each evaluation derives them afresh."""
        self._inference_cache.clear()
        return super().train(mode)

    def _derived(self, key: str, source: Tensor, make: Callable[[Tensor], Tensor]) -> Tensor:
        """``make(source)`` without autograd, remembered while ``source`` is the same tensor at the same version
        (``load_state_dict``, a plain optimiser step or any in-place op bumps it; a fused optimiser step does not,
        hence :meth:`train` forgets everything): at inference each layer's
        ``A = -exp(A_log)`` of both directions is computed once, not in every forward (four small ops a layer: docs/speed/log.md,
        "Per-layer constants"). Identical values to computing it each time."""
        if torch.compiler.is_compiling():  # traced by torch.compile / torch.export: nothing to remember
            return make(source)
        try:
            version, address = source._version, source.data_ptr()
        except RuntimeError:  # an inference-mode tensor has no version counter, a fake tensor no data: no cache
            with torch.no_grad():
                return make(source)
        entry = self._inference_cache.get(key)
        # the entry also pins the storage it was made from, so a `.data` swap (as `module.to` does) is seen by its
        # address, which no other tensor can take while the entry lives
        if (entry is None or entry[0] is not source or entry[1] != version
                or entry[2].data_ptr() != address or entry[2].dtype != source.dtype):
            with torch.no_grad():
                entry = self._inference_cache[key] = (source, version, source.detach(), make(source))
        return entry[3]

    def derived_sources(self) -> list[Tensor]:
        """The parameters :meth:`_derived` makes inference tensors from (A, packs, panels, bf16 copies)."""
        mods, own = self._modules, self._parameters
        return [own["A_log"], own["A_b_log"], *(mods[name]._parameters["weight"] for name in (
            "in_proj", "out_proj", "x_proj", "x_proj_b", "dt_proj", "dt_proj_b"))]

    def _direction_params(self, backward: bool) -> list[Tensor]:
        """One direction's tensors in the order of :func:`~dyvm.kernels.mix_cpp.mix_forward` (A = -exp(A_log))."""
        s = "_b" if backward else ""
        # read from the module dicts: nn.Module attribute lookups cost a few µs a layer at batch 1
        mods, own = self._modules, self._parameters
        conv, dt_proj = mods["conv1d" + s]._parameters, mods["dt_proj" + s]._parameters
        a = self._derived("A" + s, own["A_b_log" if backward else "A_log"], _decay_rates)
        return [conv["weight"], conv["bias"], mods["x_proj" + s]._parameters["weight"], dt_proj["weight"],
                dt_proj["bias"], a, own["D" + s]]

    def ssm_panels(self, backward: bool) -> tuple[Tensor, Tensor]:
        """One direction's ``x_proj`` and ``dt_proj`` weights as panels (:func:`~dyvm.kernels.mix_cpp.weight_panel`),
        remembered like A: their inference route in the extension's blocks and in the Python mixer."""
        s, mods = "_b" if backward else "", self._modules
        return tuple(self._derived(name + s + "_panel", mods[name + s]._parameters["weight"], mix_cpp.weight_panel)
                     for name in ("x_proj", "dt_proj"))

    def _panels(self, backward: bool, u: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        """:meth:`ssm_panels` where the Python mixer's x_proj and dt_proj take the panel route on the conv's output
        ``u`` (eager CPU inference on float32, autocast or not: :func:`~dyvm.kernels.mix_cpp.panel_applies`), else
        None (F.linear)."""
        weight = self._modules["x_proj_b" if backward else "x_proj"]._parameters["weight"]
        return self.ssm_panels(backward) if mix_cpp.panel_applies(u, weight) else None

    def projection_panel(self, name: str) -> Optional[Tensor]:
        """``in_proj``'s or ``out_proj``'s weight panel where that weight is small (under 2^17 elements: where the
        oneDNN pack does not serve every row count; from 2 rows the panel beats sgemm there), else None."""
        weight = self._modules[name]._parameters["weight"]
        if weight.numel() >= 1 << 17:
            return None
        return self._derived(name + "_panel", weight, mix_cpp.weight_panel)

    def all_panels(self) -> list[Tensor]:
        """The panels the extension's blocks take: x_proj and dt_proj of the forward then the backward branch,
        then, where either projection is small, in_proj's and out_proj's (an empty tensor for one that is not).
        The same under CPU autocast: matmuls that run on panels stay float32 there. x_proj and dt_proj read the
        float32 conv output and feed the float32 scan (in 16 bits they cost two casts and a narrow 16-bit matmul
        each, 18-21% of Vim-S's batch-1 forward); a small in_proj or out_proj (the demo's D 64) is too small for a
        16-bit matmul to pay for its casts (the demo's models ran 2.1x slower at batch 1 in bf16 than in float32).
        Large ones run on oneDNN's bf16 packs there, the values autocast's matmuls give."""
        panels = [*self.ssm_panels(False), *self.ssm_panels(True)]
        projections = [self.projection_panel("in_proj"), self.projection_panel("out_proj")]
        if any(p is not None for p in projections):
            panels += [_NO_PANEL if p is None else p for p in projections]
        return panels

    def packed_projections(self) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """``in_proj``'s and ``out_proj``'s weights packed for oneDNN (:func:`~dyvm.kernels.mix_cpp.pack_weight`),
        remembered like A: in float32, or in bf16 under CPU bf16 autocast (the fused blocks' matmuls then give
        autocast's values without casting the weights in every forward); (None, None) under float16 autocast."""
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32
        if dtype not in (torch.float32, torch.bfloat16):
            return None, None
        mods, tag = self._modules, "" if dtype == torch.float32 else "_bf16"
        return tuple(self._derived(name + "_packed" + tag, mods[name]._parameters["weight"],
                                   lambda w: mix_cpp.pack_weight(w, dtype)) for name in ("in_proj", "out_proj"))

    def project_in(self, u: Tensor) -> Tensor:
        """``in_proj``: (B, L, D) → xz (B, L, 2E); at eager CPU inference by :func:`~dyvm.kernels.mix_cpp.linear`
        on the packed weight, the route and values of the fused blocks."""
        proj = self._modules["in_proj"]
        weight = proj._parameters["weight"]
        if forward_hooked(proj):
            return proj(u)
        if not mix_cpp.panel_applies(u, weight):
            return projection(u, weight)
        return mix_cpp.linear(u, weight, self.packed_projections()[0], self.projection_panel("in_proj"))

    def project_out(self, y: Tensor) -> Tensor:
        """``out_proj`` of the summed branches, halved with ``divide_out``: y (B, L, E) → (B, L, D)."""
        proj = self._modules["out_proj"]
        weight = proj._parameters["weight"]
        hooked = forward_hooked(proj)
        if hooked or not mix_cpp.panel_applies(y, weight):
            if self.divide_out:  # (y / 2) W^T = y (W / 2)^T exactly (a power of two): halve the small weight
                return projection(y, weight * 0.5)
            return proj(y) if hooked else projection(y, weight)
        out = mix_cpp.linear(y, weight, self.packed_projections()[1], self.projection_panel("out_proj"))
        return out * 0.5 if self.divide_out else out

    def fused_call(self, x: Tensor, gates: Optional[Tensor] = None, router_positions: Optional[Tensor] = None,
                   router_threshold: float = 0.5, block: Optional[tuple] = None) -> Optional[list[Tensor]]:
        """Eager CPU inference (float32 weights, bf16 autocast allowed) in one call of the compiled extension:
        the same kernels, matmuls and per-image branch selection as the Python code, call for call
        (identical values).

        x: ``in_proj``'s output xz (B, L, 2E) → [output]; or, with ``block`` = (residual or None, RMSNorm
        weight, eps), the block's incoming hidden (B, L, D), whose add + RMSNorm + ``in_proj`` run first →
        [output, new residual]. ``router_positions`` (P,): the DyVM router reads xz there and sets the gates
        (its logits and gates are appended); else ``gates`` (B, 2) or None (both branches). None where the
        fused path does not apply (autograd, tracing, another backend, weights not float32, forward hooks on
        the modules it would call)."""
        if x.device.type != "cpu" or (gates is not None and gates.requires_grad):
            return None
        mods = self._modules
        if forward_hooked(mods["in_proj"] if block is not None else None, mods["out_proj"],
                   mods["block_head"] if router_positions is not None else None):
            return None
        params = self._direction_params(False) + self._direction_params(True)
        out_weight = mods["out_proj"]._parameters["weight"]
        router = []
        if router_positions is not None:
            head = mods["block_head"]._parameters
            router = [head["weight"], head["bias"], router_positions]
        checked = params + [out_weight] + router[:2]  # applies() wants every one float32
        if block is not None:
            residual, norm_weight, eps = block
            in_weight = mods["in_proj"]._parameters["weight"]
            checked += [norm_weight, in_weight] + ([] if residual is None else [residual])
        if params[1] is None or params[8] is None or not mix_cpp.applies(x, checked, self.scan_backend):
            return None
        scale = 0.5 if self.divide_out else 1.0
        in_packed, out_packed = self.packed_projections()
        if block is None:
            return mix_cpp.mix_forward(x, params[:7], params[7:], out_weight, scale, gates, router, router_threshold,
                                       out_packed, self.all_panels())
        return mix_cpp.block_forward(x, residual, norm_weight, eps, in_weight, params[:7], params[7:], out_weight,
                                     scale, gates, router, router_threshold, in_packed, out_packed, self.all_panels())

    def forward(self, u: Tensor, mask: Optional[Tensor] = None, gates: Optional[Tensor] = None) -> Tensor:
        """u: (B, L, D) → (B, L, D). mask: (B, L, 1) 0/1 or None; gates: (B, 2) 0/1 [fwd, bwd] or None."""
        return self.mix(self.project_in(u), mask, gates)

    def mix(self, xz: Tensor, mask: Optional[Tensor] = None, gates: Optional[Tensor] = None) -> Tensor:
        """Everything after ``in_proj``: xz (B, L, 2E) → (B, L, D).

        The branches work on channel-last (B, L, E) memory viewed as (B, E, L): the kernels read
        and write through strides, so ``in_proj``'s output, ``x_proj``'s input and ``out_proj``'s
        input need no transposed copies.
        """
        if xz.device.type == "cpu" and xz.dtype in (torch.bfloat16, torch.float16):
            # under CPU autocast only the matmuls run in 16 bits: the conv and scan kernels compute in
            # float32, so one upcast here saves the copies each of them would make of its inputs
            xz = xz.float()
        fused = None if mask is not None else self.fused_call(xz, gates)
        if fused is not None:
            return fused[0]
        m = None if mask is None else mask.reshape(mask.shape[0], -1).to(xz.dtype)  # (B, L)
        # training, every image running both branches (gated 0/1 with a gradient under a router): both directions in
        # one node where the cpp kernels serve them
        both = (torch.is_grad_enabled() and xz.requires_grad
                and (gates is None or (gates.requires_grad and not torch.compiler.is_compiling())))
        y = bidirectional_ssm(xz, self._branch_params(False) + self._branch_params(True), self.d_state,
                              self.scan_backend, gates, m) if both else None
        if y is not None:
            return self.project_out(y.transpose(1, 2))
        x, z, x_b, z_b = split_xz(xz, copies=2)                            # (B, E, L) views, a pair per branch
        if gates is None:
            y = self._branch(False, x, z, m) + self._branch(True, x_b, z_b, m)
        elif gates.requires_grad or torch.compiler.is_compiling():
            # training: every image runs both branches, gated 0/1 with a gradient (one fused op).
            # Under torch.compile / torch.export likewise (same logits, static shapes, no graph break;
            # the skipped compute is not saved)
            y = gated_sum(self._branch(False, x, z, m), self._branch(True, x_b, z_b, m), *gates.unbind(-1))
        else:
            y = self._selected_branches(xz, x, z, m, gates)
        return self.project_out(y.transpose(1, 2))


class Block(nn.Module):
    """Add → RMSNorm → Mixer, with the residual stream kept in float32.

    ``drop_path`` applies to the incoming hidden state (the official ``inter_dpr`` layout).
    """

    def __init__(self, dim: int, mixer: BiMambaMixer, norm_eps: float = 1e-5, drop_path: float = 0.0):
        super().__init__()
        self.mixer = mixer
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def add_norm(self, hidden: Tensor, residual: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Returns (normed input of the mixer, new residual)."""
        norm = self._modules["norm"]
        if (self.training and isinstance(self.drop_path, nn.Identity) and type(norm) is RMSNorm
                and hidden.dtype != torch.float64 and not forward_hooked(norm)):
            fused = add_rms_norm_for_training(hidden, residual, norm.weight, norm.eps)  # None: not served
            if fused is not None:
                return fused
        if residual is None:  # layer 0: the residual stream starts as the embeddings, in fp32 (fp64 stays)
            residual = hidden if hidden.dtype == torch.float64 else hidden.float()
        else:
            residual = residual + self.drop_path(hidden)
        return self.norm(residual), residual

    def fused_forward(self, hidden: Tensor, residual: Optional[Tensor], gates: Optional[Tensor] = None,
                      router_positions: Optional[Tensor] = None,
                      router_threshold: float = 0.5) -> Optional[list[Tensor]]:
        """Eager CPU inference of the whole block in one extension call (see
        :meth:`BiMambaMixer.fused_call`): [output, new residual] (+ [router logits, gates] with
        ``router_positions``), or None where it does not apply (then :meth:`forward`'s Python path runs)."""
        norm = self._modules["norm"]
        if self.training or forward_hooked(norm, self._modules["mixer"]):  # drop path; hooks that must fire
            return None
        return self._modules["mixer"].fused_call(hidden, gates, router_positions, router_threshold,
                                                 block=(residual, norm._parameters["weight"], norm.eps))

    def fused_params(self, routed: bool = False) -> list[Tensor]:
        """The block's tensors in the order :func:`~dyvm.kernels.mix_cpp.stack_forward` reads per layer: RMSNorm
        weight, in_proj weight, each direction's seven, out_proj weight (+ block_head weight and bias)."""
        norm, mixer = self._modules["norm"], self._modules["mixer"]
        mods = mixer._modules
        params = [norm._parameters["weight"], mods["in_proj"]._parameters["weight"], *mixer._direction_params(False),
                  *mixer._direction_params(True), mods["out_proj"]._parameters["weight"]]
        if routed:
            head = mods["block_head"]._parameters
            params += [head["weight"], head["bias"]]
        return params

    def forward(self, hidden: Tensor, residual: Optional[Tensor], mask: Optional[Tensor] = None,
                gates: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        fused = None if mask is not None else self.fused_forward(hidden, residual, gates)
        if fused is not None:
            return fused[0], fused[1]
        normed, residual = self.add_norm(hidden, residual)
        return self.mixer(normed, mask, gates), residual


class PatchEmbed(nn.Module):
    """Conv2d patchify: (B, C, H, W) → (B, M, D) in row-major patch order."""

    def __init__(self, img_size: int, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size, self.patch_size, self.stride = img_size, patch_size, stride
        self.grid_size = ((img_size - patch_size) // stride + 1,) * 2
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def narrow(self, x: Tensor) -> bool:
        """Whether ``x`` embeds as one matmul over its patches (on a CPU, patches of at most 64 values)."""
        p = self.patch_size
        return x.device.type == "cpu" and self.stride == p and self.proj.in_channels * p * p <= 64

    def forward(self, x: Tensor) -> Tensor:
        proj, p = self.proj, self.patch_size
        if self.narrow(x):
            # few pixels a patch (the demo's 4x4 grey patches): the convolution as one matmul over the patches. oneDNN's
            # convolution costs ~40 µs of set-up a call there, 4x the matmul at batch 1; at 16-px RGB patches the two
            # take the same time and the convolution stays
            b, c, gh, gw = x.shape[0], x.shape[1], x.shape[2] // p, x.shape[3] // p
            patches = x[:, :, :gh * p, :gw * p].reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
            return F.linear(patches.reshape(b, gh * gw, c * p * p), proj.weight.reshape(proj.out_channels, -1),
                            proj.bias)
        return proj(x).flatten(2).transpose(1, 2)


@dataclass
class VimOutput:
    """Rich output of :meth:`VisionMamba.forward_detailed`.

    logits (B, C); cls_feature (B, D) and tokens (B, M, D): final RMSNorm-ed class token and
    non-class tokens in patch order; layer_hidden / layer_residual: per block, (B, L, D) each
    (only when asked): ``residual_i`` enters norm i, ``hidden_i`` is mixer i's output.
    """

    logits: Tensor
    cls_feature: Tensor
    tokens: Tensor
    layer_hidden: list[Tensor] = field(default_factory=list)
    layer_residual: list[Tensor] = field(default_factory=list)


class VisionMamba(nn.Module):
    """Vim with a middle class token. Keyword names follow the official constructor.

    The family hooks a variant overrides: ``build_layout`` (where prefix tokens sit), the prefix
    parameters (``_build_prefix``), ``embed_tokens``, ``forward_head`` and ``checkpoint_filter``.
    """

    # options of the official constructors this implementation fixes: key -> the only accepted value
    FIXED_OPTIONS: dict[str, Any] = {
        "rms_norm": True, "if_abs_pos_embed": True, "if_rope": False, "if_rope_residual": False,
        "bimamba_type": "v2", "if_cls_token": True, "use_middle_cls_token": True}
    is_dynamic = False  # "is this a DyVM?": True for every model with predictors/routers
    task = "classification"  # what the model predicts: "classification" (logits per image) or "segmentation"
    class_row: Optional[str] = "middle"  # the class token's row in pos_embed: "middle", "first" or None

    def __init__(self, img_size: int = 224, patch_size: int = 16, stride: Optional[int] = None,
                 depth: int = 24, embed_dim: int = 192, d_state: int = 16, num_classes: int = 1000,
                 channels: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_epsilon: float = 1e-5, rms_norm: bool = True, residual_in_fp32: bool = True,
                 fused_add_norm: bool = True, final_pool_type: str = "mean",
                 if_abs_pos_embed: bool = True, if_rope: bool = False, if_rope_residual: bool = False,
                 bimamba_type: str = "v2", if_cls_token: Optional[bool] = None, if_divide_out: bool = True,
                 use_middle_cls_token: Optional[bool] = None, in_chans: Optional[int] = None,
                 scan_backend: Optional[str] = None, _router: bool = False):
        super().__init__()
        given = dict(rms_norm=rms_norm, if_abs_pos_embed=if_abs_pos_embed, if_rope=if_rope,
                     if_rope_residual=if_rope_residual, bimamba_type=bimamba_type,
                     if_cls_token=if_cls_token, use_middle_cls_token=use_middle_cls_token)
        for key, value in given.items():
            if value is not None and key in self.FIXED_OPTIONS and value != self.FIXED_OPTIONS[key]:
                raise ValueError(f"{key}={value!r} is not supported by {type(self).__name__} (only "
                                 f"{self.FIXED_OPTIONS[key]!r}); the fixed options: {self.FIXED_OPTIONS}")
        if in_chans is not None:
            if channels not in (3, in_chans):
                raise ValueError(f"in_chans={in_chans} contradicts channels={channels}; give one of them")
            channels = in_chans
        stride = patch_size if stride is None else stride
        for key, value in dict(img_size=img_size, patch_size=patch_size, stride=stride, depth=depth,
                               embed_dim=embed_dim, d_state=d_state, num_classes=num_classes,
                               channels=channels).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "num_classes" else 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if patch_size > img_size:
            raise ValueError(f"patch_size={patch_size} is larger than img_size={img_size}")
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_path_rate and drop_rate must be in [0, 1), got {drop_path_rate}, {drop_rate}")
        if scan_backend is not None:
            from ..kernels.scan import resolve_backend

            resolve_backend(scan_backend)  # validates the name

        self.config = ModelConfig(img_size=img_size, patch_size=patch_size, stride=stride, depth=depth,
                                  embed_dim=embed_dim, d_state=d_state, num_classes=num_classes,
                                  channels=channels, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                                  norm_epsilon=norm_epsilon, if_divide_out=if_divide_out)
        self.num_classes, self.embed_dim, self.depth = num_classes, embed_dim, depth
        self.num_features = embed_dim
        self.in_chans, self.img_size = channels, img_size
        self.residual_in_fp32, self.fused_add_norm = residual_in_fp32, fused_add_norm

        self.patch_embed = PatchEmbed(img_size, patch_size, stride, channels, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.layout = self.build_layout()
        self.num_prefix_tokens = self.layout.num_prefix
        self._build_prefix()
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        inter_dpr = [0.0] + dpr  # block i drops the output of block i-1 (official layout)
        self.layers = nn.ModuleList(
            Block(embed_dim, BiMambaMixer(embed_dim, d_state=d_state, divide_out=if_divide_out, router=_router),
                  norm_eps=norm_epsilon, drop_path=inter_dpr[i])
            for i in range(depth))
        self.norm_f = RMSNorm(embed_dim, eps=norm_epsilon)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self._build_head()
        self._init_weights()
        if scan_backend is not None:
            self.set_scan_backend(scan_backend)

    # ----------------------------------------------------------------------------- variant hooks
    def build_layout(self) -> PrefixLayout:
        """Where the prefix tokens sit (Vim: one class token in the middle)."""
        return MiddleClassToken()

    def _build_prefix(self) -> None:
        """Prefix parameters: ``cls_token`` (1, P, D); ``pos_embed`` (1, M+P, D) covers every slot."""
        p, d = self.num_prefix_tokens, self.embed_dim
        if p:
            self.cls_token = nn.Parameter(torch.zeros(1, p, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + p, d))

    def _build_head(self) -> None:
        self.head = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()

    def embed_tokens(self, patches: Tensor) -> TokenSequence:
        """Patch embeddings (B, M, D) → the initial sequence: prefix tokens placed, then ``pos_embed``
        (laid out in sequence order) added."""
        prefix = self.cls_token.expand(patches.shape[0], -1, -1) if self.num_prefix_tokens else \
            patches.new_zeros(patches.shape[0], 0, patches.shape[-1])
        seq = TokenSequence.from_parts(prefix.to(patches.dtype), patches, self.layout)
        seq.hidden = self.pos_drop(seq.hidden + self.pos_embed)
        return seq

    def forward_head(self, prefix_features: Tensor, pre_logits: bool = False) -> Tensor:
        """Normalised prefix tokens (B, P, D) → logits (B, C), or the head input with ``pre_logits``."""
        pooled = prefix_features[:, 0]
        return pooled if pre_logits else self.head(pooled)

    def head_macs(self) -> int:
        """Multiply-accumulates of ``forward_head`` per image (the official FLOPs convention counts it)."""
        return self.head.in_features * self.head.out_features if isinstance(self.head, nn.Linear) else 0

    @classmethod
    def checkpoint_filter(cls, state: dict[str, Tensor], model: "VisionMamba") -> dict[str, Tensor]:
        """Adapt an official state dict of this family to ``model``: resize ``pos_embed`` (the class
        row stays at the middle) when the patch grid differs."""
        state = dict(state)
        own = model.pos_embed
        old = state.get("pos_embed")
        if old is not None and old.dim() == 3 and old.shape != own.shape and old.shape[-1] == own.shape[-1]:
            state["pos_embed"] = resize_pos_embed(old, model.num_patches, cls_index=cls.class_row)
        return state

    # ----------------------------------------------------------------------------- set-up
    def _init_weights(self) -> None:
        """Official Vim initialisation (used when training from scratch)."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.num_prefix_tokens:
            trunc_normal_(self.cls_token, std=0.02)
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if isinstance(getattr(self, "head", None), nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        for layer in self.layers:
            # GPT-2 style rescaling of the residual branch output (one residual per layer)
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(self.depth)

    def set_scan_backend(self, backend: Optional[str]) -> "VisionMamba":
        """Pin every mixer to a scan backend (None: ``$DYVM_SCAN_BACKEND`` / auto at call time)."""
        if backend is not None:
            from ..kernels.scan import resolve_backend

            resolve_backend(backend)
        for layer in self.layers:
            layer.mixer.scan_backend = backend
        return self

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if name.startswith(("pos_embed", "cls_token"))}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = self.config["num_classes"] = num_classes
        self.head = nn.Linear(self.head.in_features if isinstance(self.head, nn.Linear) else self.embed_dim,
                              num_classes) if num_classes > 0 else nn.Identity()

    # ----------------------------------------------------------------------------- forward
    def check_input(self, x: Tensor, finite: bool = True) -> None:
        """Raise a clear TypeError/ValueError for an image batch this model cannot take (``finite``: NaN and
        infinities too; :meth:`fused_logits` reads the sum that check needs inside its extension call)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {self.in_chans}, {self.img_size}, "
                            f"{self.img_size}), got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point image tensor, got dtype {x.dtype} "
                            "(convert with x.float() and normalise)")
        weight = self.patch_embed.proj.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"x is {x.dtype} but the model's weights are {weight.dtype}: convert the images with "
                            f"x.to({weight.dtype}) (or run under torch.autocast)")
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"x has {x.shape[1]} channels but the model expects channels={self.in_chans}")
        if tuple(x.shape[2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"x is {x.shape[2]}x{x.shape[3]} but the model expects {self.img_size}x{self.img_size}: resize "
                f"the images, or build the model with img_size={x.shape[2]} and load the checkpoint "
                "(load_checkpoint interpolates pos_embed)" if x.shape[2] == x.shape[3] else
                f"x is {x.shape[2]}x{x.shape[3]} but the model expects square {self.img_size}x{self.img_size} images")
        if not finite:
            return
        if torch.compiler.is_compiling():  # a data-dependent branch would break the graph: assert in it instead
            torch._assert_async(torch.isfinite(x).all(), "x contains NaN or Inf values")
        # a finite sum means every value is finite (a NaN or inf makes the sum NaN or inf); one pass instead of
        # isfinite's five (0.3 ms of Vim-T's batch 1). Only a sum that is not finite (or overflowed) needs the full check
        elif not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf values")

    def embed_sequence(self, x: Tensor) -> TokenSequence:
        """Images (B, C, H, W) → the initial :class:`TokenSequence`."""
        self.check_input(x)
        return self.embed_tokens(self.patch_embed(x))

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) → token sequence (B, M+P, D) in the variant's layout."""
        return self.embed_sequence(x).hidden

    def final_norm(self, hidden: Tensor, residual: Tensor) -> Tensor:
        """``norm_f(residual + hidden)`` (..., D), drop path on ``hidden`` in training. At eager CPU inference in float32
        the add and the RMSNorm are one pass of the extension (:func:`~dyvm.kernels.mix_cpp.add_rms_norm`: the values
        of the add followed by ``norm_f``, one call instead of two)."""
        norm = self._modules["norm_f"]
        if (not self.training and isinstance(norm, RMSNorm) and residual.dtype == torch.float32
                and residual.shape == hidden.shape and not tracing() and mix_cpp.norm_applies(hidden, norm.weight)
                and not forward_hooked(norm)):
            return mix_cpp.add_rms_norm(hidden, residual, norm.weight, norm.eps)[0]
        return norm(residual + self.drop_path(hidden))

    def final_prefix(self, seq: TokenSequence) -> Tensor:
        """The prefix tokens (B, P, D) of ``seq`` after the final norm (``seq`` as the last block left it: hidden and
        residual), normalised alone: a per-token norm, so the values of :meth:`final_norm` over the whole sequence at
        those tokens, without the work on the others (what the head reads)."""
        return self.final_norm(seq.prefix(seq.hidden), seq.prefix(seq.residual))

    def fused_stage_params(self) -> list[tuple[list[Tensor], float]]:
        """Per pruning stage, its predictor's tensors and LayerNorm eps for :meth:`fused_stack` (DyVM's); none here."""
        return []

    def fused_roots(self) -> list[nn.Module]:
        """The modules :meth:`fused_stack` computes (their weights, attributes and hooks decide its plan)."""
        return [self.layers]

    def _build_stack_plan(self, hidden: Tensor, routed: bool) -> Optional[StackPlan]:
        """Gather what :meth:`fused_stack` hands the extension, or None where a layer does not qualify for ``hidden``."""
        tensors, eps, scales, backends = [], [], set(), set()
        for layer in self.layers:
            mixer = layer._modules["mixer"]
            tensors += layer.fused_params(routed)
            eps.append(layer._modules["norm"].eps)
            scales.add(mixer.divide_out)
            backends.add(mixer.scan_backend)
        stages = self.fused_stage_params()
        if (any(t is None for t in tensors) or len(scales) != 1 or len(backends) != 1
                or not mix_cpp.applies(hidden, tensors + [t for params, _ in stages for t in params], *backends)):
            return None
        mixers = [layer._modules["mixer"] for layer in self.layers]
        packed = [t for mixer in mixers for t in mixer.packed_projections()]
        panels = [t for mixer in mixers for t in mixer.all_panels()]
        arguments = (tensors, eps, 0.5 if scales.pop() else 1.0, backends.pop(),
                     () if any(t is None for t in packed) else packed, panels, stages)
        roots = self.fused_roots()
        norms = [m for root in roots for m in root.modules() if isinstance(getattr(m, "eps", None), float)]
        return StackPlan.make(arguments, roots, [t for mixer in mixers for t in mixer.derived_sources()],
                              lambda: [(m.scan_backend, m.divide_out) for m in mixers] + [n.eps for n in norms])

    def fused_stack(self, hidden: Tensor, patch_ids: Tensor, positions: Sequence[Sequence[int]],
                    routed: bool = False, router_threshold: float = 0.5,
                    stages: Sequence[tuple[int, int]] = ()) -> Optional[list[Tensor]]:
        """Eager CPU inference of every block (with DyVM's routers when ``routed``, and its pruning ``stages``:
        (layer, keep), predictors from :meth:`fused_stage_params`) in one extension call, every image with its prefix
        tokens at ``positions`` (at the start, then after each stage): what the per-layer loop computes, call for
        call (see :func:`~dyvm.kernels.mix_cpp.stack_forward` for what it returns). None where it does not apply
        (training, hooks on a block or below, a layer the fused block does not serve): the loop runs instead.
        The arguments are remembered in a plan (:class:`~.remembered.StackPlan`) while what they came from is
        unchanged."""
        arguments = self.stack_arguments(hidden, routed, len(stages))
        if arguments is None:
            return None
        tensors, eps, out_scale, packed, panels, stage_params = arguments
        return mix_cpp.stack_forward(hidden, None, patch_ids, tensors, eps, out_scale, routed, router_threshold,
                                     positions, [(layer, keep, *params) for (layer, keep), params in
                                                 zip(stages, stage_params)], packed, panels)

    def stack_arguments(self, hidden: Tensor, routed: bool, num_stages: int) -> Optional[tuple]:
        """What :meth:`fused_stack` hands the extension for a forward of ``hidden`` (B, L, D) (or, as
        :meth:`fused_logits` asks, any 3-D tensor of the images' dtype and device): (per-layer tensors, eps,
        out_scale, packed weights, panels, per-stage predictor tensors and LayerNorm eps), or None where the fused
        path does not apply."""
        if self.training or hidden.device.type != "cpu" or forward_hooked():
            return None
        plans = self.__dict__.setdefault("_stack_plans", StackPlans())
        key = (routed, torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        plan = plans.get(key)
        if plan is None or not plan.valid():
            plan = self._build_stack_plan(hidden, routed)
            if plan is None:
                return None
            plans[key] = plan
        if plan.hooked():
            return None
        tensors, eps, out_scale, backend, packed, panels, stage_params = plan.arguments
        # the weights' dtypes were checked when the plan was made (a cast moves the derived sources, so it is made
        # again); whether one requires a gradient matters only with autograd on
        graded = tensors + [t for params, _ in stage_params for t in params] if torch.is_grad_enabled() else ()
        if num_stages != len(stage_params) or not mix_cpp.applies(hidden, graded, backend):
            return None
        return tensors, eps, out_scale, packed, panels, stage_params

    def fused_segments(self) -> Optional[tuple[list[list[int]], bool, float, list[tuple[int, int]]]]:
        """What :meth:`fused_logits` stacks: (the prefix positions at the start and after each stage, routed, the
        routers' threshold, the stages (layer, keep)); None where the stack would not serve this model's forward."""
        return [self.layout.shared_positions(self.num_patches)], False, 0.5, []

    def fused_logits(self, x: Tensor) -> Optional[Tensor]:
        """The eval forward's logits (B, num_classes) in one extension call (``dyvm_scan::forward_logits``: the
        input's finite check, the patch embedding, the prefix tokens and ``pos_embed``, every block and stage, the final
        norm at the class token and the head, with the Python path's calls and values, under CPU autocast too), or None
        where it does not apply: training, tracing, images not float32, a variant with its own embedding or head,
        hooks on a module it would call, weights the stacked blocks do not serve. Between separate calls the Python
        ran cold (see the op)."""
        mods = self._modules
        pe, head, norm = mods["patch_embed"], mods["head"], mods["norm_f"]
        if (self.training or x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling()
                or type(self).embed_tokens is not VisionMamba.embed_tokens
                or type(self).forward_head is not VisionMamba.forward_head or type(pe) is not PatchEmbed
                or type(head) is not nn.Linear or head.bias is None or not isinstance(norm, RMSNorm)
                or not self.num_prefix_tokens):
            return None
        proj = pe._modules["proj"]
        edges = [proj.weight, proj.bias, self.cls_token, self.pos_embed, norm.weight, head.weight, head.bias]
        if proj.bias is None or not mix_cpp.panel_applies(x, proj.weight) or any(
                t.dtype != torch.float32 or (torch.is_grad_enabled() and t.requires_grad) for t in edges):
            return None
        if forward_hooked(pe, proj, mods["pos_drop"], norm, head):
            return None
        self.check_input(x, finite=False)  # (the finite check reads the sum the extension call returns)
        segments = self.fused_segments()
        if segments is None:
            return None
        positions, routed, threshold, stages = segments
        arguments = self.stack_arguments(x.flatten(2), routed, len(stages))  # (its checks read dtype and device)
        if arguments is None:
            return None
        tensors, eps, out_scale, packed, panels, stage_params = arguments
        logits, total = mix_cpp.forward_logits(
            x, proj.weight, proj.bias, pe.patch_size, pe.stride, pe.narrow(x), self.cls_token[0], self.pos_embed,
            tensors, eps, out_scale, routed, threshold, positions,
            [(layer, keep, *params) for (layer, keep), params in zip(stages, stage_params)], packed, panels,
            norm.weight, norm.eps, head.weight, head.bias)
        if not math.isfinite(float(total)):
            self.check_input(x)  # raises for NaN or infinities; a finite batch whose sum overflowed runs the usual way
            return None
        return logits

    def forward_blocks(self, x: Tensor, layers: Optional[tuple[list, list]] = None) -> TokenSequence:
        """Images → the sequence after the last block, before the final norm: ``hidden`` (B, L, D) its mixer's
        output, ``residual`` the residual stream. ``layers``: two lists that receive every block's (hidden,
        residual)."""
        seq = self.embed_sequence(x)
        if layers is None and not torch.compiler.is_compiling():
            stacked = self.fused_stack(seq.hidden, seq.patch_ids, [[]])  # no router or stage reads positions
            if stacked is not None:
                seq.hidden, seq.residual = stacked[0], stacked[1]
                return seq
        hidden, residual = seq.hidden, None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
            if layers is not None:
                layers[0].append(hidden)
                layers[1].append(residual)
        seq.hidden, seq.residual = hidden, residual
        return seq

    def forward_features(self, x: Tensor, layers: Optional[tuple[list, list]] = None) -> TokenSequence:
        """Images → the final sequence, ``hidden`` = RMSNorm-ed tokens (B, L, D). ``layers``: two lists
        that receive every block's (hidden, residual)."""
        seq = self.forward_blocks(x, layers)
        seq.hidden, seq.residual = self.final_norm(seq.hidden, seq.residual), None
        return seq

    def forward_detailed(self, x: Tensor, return_layers: bool = False) -> VimOutput:
        """Forward pass returning logits, final normalised tokens and optionally per-layer states."""
        layers: tuple[list, list] = ([], [])
        feat = self.forward_features(x, layers if return_layers else None)
        prefix = feat.prefix()
        return VimOutput(self.forward_head(prefix), prefix[:, 0], feat.patches(), layers[0], layers[1])

    @torch.no_grad()
    def class_token_influence(self, layer_residual: Sequence[Tensor], layers: Sequence[int]) -> Tensor:
        """(len(layers), B, M): each patch's share of what reaches the class token inside each of ``layers``' mixers
        (:meth:`BiMambaMixer.token_influence`, normalised to sum 1 per image and layer), from the residual streams
        that :meth:`forward_detailed` returns with ``return_layers=True`` (each block's mixer reads its norm)."""
        if self.layout.num_prefix != 1:
            raise ValueError(f"class_token_influence needs one class token; {type(self).__name__} has "
                             f"{self.layout.num_prefix} prefix tokens")
        shares = []
        for i in layers:
            u = self.layers[i].norm(layer_residual[i])
            (cls,) = self.layout.shared_positions(u.shape[1] - 1)
            w = self.layers[i].mixer.token_influence(u, cls)
            w = torch.cat([w[:, :cls], w[:, cls + 1:]], 1)
            shares.append(w / w.sum(1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny))
        return torch.stack(shares)

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) → logits (B, num_classes); the final norm on the prefix tokens only
        (:meth:`final_prefix`: the values of :meth:`forward_features` at those tokens). At eager CPU inference the
        whole forward is one extension call where :meth:`fused_logits` applies (the same values)."""
        if not self.training and isinstance(x, Tensor):
            logits = self.fused_logits(x)
            if logits is not None:
                return logits
        return self.forward_head(self.final_prefix(self.forward_blocks(x)))


# --------------------------------------------------------------------------------- registry
@register_model
def vim_tiny(**kwargs) -> VisionMamba:
    """Vim-T: D=192, 24 layers, patch 16 (7.148M parameters); ckpt vim_t_midclstok_76p1acc.pth."""
    return build_model(VisionMamba, "vim_tiny", "vim", "tiny", **kwargs)


@register_model
def vim_small(**kwargs) -> VisionMamba:
    """Vim-S: D=384, 24 layers, patch 16 (25.797M parameters); ckpt vim_s_midclstok_80p5acc.pth."""
    return build_model(VisionMamba, "vim_small", "vim", "small", **kwargs)


@register_model
def vim_base(**kwargs) -> VisionMamba:
    """Vim-B: D=768, 24 layers, patch 16 (97.598M parameters); ckpt vim_b_midclstok_81p9acc.pth."""
    return build_model(VisionMamba, "vim_base", "vim", "base", **kwargs)
