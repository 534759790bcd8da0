"""DyVM: a Vim-family model with token pruning (three stages) and per-image SSM branch selection.

Training (``model.train()``; ``model(x)`` returns :class:`DyVMTrainOutput`): tokens are never
removed. At each pruning stage a hard Gumbel-softmax decides which patch tokens survive; the
kept ones move to the front (in their original order), the pruned ones to the end, and the
prefix tokens (class token / registers) go where the variant's :class:`~.tokens.PrefixLayout`
puts them for the kept count (Vim: ``num_keep // 2``); a 0/1 mask zeroes pruned tokens inside
both SSM branches. Routers gate each branch by a hard Gumbel-sigmoid. Inference
(``model.eval()``; ``model(x)`` returns logits): each stage keeps exactly ``int(ρ_k · M)``
patches by top-k and physically drops the rest; a branch runs only for the images whose router
says so. Both paths go through :class:`~.tokens.TokenSequence` (``rearrange`` / ``select``), so a
variant only says where its prefix tokens sit (and how its head and router read them).

Under ``torch.compile`` / ``torch.export`` the inference path has no graph break: skipped branches
are masked instead of sub-batched (see :mod:`dyvm.export` for what changes in a traced program).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from ..dynamic import (BASELINE_MASKS, KEEP_RATIO_SOURCES, SCORE_SOURCES, TOKEN_SAMPLERS, Noise, TokenPredictor,
                       gumbel_sigmoid_gate, gumbel_softmax_keep, gumbel_stratified_keep, gumbel_topk_keep,
                       official_baseline_keep, select_keep)
from ..kernels import mix_cpp
from ..kernels.custom_ops import tracing
from ..kernels.mix_cpp import forward_hooked, tree_hooked
from .registry import register_model
from .tokens import TokenSequence, gather_tokens, kept_first_order, shared_index
from .presets import build_model
from .vim import VisionMamba

_CPU = torch.device("cpu")  # the fused router reads its prefix positions from a CPU index


class DyVMTrainOutput(NamedTuple):
    """What the DyVM losses need (training forward). B images, M patches, S stages, depth layers.

    logits (B, C); tokens (B, M, D): final normalised non-class tokens in rearranged order
    (pruned ones included, at the end; only the K kept ones when training dropped the pruned tail, and
    token_policy and current_pos likewise); decisions: S × (B, M) hard 0/1 keep decisions in the
    order that entered each stage (always all M slots); token_policy (B, M, 1): final, rearranged (kept first);
    current_pos (B, M): original patch index of each slot; gates (depth, B, 2): 0/1 [fwd, bwd];
    cls_pos (B,): the class token's (first prefix token's) final position, None without prefix
    tokens; router_logits (depth, B, 2); prefix_pos (B, P): final positions of all prefix tokens;
    keep_shares: S × (B, M), what the keep-ratio loss averages per stage (see :meth:`DyVM.forward_train`);
    stages: S × :class:`StageSlots`, the slots as each stage met them (what teacher-guided keep losses read).
    """

    logits: Tensor
    tokens: Tensor
    decisions: list[Tensor]
    token_policy: Tensor
    current_pos: Tensor
    gates: Tensor
    cls_pos: Optional[Tensor]
    router_logits: Tensor
    prefix_pos: Tensor
    keep_shares: list[Tensor]
    stages: Sequence["StageSlots"] = ()


class StageSlots(NamedTuple):
    """One pruning stage's view of the sequence it pruned, m slots (M, or fewer after a dropped tail):
    patch_ids (B, m) the original patch index at each slot; live (B, m) 0/1, the slots still in play; keep_logp
    (B, m, 2) the predictor's log [p(keep), p(drop)], None where the predictor did not choose (forced masks,
    random or static scores)."""

    patch_ids: Tensor
    live: Tensor
    keep_logp: Optional[Tensor]


class DyVMInferenceOutput(NamedTuple):
    """Inference forward. keep_indices: S × (B, K_s) original patch indices kept after each stage
    (ascending); keep_indices_local: S × (B, K_s) indices into the previous stage's tokens;
    cls_positions: the class token's position before and after each stage ([M//2, K_1//2, ...] for
    Vim); gates/router_logits (depth, B, 2); tokens (B, K_S, D): final normalised kept patch tokens;
    current_pos (B, K_S); layer_hidden/residual per layer if asked; prefix_positions: (S+1) × (P,)
    positions of every prefix token; features: the final sequence (hidden RMSNorm-ed). tokens and features are
    None from ``forward_inference(..., features=False)``."""

    logits: Tensor
    keep_indices: list[Tensor]
    keep_indices_local: list[Tensor]
    cls_positions: list[int]
    gates: Tensor
    router_logits: Tensor
    tokens: Optional[Tensor]
    current_pos: Tensor
    pred_scores: list[Tensor]
    layer_hidden: list[Tensor]
    layer_residual: list[Tensor]
    prefix_positions: list[Tensor]
    features: Optional[TokenSequence]


def _check_ratio(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


class DyVM(VisionMamba):
    """Dynamic Vision Mamba.

    Args (besides the Vim ones):
        pruning_loc: layers before which tokens are pruned (sorted, distinct, in [1, depth-1]; a list
            of negative indices counts from the end, as in Python: [-3, -2, -1] prunes before the last
            three layers at any depth, as many as the model has after layer 0); default [depth/4,
            depth/2, 3·depth/4], the official [6, 12, 18] at depth 24.
        token_keep_ratio: ρ; the cumulative keep ratios are ρ, ρ², ρ³, ... Or give
        token_ratio: the explicit list of cumulative ratios (one per stage), as the official code.
        block_keep_ratio: β, the target fraction of branches that run (used by the loss).
        router_tau: temperature of the training Gumbel-sigmoid (2).
        router_threshold: probability above which a branch runs (0.5 ⇔ logit > 0).
        score: where keep scores come from: ``predictor`` | ``random`` | ``static``.
        use_routers / use_pruning: False gives the paper's token-only / block-only ablations.
        predictor_input: what the keep predictors read: ``hidden`` (h + r, the paper), ``B`` or
            ``delta`` (the Predictor-B / Predictor-Δ ablations: the preceding layer's direction-averaged
            B (N channels) or pre-softplus Δ (2D channels)).
        token_sampler: how training draws the keep decisions of the predictor: ``gumbel`` (the
            paper: a hard Gumbel-softmax per token, the kept count varies per image), ``topk``
            (Gumbel-top-k: exactly inference's ``int(ρ_k · M)`` tokens per image, not in the paper) or
            ``stratified`` (not in the paper: the live tokens are split into ``int(ρ_k · M)`` contiguous
            strata and each keeps its best token, Gumbel-max in training, the argmax at inference: spread
            over the sequence like static selection, chosen per image like top-k).
        slot_prior: a learnt positional keep prior per live slot of each stage (needs ``topk``, whose
            live counts are fixed), initialised to favour the evenly spaced slots that static pruning
            keeps, so a fresh predictor starts from static selection and learns to depart from it
            (not in the paper). ``slot_prior_strength``: the initial logit offset (± this value).
        pruned_token_grad: a zero-valued straight-through path from the pruned tokens into the prefix
            tokens at each pruning stage (not in the paper): the values, hence train ≡ inference, are
            unchanged, but the keep predictor also gets a gradient for the tokens it pruned, ⟨∂L/∂prefix,
            token⟩ ("would adding this token to the class token lower the loss?"), where a dropped tail gives
            it none (in the paper's layout, ``drop_pruned_tail=False``, a pruned token's decision gets a
            gradient only through its mask in the backward SSM branch, which reads it before the kept tokens).
        drop_pruned_tail: training with a sampler that keeps exactly inference's count (``topk``, ``stratified``)
            drops the pruned tail of the sequence after each stage (not in the paper): the same values, less work,
            but the pruned tokens' keep decisions get no gradient. The paper's layout keeps them at the end of the
            sequence, masked in every later layer, where the backward SSM branch reads them before the kept
            tokens, so ∂L/∂decision of a pruned token is not 0 (False: that layout; not with ``stratified``,
            which draws its strata over the live tokens). The nested baselines always drop it (no predictor:
            the same values and gradients).
        token_noise: scale of the Gumbel noise of the ``topk`` sampler (1: sample in proportion to
            p(keep); 0: train on inference's own top-k, deterministic).
        keep_ratio_source: what the keep-ratio loss averages with a sampler that keeps exactly inference's count
            (``topk``, ``stratified``): ``decisions`` (their hard values, as the paper's loss reads its sampler's)
            or ``probabilities`` (the predicted p(keep); not in the paper). The decisions' mean is ρ_k by
            construction there, so their loss passes the predictor no gradient but the rounding of
            ``int(ρ_k · M)``, which pushes every p(keep) up: the keep log-probabilities saturate at 0 and
            inference chooses among ties, spreading its picks evenly over the tied slots
            (:func:`~dyvm.dynamic.top_k_spreading_ties`: the same slots of every image, static selection's rule
            among them; the default demo's DyVM keeps 14 such slots at its first stage). With ``probabilities``
            the loss holds the predicted keep ratio at ρ_k and the predictor ranks the tokens (measured in
            docs/study: no better top-1 at the demo's point).
            The paper's ``gumbel`` sampler always reads its decisions.
        baseline_masks: the training masks of ``score`` ``random`` / ``static``: ``official`` (the paper's
            Pruning_Strategy ablations: masks over all the rearranged slots, not nested in the previous stage's
            keep, so pruned tokens can be revived; random draws ``int(B·M·ρ_k)`` slots over the whole batch,
            static the same evenly spaced slots for every image) or ``nested`` (not in the paper: the inference
            rule in training too, per image among the live tokens, the pruned tail dropped). Inference is the
            same for both: k random / evenly spaced live tokens per image.
    """

    is_dynamic = True
    PREDICTOR_INPUTS = ("hidden", "B", "delta")

    def __init__(self, pruning_loc: Optional[Sequence[int]] = None, token_keep_ratio: Optional[float] = None,
                 token_ratio: Optional[Sequence[float]] = None, block_keep_ratio: float = 0.8,
                 router_tau: float = 2.0, router_threshold: float = 0.5, score: str = "predictor",
                 use_routers: bool = True, use_pruning: bool = True, predictor_input: str = "hidden",
                 token_sampler: str = "gumbel", slot_prior: bool = False, slot_prior_strength: float = 3.0,
                 token_noise: float = 1.0, pruned_token_grad: bool = False, baseline_masks: str = "official",
                 drop_pruned_tail: bool = True, keep_ratio_source: str = "decisions", **vim_kwargs: Any):
        if predictor_input not in self.PREDICTOR_INPUTS:
            raise ValueError(f"predictor_input={predictor_input!r}; expected one of {self.PREDICTOR_INPUTS}")
        if token_sampler not in TOKEN_SAMPLERS:
            raise ValueError(f"token_sampler={token_sampler!r}; expected one of {TOKEN_SAMPLERS}")
        if slot_prior and token_sampler != "topk":
            raise ValueError("slot_prior needs token_sampler='topk' (a positional prior needs fixed live counts)")
        self.token_sampler = token_sampler
        self.slot_prior_strength = float(slot_prior_strength)
        if isinstance(token_noise, bool) or not isinstance(token_noise, (int, float)) or token_noise < 0:
            raise ValueError(f"token_noise must be a number >= 0, got {token_noise!r}")
        self.token_noise = float(token_noise)
        if keep_ratio_source not in KEEP_RATIO_SOURCES:
            raise ValueError(f"keep_ratio_source={keep_ratio_source!r}; expected one of {KEEP_RATIO_SOURCES}")
        self.keep_ratio_source = keep_ratio_source
        self.pruned_token_grad = bool(pruned_token_grad)
        if not drop_pruned_tail and token_sampler == "stratified":
            raise ValueError("drop_pruned_tail=False (--no-drop-pruned-tail, the paper recipe's) needs token_sampler "
                             "'topk' or 'gumbel': the stratified sampler draws its strata over the live tokens only "
                             "(pass --drop-pruned-tail with it)")
        self.drop_pruned_tail = bool(drop_pruned_tail)
        if baseline_masks not in BASELINE_MASKS:
            raise ValueError(f"baseline_masks={baseline_masks!r}; expected one of {BASELINE_MASKS}")
        self.baseline_masks = baseline_masks
        super().__init__(_router=use_routers, **vim_kwargs)
        self.predictor_input_source = predictor_input
        depth = self.depth
        if pruning_loc is None:  # the official [6, 12, 18] for 24 layers, scaled to the depth
            pruning_loc = [depth // 4, depth // 2, 3 * depth // 4]
        pruning_loc = list(pruning_loc) if use_pruning else []
        if any(isinstance(p, bool) or not isinstance(p, int) for p in pruning_loc):
            raise ValueError(f"pruning_loc must be a list of layer indices, got {pruning_loc!r}")
        if pruning_loc and all(p < 0 for p in pruning_loc):  # from the end; on a model too shallow for all
            # of them, the ones that would fall on or before layer 0 are dropped ([-3, -2, -1] at depth 2: [1])
            resolved = [p + depth for p in pruning_loc if p + depth >= 1]
            if not resolved:
                raise ValueError(f"--depth {depth}: a DyVM needs at least 2 layers to prune tokens between them "
                                 "(or pass --no-pruning)" if depth < 2 else
                                 f"pruning_loc={pruning_loc} counts from the end of {depth} layers and leaves no "
                                 "layer after layer 0 to prune before")
            pruning_loc = resolved
        if pruning_loc != sorted(set(pruning_loc)):
            raise ValueError(f"pruning_loc must be sorted and without duplicates, got {pruning_loc}")
        if pruning_loc and (pruning_loc[0] < 1 or pruning_loc[-1] > depth - 1):
            raise ValueError(f"pruning_loc={pruning_loc}: every location must be in [1, {depth - 1}] "
                             f"(pruning happens before a layer; layer 0 sees the full sequence)")
        self.pruning_loc = pruning_loc
        self.use_routers = use_routers
        self.block_keep_ratio = _check_ratio("block_keep_ratio", block_keep_ratio)
        if router_tau <= 0:
            raise ValueError(f"router_tau must be > 0, got {router_tau}")
        self.router_tau = float(router_tau)
        self.router_threshold = 0.5
        self.score = "predictor"
        self.token_ratio: list[float] = []
        self.configure(token_keep_ratio=token_keep_ratio, token_ratio=token_ratio,
                       router_threshold=router_threshold, score=score)
        mixer = self.layers[0].mixer
        width = {"hidden": self.embed_dim, "B": mixer.d_state, "delta": mixer.d_inner}[predictor_input]
        slots = [self.num_patches] + self.keep_counts()[:-1] if slot_prior else [None] * len(pruning_loc)
        self.score_predictors = nn.ModuleList(TokenPredictor(width, n) for n in slots[:len(pruning_loc)])
        self._init_slot_priors()
        self.config.update(pruning_loc=list(pruning_loc), token_ratio=list(self.token_ratio),
                           block_keep_ratio=self.block_keep_ratio, router_tau=self.router_tau,
                           router_threshold=self.router_threshold, use_routers=use_routers,
                           use_pruning=use_pruning, predictor_input=predictor_input, token_sampler=token_sampler,
                           slot_prior=slot_prior, slot_prior_strength=self.slot_prior_strength,
                           token_noise=self.token_noise, pruned_token_grad=self.pruned_token_grad,
                           baseline_masks=baseline_masks, drop_pruned_tail=self.drop_pruned_tail,
                           keep_ratio_source=keep_ratio_source)

    # ----------------------------------------------------------------------------- knobs
    def configure(self, token_keep_ratio: Optional[float] = None, token_ratio: Optional[Sequence[float]] = None,
                  router_threshold: Optional[float] = None, score: Optional[str] = None) -> "DyVM":
        """Change the inference knobs without retraining (keep ratio, router threshold, score source)."""
        if token_keep_ratio is not None and token_ratio is not None:
            raise ValueError("give token_keep_ratio (ρ) or token_ratio (the cumulative list), not both")
        n_stages = len(self.pruning_loc)
        if token_keep_ratio is not None:
            rho = _check_ratio("token_keep_ratio", token_keep_ratio)
            self.token_ratio = [rho ** (k + 1) for k in range(n_stages)]
        elif token_ratio is not None:
            ratios = [_check_ratio("token_ratio", r) for r in token_ratio]
            if len(ratios) != n_stages:
                raise ValueError(f"token_ratio has {len(ratios)} entries but pruning_loc has {n_stages} stages")
            if any(b > a for a, b in zip(ratios, ratios[1:])):
                raise ValueError(f"token_ratio must be cumulative (non-increasing), got {ratios}")
            self.token_ratio = ratios
        elif not self.token_ratio:
            self.token_ratio = [0.7 ** (k + 1) for k in range(n_stages)]
        if router_threshold is not None:
            if not 0.0 < float(router_threshold) < 1.0:
                raise ValueError(f"router_threshold is a probability in (0, 1), got {router_threshold!r}")
            self.router_threshold = float(router_threshold)
        if score is not None:
            if score not in SCORE_SOURCES:
                raise ValueError(f"score={score!r} is not a keep-score source; expected one of {SCORE_SOURCES}")
            self.score = score
        if hasattr(self, "config"):
            self.config.update(token_ratio=list(self.token_ratio), router_threshold=self.router_threshold,
                               score=self.score)
        return self

    def keep_counts(self) -> list[int]:
        """Tokens kept after each stage at inference: ``int(ρ_k · M)``, at least one (where the official
        ``int`` would keep none, e.g. ρ 0.3 over three stages of 16 patches, one patch token survives)."""
        return [max(1, int(r * self.num_patches)) for r in self.token_ratio]

    def reset_dynamic_parameters(self, keep_prior: bool = False) -> None:
        """Fresh predictors (trunc-normal 0.02) and routers (weight 0, bias 5), as when starting from a Vim.

        keep_prior (not in the paper): set each predictor's output bias so that its initial keep
        probability is the stage's relative target ρ_k / ρ_{k-1} instead of 1/2, so short fine-tuning
        runs start near the target keep ratios.
        """
        previous = 1.0
        for predictor, ratio in zip(self.score_predictors, self.token_ratio):
            predictor.reset_parameters()
            if keep_prior:
                p = min(max(ratio / previous, 1e-3), 1 - 1e-3)
                with torch.no_grad():
                    predictor.out_conv[4].bias.copy_(torch.tensor([math.log(p), math.log(1 - p)]))
            previous = ratio
        self._init_slot_priors()
        if self.use_routers:
            for layer in self.layers:
                layer.mixer.reset_router()

    def _init_slot_priors(self) -> None:
        """+strength at the slots static pruning keeps (``floor(linspace(0, n−1, k))``), −strength elsewhere."""
        counts = self.keep_counts()
        for predictor, k in zip(self.score_predictors, counts):
            if predictor.slot_bias is None:
                continue
            n = predictor.slot_bias.shape[0]
            keep = select_keep("static", None, torch.tensor([n]), k)[0]
            with torch.no_grad():
                predictor.slot_bias.fill_(-self.slot_prior_strength).index_fill_(0, keep, self.slot_prior_strength)

    # ----------------------------------------------------------------------------- helpers
    def router_input(self, xz: Tensor, seq: TokenSequence, positions: Optional[list[int]] = None) -> Tensor:
        """What the routers read, (B, 2E): the mean of ``xz`` (B, L, 2E) over the prefix tokens (the
        class token itself for Vim and VideoMamba, the 12 registers for MambaReg). ``positions``: the
        prefix positions when every image has them (inference), read by plain indexing."""
        if positions is not None:
            return xz[:, positions[0]] if len(positions) == 1 else xz[:, positions].mean(1)
        return gather_tokens(xz, seq.prefix_pos).mean(1)

    def _route(self, layer: nn.Module, xz: Tensor, seq: TokenSequence, forced: Optional[Tensor],
               noise: Noise, positions: Optional[list[int]] = None) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """Router logits (B, 2) and the 0/1 gates (B, 2)."""
        if not self.use_routers:
            return None, forced
        head, read = layer.mixer.block_head, self.router_input(xz, seq, positions)
        if (forced is None and not self.training and mix_cpp.router_applies(read, head.weight, head.bias)
                and (tracing() or not forward_hooked(head))):  # the extension blocks' router
            logits, gates = mix_cpp.router(read, head.weight, head.bias, self.router_threshold)
            return logits, gates
        logits = head(read).float()
        if forced is not None:
            gates = forced.to(logits.dtype)
        elif self.training:
            gates = gumbel_sigmoid_gate(logits, noise, self.router_tau, self.router_threshold)
        else:
            gates = (torch.sigmoid(logits) > self.router_threshold).to(logits.dtype)
        return logits, gates

    def _layer(self, i: int, seq: TokenSequence, forced_gates: Optional[Tensor], noise: Noise,
               stats: Optional[list] = None, positions: Optional[list[int]] = None):
        """Block i on ``seq`` in place. Returns (router logits, gates). ``stats``: when a list, the
        mixer's per-token (B̄, Δ̄) are appended (the predictor-input ablations read them); ``positions``:
        the prefix positions shared by every image (inference), or None."""
        layer = self.layers[i]
        if positions is not None and stats is None and forced_gates is None and not self.training:
            # eager CPU inference: the block with its router in one extension call (None where that does not apply)
            fused = layer.fused_forward(seq.hidden, seq.residual, None,
                                        shared_index(tuple(positions), _CPU) if self.use_routers else None,
                                        self.router_threshold)
            if fused is not None:
                seq.hidden, seq.residual = fused[0], fused[1]
                return (fused[2], fused[3]) if self.use_routers else (None, None)
        normed, seq.residual = layer.add_norm(seq.hidden, seq.residual)
        xz = layer.mixer.project_in(normed)
        logits, gates = self._route(layer, xz, seq, None if forced_gates is None else forced_gates[i], noise,
                                    positions)
        if stats is not None:
            stats.append(layer.mixer.token_stats(xz, seq.mask))
        seq.hidden = layer.mixer.mix(xz, seq.mask, gates)
        return logits, gates

    def predictor_input(self, k: int, seq: TokenSequence, stats: Optional[list],
                        positions: Optional[list[int]] = None) -> Tensor:
        """What stage k's predictor reads for each patch slot, (B, N, ·): ``hidden + residual``
        (the paper), or the preceding layer's B̄ / Δ̄ (Predictor-B / Predictor-Δ ablations). ``positions``:
        the prefix positions shared by every image (inference), or None."""
        if self.predictor_input_source == "hidden":
            return seq.patches(seq.hidden + seq.residual, positions)
        b_bar, delta_bar = stats[-1]
        return seq.patches(b_bar if self.predictor_input_source == "B" else delta_bar, positions)

    def _pruned_probe(self, decision: Tensor, seq: TokenSequence) -> Tensor:
        """(B, D), exactly zero: the mean over the pruned slots of ``(p − p.detach()) · token``, where p is the
        straight-through part of ``decision`` (B, N) and token the slot's stream (hidden + residual)."""
        if seq.prefix_pos.shape[1] == 0:
            raise ValueError("pruned_token_grad needs prefix tokens (a class token) to carry the probe")
        pruned = (decision.detach() < 0.5).to(decision.dtype)
        weight = (decision - decision.detach()) * pruned                      # 0 in value
        stream = seq.patches(seq.hidden + seq.residual)
        return (weight[..., None] * stream).sum(1) / pruned.sum(1, keepdim=True).clamp(min=1)

    def _stage_rule_fusable(self) -> bool:
        """Whether the extension's pruning stage applies this model's selection rule (the predictor's score with
        top-k, the paper's predictor input, at inference); tensors and hooks are checked elsewhere."""
        return (not self.training and self.score == "predictor" and self.token_sampler != "stratified"
                and self.predictor_input_source == "hidden")

    def _stages_fusable(self) -> bool:
        """Whether the extension's pruning stage computes what this model's Python stages would: the rule, and no
        hooks on a predictor (which the stage would not call)."""
        return self._stage_rule_fusable() and not tree_hooked(self.score_predictors)

    def fused_segments(self) -> Optional[tuple[list[list[int]], bool, float, list[tuple[int, int]]]]:
        """The stacked call's segments, routing and stages (see :meth:`VisionMamba.fused_segments`) at this model's
        patch count, for :meth:`_stacked_inference` and :meth:`fused_logits` alike; None where the extension's stage
        would not apply this model's selection rule."""
        if not self._stage_rule_fusable():
            return None
        counts = self.keep_counts()
        positions = [self.layout.shared_positions(self.num_patches)]
        positions += [self.layout.shared_positions(keep) for keep in counts]
        return positions, self.use_routers, self.router_threshold, list(zip(self.pruning_loc, counts))

    def fused_stage_params(self) -> list[tuple[list[Tensor], float]]:
        return [(predictor.fused_params(), predictor.in_conv[0].eps) for predictor in self.score_predictors]

    def fused_roots(self) -> list[nn.Module]:
        return [self.layers, self.score_predictors]

    def _stacked_inference(self, seq: TokenSequence):
        """Every block and stage in one extension call (:meth:`fused_stack`) on a freshly embedded ``seq``, or None
        where it does not apply. Returns (the final sequence, S × patch ids, S × kept slots, S × log-probabilities,
        S + 1 prefix positions, router logits, gates, the S + 1 prefix positions as Python ints)."""
        plan = self.fused_segments()  # (the stack's plan checks the predictors' hooks with the blocks')
        if plan is None:
            return None
        segments, routed, threshold, stages = plan
        out = self.fused_stack(seq.hidden, seq.patch_ids, segments, routed, threshold, stages)
        if out is None:
            return None
        batch, n = seq.hidden.shape[0], len(stages)
        ids, local, logp = out[3:3 + 3 * n:3], out[4:4 + 3 * n:3], out[5:5 + 3 * n:3]
        # one cached tensor for every boundary (each holds the P prefix positions), unbound into fresh views
        prefix = list(shared_index(tuple(p for segment in segments for p in segment), seq.hidden.device)
                      .view(len(segments), -1).unbind(0))
        final = TokenSequence(out[0], out[1], prefix[-1].expand(batch, -1) if stages else seq.prefix_pos, out[2],
                              seq.layout)
        if self.use_routers:
            return final, ids, local, logp, prefix, out[-2], out[-1], segments
        unrouted = lambda: self._stack([None] * self.depth, batch, seq.hidden.device)  # noqa: E731 (as the loop)
        return final, ids, local, logp, prefix, unrouted(), unrouted(), segments

    def _fused_stage(self, k: int, seq: TokenSequence, keep: int,
                     positions: Optional[list[int]]) -> Optional[tuple[TokenSequence, Tensor, Tensor]]:
        """Stage k of eager CPU inference (every image with its prefix tokens at ``positions``) in one extension
        call: the predictor, the top-``keep`` and ``seq.select``, identical values. Returns (the new sequence, the
        kept patch slots (B, keep), the predictor's log-probabilities (B, N, 2)), or None where the Python path
        runs (another score source or sampler, autograd, tracing, hooks, weights not float32)."""
        if positions is None or seq.residual is None or not self._stages_fusable():
            return None
        predictor = self.score_predictors[k]
        params = predictor.fused_params()
        if not mix_cpp.applies(seq.hidden, params + [seq.residual], self.layers[0].mixer.scan_backend):
            return None
        new = seq.layout.shared_positions(keep)
        hidden, residual, patch_ids, local, logp = mix_cpp.prune_stage(
            seq.hidden, seq.residual, seq.patch_ids, params, predictor.in_conv[0].eps, keep, positions, new)
        pos = torch.tensor(new, dtype=torch.long).expand(hidden.shape[0], -1)
        return replace(seq, hidden=hidden, residual=residual, prefix_pos=pos, patch_ids=patch_ids), local, logp

    def _stack(self, items: list[Optional[Tensor]], batch: int, device) -> Tensor:
        if any(t is None for t in items):
            return torch.ones(len(items), batch, 2, device=device)
        return torch.stack(items)

    def _check_forced(self, keep_masks, gates, batch: int) -> None:
        if keep_masks is not None and len(keep_masks) != len(self.pruning_loc):
            raise ValueError(f"keep_masks must hold {len(self.pruning_loc)} tensors (one per stage), got {len(keep_masks)}")
        if gates is not None and tuple(gates.shape) != (self.depth, batch, 2):
            raise ValueError(f"gates must have shape (depth={self.depth}, B={batch}, 2), got {tuple(gates.shape)}")

    # ----------------------------------------------------------------------------- training
    def forward_train(self, x: Tensor, noise: Noise = None, keep_masks: Optional[Sequence[Tensor]] = None,
                      gates: Optional[Tensor] = None) -> DyVMTrainOutput:
        """Masked, rearranged forward used in training (see the module docstring).

        noise: Exp(1) source for the Gumbel draws, consumed per layer in the official order (the
        token sampler at a pruning layer, then the router's two draws). keep_masks: optional forced
        keep sets, S × (B, M) bool in original patch order; gates: optional forced (depth, B, 2).

        The output's ``keep_shares`` (what the keep-ratio loss averages) are the decisions, or with
        ``keep_ratio_source="probabilities"`` and an exact-count sampler the predictor's p(keep) (0 at slots not live).
        """
        seq = self.embed_sequence(x)
        batch, device = seq.hidden.shape[0], seq.hidden.device
        self._check_forced(keep_masks, gates, batch)
        num_patches = seq.num_patches
        seq.policy = seq.hidden.new_ones(batch, num_patches, 1, dtype=torch.float32)
        stats = [] if self.predictor_input_source != "hidden" else None
        decisions, keep_shares, stages, all_logits, all_gates = [], [], [], [], []
        stage_of = {loc: k for k, loc in enumerate(self.pruning_loc)}
        for i in range(self.depth):
            if i in stage_of:
                k = stage_of[i]
                policy = seq.policy[..., 0]
                share = logp = None  # what the keep-ratio loss reads, where not the decision itself
                if keep_masks is not None:
                    decision = keep_masks[k].to(device).gather(1, seq.patch_ids).float() * policy
                elif self.score == "predictor":
                    logp = self.score_predictors[k](self.predictor_input(k, seq, stats), seq.policy)
                    if self.token_sampler == "topk":
                        decision = gumbel_topk_keep(logp, policy, self.keep_counts()[k], noise, self.token_noise) * policy
                    elif self.token_sampler == "stratified":
                        decision = gumbel_stratified_keep(logp, self.keep_counts()[k], noise, self.token_noise) * policy
                    else:
                        decision = gumbel_softmax_keep(logp, noise) * policy
                    if self.token_sampler != "gumbel" and self.keep_ratio_source == "probabilities":
                        share = logp[..., 0].exp() * policy
                elif self.baseline_masks == "official":  # random / static as the paper's ablation trains them
                    decision = official_baseline_keep(self.score, batch, seq.num_patches, self.token_ratio[k], noise,
                                                      device)
                elif self.score == "random":
                    # k uniformly random live tokens: Gumbel-top-k of equal scores, drawn from the per-sample
                    # noise (reproducible per image, and the global RNG, hence the augmentations, untouched)
                    decision = gumbel_topk_keep(policy.new_zeros(*policy.shape, 1), policy, self.keep_counts()[k],
                                                noise).detach()
                else:
                    alive = policy.sum(1).long()
                    keep = select_keep(self.score, None, alive, self.keep_counts()[k])
                    decision = torch.zeros_like(policy).scatter_(1, keep, 1.0)
                # over all M slots, as the full layout has them: the slots a dropped tail held are pruned (0), so
                # the keep-ratio loss compares the kept share of M with ρ_k, not the share of the live tokens
                decisions.append(nn.functional.pad(decision, (0, num_patches - decision.shape[1])))
                keep_shares.append(decisions[-1] if share is None else
                                   nn.functional.pad(share, (0, num_patches - share.shape[1])))
                stages.append(StageSlots(seq.patch_ids, policy, logp))
                probe = (self._pruned_probe(decision, seq) if self.pruned_token_grad and self.score == "predictor"
                         and keep_masks is None else None)
                # a sampler that keeps exactly inference's count lets training drop the pruned tail
                exact = keep_masks is None and (self.drop_pruned_tail and self.token_sampler != "gumbel"
                                                if self.score == "predictor" else self.baseline_masks == "nested")
                seq = seq.rearrange(decision, self.keep_counts()[k] if exact else None)
                if probe is not None:  # + exactly 0 at the prefix tokens: values unchanged, gradient kept
                    at_prefix = torch.zeros(seq.hidden.shape[:2], dtype=seq.hidden.dtype, device=device)
                    at_prefix.scatter_(1, seq.prefix_pos, 1.0)
                    seq.hidden = seq.hidden + at_prefix[..., None] * probe[:, None, :].to(seq.hidden.dtype)
            logits, gate = self._layer(i, seq, gates, noise, stats)
            all_logits.append(logits)
            all_gates.append(gate)
        feat = self.final_norm(seq.hidden, seq.residual)
        prefix_pos = seq.prefix_pos
        cls_pos = prefix_pos[:, 0] if prefix_pos.shape[1] else None
        return DyVMTrainOutput(self.forward_head(seq.prefix(feat)), seq.patches(feat), decisions,
                               seq.policy.detach(), seq.patch_ids, self._stack(all_gates, batch, device), cls_pos,
                               self._stack(all_logits, batch, device), prefix_pos, keep_shares, stages)

    # ----------------------------------------------------------------------------- inference
    def forward_inference(self, x: Tensor, keep_indices: Optional[Sequence[Tensor]] = None,
                          gates: Optional[Tensor] = None, return_layers: bool = False,
                          features: bool = True) -> DyVMInferenceOutput:
        """Pruned forward: tokens physically removed, skipped branches not computed.

        keep_indices: optional forced keep sets, S × (B, K_s) original patch indices (each a subset
        of the previous stage's); gates: optional forced (depth, B, 2) 0/1. features=False: the final norm
        runs on the prefix tokens only (what the head reads; the same logits) and ``tokens`` and ``features``
        are None.
        """
        seq = self.embed_sequence(x)
        batch, device = seq.hidden.shape[0], seq.hidden.device
        m = self.num_patches
        if gates is not None and tuple(gates.shape) != (self.depth, batch, 2):
            raise ValueError(f"gates must have shape (depth={self.depth}, B={batch}, 2), got {tuple(gates.shape)}")
        stats = [] if self.predictor_input_source != "hidden" else None
        all_logits, all_gates, layer_hidden, layer_residual = [], [], [], []
        stage_of = {loc: k for k, loc in enumerate(self.pruning_loc)}
        counts = self.keep_counts()
        # every image has its prefix tokens at the same positions here, the layout's for the patch count (also
        # for an empty batch); Python ints, the routers index them directly (a traced program keeps the gather)
        shared = lambda: (None if torch.compiler.is_compiling()  # noqa: E731
                          else seq.layout.shared_positions(seq.num_patches))
        # (P,) per stage boundary: the traced program's own tensor, else the shared ints as one
        current = lambda: (seq.prefix_pos[0] if positions is None  # noqa: E731
                           else torch.tensor(positions, dtype=torch.long, device=device))
        positions = shared()
        kept, kept_local, pred_scores = [], [], []
        prefix_ints = [positions]  # the prefix positions as Python ints per boundary (None where traced)
        stacked = None  # every block and stage in one extension call where that applies
        if keep_indices is None and gates is None and not return_layers and stats is None and positions is not None:
            stacked = self._stacked_inference(seq)
        if stacked is not None:
            seq, kept, kept_local, pred_scores, prefix_positions, router_logits, all_gates, prefix_ints = stacked
            positions = shared()
        else:
            prefix_positions = [current()]
        for i in range(self.depth if stacked is None else 0):
            if i in stage_of:
                k = stage_of[i]
                n_prev = seq.num_patches
                if keep_indices is not None:
                    member = torch.zeros(batch, m, dtype=torch.bool, device=device)
                    member.scatter_(1, keep_indices[k].to(device), True)
                    member = member.gather(1, seq.patch_ids)
                    n_keep = int(member.sum(1)[0])
                    if not bool((member.sum(1) == n_keep).all()):
                        raise ValueError("keep_indices: every image of a batch must keep the same number of tokens")
                    local = kept_first_order(member.float())[:, :n_keep].sort(dim=1).values
                    seq = seq.select(local, positions)
                elif (fused := self._fused_stage(k, seq, counts[k], positions)) is not None:
                    seq, local, logp = fused
                    pred_scores.append(logp)
                else:
                    logp = alive = None                            # every slot is live here
                    if self.score == "predictor":
                        logp = self.score_predictors[k](self.predictor_input(k, seq, stats, positions))
                        pred_scores.append(logp)
                    else:
                        alive = torch.full((batch,), n_prev, device=device, dtype=torch.long)
                    local = select_keep(self.score, logp, alive, counts[k], stratified=self.token_sampler == "stratified")
                    seq = seq.select(local, positions)
                positions = shared()
                kept_local.append(local)
                kept.append(seq.patch_ids)
                prefix_positions.append(current())
                prefix_ints.append(positions)
            logits, gate = self._layer(i, seq, gates, None, stats, positions)
            all_logits.append(logits)
            all_gates.append(gate)
            if return_layers:
                layer_hidden.append(seq.hidden)
                layer_residual.append(seq.residual)
        if stacked is None:
            router_logits, all_gates = self._stack(all_logits, batch, device), self._stack(all_gates, batch, device)
        if features:
            feat = self.final_norm(seq.hidden, seq.residual)
            prefix = seq.prefix(feat)
        else:
            feat, prefix = None, self.final_prefix(seq)
        # Python ints would break a compiled graph: left empty there (prefix_positions has them as tensors)
        cls_positions = ([p[0] for p in prefix_ints] if self.num_prefix_tokens
                         and not torch.compiler.is_compiling() else [])
        return DyVMInferenceOutput(self.forward_head(prefix), kept, kept_local, cls_positions, all_gates, router_logits,
                                   None if feat is None else seq.patches(feat, positions), seq.patch_ids, pred_scores,
                                   layer_hidden, layer_residual, prefix_positions,
                                   None if feat is None else replace(seq, hidden=feat, residual=None))

    def forward_features(self, x: Tensor, layers: Optional[tuple[list, list]] = None) -> TokenSequence:
        """The pruned inference path's final sequence, ``hidden`` = RMSNorm-ed kept tokens (B, L_S, D)."""
        out = self.forward_inference(x, return_layers=layers is not None)
        if layers is not None:
            layers[0].extend(out.layer_hidden)
            layers[1].extend(out.layer_residual)
        return out.features

    def forward_detailed(self, x: Tensor, return_layers: bool = False) -> DyVMInferenceOutput:  # type: ignore[override]
        return self.forward_inference(x, return_layers=return_layers)

    def forward(self, x: Tensor, noise: Noise = None):  # type: ignore[override]
        """Training: :class:`DyVMTrainOutput`; eval: logits (B, num_classes)."""
        if self.training:
            return self.forward_train(x, noise=noise)
        logits = self.fused_logits(x) if isinstance(x, Tensor) else None
        return logits if logits is not None else self.forward_inference(x, features=False).logits


# --------------------------------------------------------------------------------- registry
@register_model
def dyvm_vim_tiny(**kwargs: Any) -> DyVM:
    """DyVM on Vim-T: ρ=0.9 (keeps 176/158/142 of 196 tokens), β=0.8."""
    return build_model(DyVM, "dyvm_vim_tiny", "vim", "tiny", **kwargs)


@register_model
def dyvm_vim_small(**kwargs: Any) -> DyVM:
    """DyVM on Vim-S: ρ=0.7 (keeps 137/96/67 of 196 tokens), β=0.8."""
    return build_model(DyVM, "dyvm_vim_small", "vim", "small", **kwargs)


@register_model
def dyvm_vim_base(**kwargs: Any) -> DyVM:
    """DyVM on Vim-B: ρ=0.7, β=0.7."""
    return build_model(DyVM, "dyvm_vim_base", "vim", "base", **kwargs)
