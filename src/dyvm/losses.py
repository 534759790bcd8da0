"""DyVM training loss (spec §4): classification + keep-ratio losses + distillation from a frozen Vim.

    loss = L_cls + w_tok · L_tok / S + w_blk · L_blk + w_dist · (L_KL + L_MSE)

L_tok = Σ_k mean_b (mean_j dec^k_bj − ρ_k)²   (per-sample keep ratio, over all M slots; with a sampler that keeps
        exactly int(ρ_k·M) tokens (top-k, stratified; not in the paper) the predicted p(keep) in place of dec)
L_blk = (mean over layers, images, branches of the gates − β)²   (one batch-global mean; with layer weights,
        the layers' means weighted, e.g. by their branches' cost at inference: ``block_loss_weighting="cost"``)
L_KL  = KL(teacher ‖ student) on logits, batch mean
L_MSE = mean squared error between the student's kept final tokens and the teacher's tokens at
        the same original positions.
Not in the paper, off unless asked (``keep_guidance`` w_guide > 0): + w_guide · L_guide, the stages' mean binary
cross-entropy between the predictor's p(keep) and the frozen teacher's own choice at each stage (its live patches
with the most class-token influence from the stage's layer on: :func:`teacher_keep_scores`).
The token-only and block-only ablations drop the terms that do not apply (block-only also drops
L_MSE, as the official ablation).
"""
from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .flops import branch_macs_per_layer
from .models.dyvm import DyVM, DyVMTrainOutput, StageSlots
from .models.tokens import gather_tokens


def token_ratio_loss(decisions: list[Tensor], token_ratio: list[float]) -> Tensor:
    """Σ_k mean_b (mean_j dec^k_bj − ρ_k)²; decisions S × (B, M) (the model's ``keep_shares`` in training)."""
    return sum(((d.mean(1) - r) ** 2).mean() for d, r in zip(decisions, token_ratio))


BLOCK_LOSS_WEIGHTINGS = ("layers", "cost")


def block_ratio_loss(gates: Tensor, block_keep_ratio: float, layer_weights: Optional[Tensor] = None) -> Tensor:
    """(mean of all gates (depth, B, 2) − β)²; with ``layer_weights`` (depth,) the per-layer means are averaged
    with those weights (normalised here)."""
    if layer_weights is None:
        return (gates.mean() - block_keep_ratio) ** 2
    w = layer_weights.to(gates.device, gates.dtype)
    return ((gates.mean(dim=(1, 2)) * w).sum() / w.sum() - block_keep_ratio) ** 2


def branch_cost_weights(model: DyVM) -> Tensor:
    """(depth,) what one SSM branch of each layer costs at inference (:func:`dyvm.flops.branch_macs_per_layer`)."""
    return torch.tensor(branch_macs_per_layer(model), dtype=torch.float64)


def distill_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(teacher ‖ student), batch mean, τ = 1."""
    return F.kl_div(F.log_softmax(student_logits.float(), -1), F.log_softmax(teacher_logits.float(), -1),
                    reduction="batchmean", log_target=True)


def kept_token_mse(tokens: Tensor, token_policy: Tensor, current_pos: Tensor, teacher_tokens: Tensor) -> Tensor:
    """MSE over kept slots (policy > 0.5) and channels between student tokens (B, M, D) in rearranged
    order and the teacher's tokens (B, M, D) in patch order, matched through ``current_pos`` (B, M)."""
    kept = token_policy[..., 0] > 0.5
    if not bool(kept.any()):
        return tokens.sum() * 0.0
    matched = gather_tokens(teacher_tokens, current_pos)
    return F.mse_loss(tokens[kept].float(), matched[kept].float())


def teacher_keep_scores(teacher: nn.Module, layer_residual: list[Tensor], pruning_loc: list[int]) -> Tensor:
    """(S, B, M): at each stage, each patch's class-token influence in the frozen teacher (its share per layer,
    :meth:`~dyvm.models.vim.VisionMamba.class_token_influence`) summed over the stage's layer and every later one,
    in patch order. The layers after the stage count: the stage's layer alone chose worse than trained static
    selection in docs/study's twenty-second round."""
    first = min(pruning_loc)
    shares = teacher.class_token_influence(layer_residual, range(first, teacher.depth))  # (depth - first, B, M)
    from_layer = shares.flip(0).cumsum(0).flip(0)   # [j - first]: the sum over layers j .. depth - 1
    return from_layer[[loc - first for loc in pruning_loc]]


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, inputs: Tensor, guidance_loc: Optional[list[int]] = None) -> SimpleNamespace:
    """The frozen teacher's logits (B, C), final patch tokens (B, M, D) and, with ``guidance_loc`` (the student's
    pruning layers), its keep scores (S, B, M) (:func:`teacher_keep_scores`; else None)."""
    out = teacher.forward_detailed(inputs, return_layers=guidance_loc is not None)
    scores = None if guidance_loc is None else teacher_keep_scores(teacher, out.layer_residual, guidance_loc)
    return SimpleNamespace(logits=out.logits, tokens=out.tokens, keep_scores=scores)


def keep_guidance_loss(stages: list[StageSlots], keep_scores: Tensor, keep_counts: list[int]) -> Tensor:
    """Mean over stages of the binary cross-entropy, averaged over each stage's live slots, between the predictor's
    p(keep) (``stages[k].keep_logp``) and the teacher's choice: 1 at the ``keep_counts[k]`` live slots whose
    patches score highest in ``keep_scores[k]`` (B, M) (patch order, read through ``stages[k].patch_ids``), 0 at the
    other live slots."""
    total = 0.0
    for stage, scores, count in zip(stages, keep_scores, keep_counts):
        if stage.keep_logp is None:
            raise ValueError("keep guidance needs the keep predictor's p(keep) at every stage (score='predictor', "
                             "no forced keep masks)")
        live = stage.live > 0.5
        score = scores.to(stage.patch_ids.device).gather(1, stage.patch_ids).masked_fill(~live, float("-inf"))
        target = torch.zeros_like(score).scatter_(1, score.topk(min(count, score.shape[1]), 1).indices, 1.0)
        target = target * live
        logp = stage.keep_logp.float()
        bce = -(target * logp[..., 0] + (1 - target) * logp[..., 1])
        total = total + (bce * live).sum() / live.sum().clamp(min=1)
    return total / len(keep_counts)


class TeacherMemo:
    """A frozen teacher's outputs (logits, final patch tokens, keep scores where asked) remembered by the exact
    bytes of the input batch and of the teacher's weights, in one store shared by the whole process.

    Runs that feed the same batches to the same teacher compute each teacher forward once: the demo's
    DyVM and its trained baselines share the seed, hence the data order and the augmentations. A hit
    returns what the teacher computed for those bytes, so training is unchanged; only time is saved. An
    entry made with keep scores (``guidance_loc``, the stages' layers) also serves runs that want none;
    a run that wants them for other layers computes its own. The store keeps the first ``max_mb`` of
    outputs and then stops adding (runs replay the batches in the same order, so evicting old entries
    for new ones would leave the next run nothing to hit).
    """

    _store: "dict[tuple[str, str], SimpleNamespace]" = {}
    _bytes = 0

    def __init__(self, teacher: nn.Module, max_mb: float, guidance_loc: Optional[list[int]] = None):
        if max_mb <= 0:
            raise ValueError(f"teacher_cache_mb must be > 0 to remember anything, got {max_mb}")
        self.teacher, self.max_bytes = teacher, int(max_mb * 2 ** 20)
        self.guidance_loc = None if guidance_loc is None else list(guidance_loc)
        h = hashlib.blake2b(digest_size=16)
        for name, t in sorted(teacher.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        self.fingerprint = h.hexdigest()
        self.hits = self.misses = 0

    @staticmethod
    def _digest(inputs: Tensor) -> str:
        x = inputs.detach().cpu().contiguous()
        return f"{tuple(x.shape)}:{x.dtype}:" + hashlib.blake2b(x.numpy().tobytes(), digest_size=16).hexdigest()

    @torch.no_grad()
    def __call__(self, inputs: Tensor) -> SimpleNamespace:
        key = (self.fingerprint, self._digest(inputs))
        old = TeacherMemo._store.get(key)
        if old is not None and self.guidance_loc in (None, old.guidance_loc):
            self.hits += 1
            if self.guidance_loc is None and old.keep_scores is not None:  # a plain run reads no keep scores
                return SimpleNamespace(logits=old.logits, tokens=old.tokens, keep_scores=None, guidance_loc=None)
            return old
        self.misses += 1
        out = teacher_outputs(self.teacher, inputs, self.guidance_loc)
        entry = SimpleNamespace(**{k: None if v is None else v.detach().clone() for k, v in vars(out).items()},
                                guidance_loc=self.guidance_loc)
        # an old entry here lacks the keep scores asked for now: this one replaces it
        grown = self._nbytes(entry) - (0 if old is None else self._nbytes(old))
        if TeacherMemo._bytes + grown <= self.max_bytes:
            TeacherMemo._store[key] = entry
            TeacherMemo._bytes += grown
        return entry

    @staticmethod
    def _nbytes(entry: SimpleNamespace) -> int:
        return sum(v.nbytes for v in vars(entry).values() if isinstance(v, Tensor))

    @classmethod
    def clear(cls) -> None:
        cls._store.clear()
        cls._bytes = 0


class DyVMLoss(nn.Module):
    """The full DyVM objective. ``base_criterion(logits, targets)`` is the classification loss
    (soft-target CE with mixup, else CE); ``teacher`` a frozen Vim fed the same inputs.

    Returns ``(loss, parts)`` where parts holds each (unweighted) term as a float.
    """

    def __init__(self, base_criterion: nn.Module, teacher: Optional[nn.Module], token_ratio: list[float],
                 block_keep_ratio: float, token_weight: float = 10.0, block_weight: float = 10.0,
                 distill_weight: float = 0.5, token_loss: bool = True, block_loss: bool = True,
                 token_distill: bool = True, block_layer_weights: Optional[Tensor] = None,
                 keep_guidance: float = 0.0, pruning_loc: Optional[list[int]] = None,
                 keep_counts: Optional[list[int]] = None):
        super().__init__()
        for name, w in dict(token_weight=token_weight, block_weight=block_weight, distill_weight=distill_weight,
                            keep_guidance=keep_guidance).items():
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        if keep_guidance > 0 and (teacher is None or not pruning_loc or keep_counts is None):
            raise ValueError("keep_guidance needs a frozen teacher and a model whose keep predictors prune "
                             "(pruning_loc and keep_counts)")
        self.keep_guidance, self.pruning_loc, self.keep_counts = keep_guidance, pruning_loc, keep_counts
        self.base_criterion = base_criterion
        self.teacher = teacher
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.token_ratio, self.block_keep_ratio = list(token_ratio), block_keep_ratio
        self.token_weight, self.block_weight, self.distill_weight = token_weight, block_weight, distill_weight
        self.teacher_memo: Optional[TeacherMemo] = None  # set by remember_teacher()
        self.token_loss, self.block_loss, self.token_distill = token_loss and bool(token_ratio), block_loss, token_distill
        self.block_layer_weights = block_layer_weights

    @classmethod
    def for_model(cls, model: DyVM, base_criterion: nn.Module, teacher: Optional[nn.Module] = None,
                  block_loss_weighting: str = "layers", keep_guidance: float = 0.0, **weights: float) -> "DyVMLoss":
        """The loss of ``model``'s variant: token+block, token-only (no routers) or block-only (no pruning).
        ``block_loss_weighting``: ``layers`` (the paper: every layer's branches count alike) or ``cost`` (each
        layer weighted by what its branches cost at inference, :func:`branch_cost_weights`). ``keep_guidance``:
        the weight of the teacher-guided keep loss (:func:`keep_guidance_loss`; 0: off, the paper)."""
        if block_loss_weighting not in BLOCK_LOSS_WEIGHTINGS:
            raise ValueError(f"block_loss_weighting={block_loss_weighting!r}; expected one of {BLOCK_LOSS_WEIGHTINGS}")
        pruning, routing = bool(model.pruning_loc), model.use_routers
        if keep_guidance > 0 and not (pruning and model.score == "predictor"):
            raise ValueError("keep_guidance trains the keep predictors: it needs token pruning with score='predictor'")
        layer_weights = branch_cost_weights(model) if routing and block_loss_weighting == "cost" else None
        return cls(base_criterion, teacher, model.token_ratio, model.block_keep_ratio,
                   token_loss=pruning and model.score == "predictor", block_loss=routing,
                   token_distill=pruning or not routing, block_layer_weights=layer_weights,
                   keep_guidance=keep_guidance, pruning_loc=list(model.pruning_loc) if pruning else None,
                   keep_counts=model.keep_counts() if pruning else None, **weights)

    def remember_teacher(self, max_mb: float) -> "DyVMLoss":
        """Remember the teacher's outputs per input batch (see :class:`TeacherMemo`)."""
        if self.teacher is not None:
            self.teacher_memo = TeacherMemo(self.teacher, max_mb, self._guidance_loc())
        return self

    def _guidance_loc(self) -> Optional[list[int]]:
        return self.pruning_loc if self.keep_guidance > 0 else None

    def forward(self, inputs: Tensor, outputs: DyVMTrainOutput, targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        loss = self.base_criterion(outputs.logits.float(), targets)
        parts = {"cls": loss.item()}
        if self.token_loss:
            tok = token_ratio_loss(outputs.keep_shares, self.token_ratio)
            loss = loss + self.token_weight * tok / len(self.token_ratio)
            parts["token_ratio"] = tok.item()
        if self.block_loss:
            blk = block_ratio_loss(outputs.gates, self.block_keep_ratio, self.block_layer_weights)
            loss = loss + self.block_weight * blk
            parts["block_ratio"] = blk.item()
        teacher_out = None
        if self.teacher is not None and (self.distill_weight > 0 or self.keep_guidance > 0):
            teacher_out = (self.teacher_memo(inputs) if self.teacher_memo is not None
                           else teacher_outputs(self.teacher, inputs, self._guidance_loc()))
        if self.keep_guidance > 0:
            guide = keep_guidance_loss(outputs.stages, teacher_out.keep_scores, self.keep_counts)
            loss = loss + self.keep_guidance * guide
            parts["keep_guidance"] = guide.item()
        if teacher_out is not None and self.distill_weight > 0:
            kl = distill_kl(outputs.logits, teacher_out.logits)
            distill = kl
            parts["kl"] = kl.item()
            if self.token_distill:
                mse = kept_token_mse(outputs.tokens, outputs.token_policy, outputs.current_pos, teacher_out.tokens)
                distill = distill + mse
                parts["token_mse"] = mse.item()
            loss = loss + self.distill_weight * distill
        parts["loss"] = loss.item()
        return loss, parts


# ------------------------------------------------------------------------- segmentation (variants.md §3)
SEG_RATIO_WEIGHT = 20.0      # both ratio terms of the official segmentation backbone
SEG_AUX_WEIGHT = 0.4         # FCN auxiliary head on the third feature map
SEG_BLOCK_TARGET = 0.8       # β, hard-coded in the official backbone
SEG_IGNORE_INDEX = 255       # mmseg's ignore label


def segmentation_ratio_losses(decisions: list[Tensor], gates: Tensor, token_ratio: list[float],
                              block_keep_ratio: float = SEG_BLOCK_TARGET,
                              weight: float = SEG_RATIO_WEIGHT) -> tuple[Tensor, Tensor]:
    """The backbone's own terms: ``weight · Σ_k mean_b(mean_j dec_k − ρ_k)² / S`` over all M positions
    (decisions S × (B, M); none: 0) and ``weight · (mean of all gates (depth, B, 2) − β)²``."""
    token = (weight * token_ratio_loss(decisions, token_ratio) / len(decisions) if decisions
             else gates.new_zeros((), dtype=torch.float32))
    return token, weight * block_ratio_loss(gates, block_keep_ratio)


def segmentation_loss(decode_logits: Tensor, aux_logits: Tensor, target: Tensor, decisions: list[Tensor],
                      gates: Tensor, token_ratio: list[float], block_keep_ratio: float = SEG_BLOCK_TARGET,
                      aux_weight: float = SEG_AUX_WEIGHT, ratio_weight: float = SEG_RATIO_WEIGHT,
                      ignore_index: int = SEG_IGNORE_INDEX) -> tuple[Tensor, dict[str, float]]:
    """The official segmentation objective (no teacher, no distillation):
    decode CE + 0.4 · auxiliary CE + token ratio term + block ratio term.

    decode_logits / aux_logits (B, K, h, w) are resized bilinearly to the labels ``target`` (B, H, W)
    (mmseg's ``align_corners=False``) before the per-pixel CE, which ignores ``ignore_index``.
    Returns ``(loss, parts)`` with every weighted term as a float.
    """
    def ce(logits: Tensor) -> Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index)

    decode, aux = ce(decode_logits), aux_weight * ce(aux_logits)
    token, block = segmentation_ratio_losses(decisions, gates, token_ratio, block_keep_ratio, ratio_weight)
    parts = dict(decode_ce=decode.item(), aux_ce=aux.item(), token_ratio=token.item(), block_ratio=block.item())
    return decode + aux + token + block, parts


class SegmentationLoss(nn.Module):
    """:func:`segmentation_loss` for a segmenter's training output (:class:`~dyvm.models.segmentation.DenseOutput`),
    called as ``criterion(images, output, labels)`` like :class:`DyVMLoss`. A plain Vim segmenter gets
    decode CE + 0.4 · aux CE only; a DyVM one also the ratio terms of what it prunes and routes."""

    def __init__(self, token_ratio: list[float], block_keep_ratio: Optional[float],
                 ratio_weight: float = SEG_RATIO_WEIGHT, aux_weight: float = SEG_AUX_WEIGHT):
        super().__init__()
        if ratio_weight < 0 or aux_weight < 0:
            raise ValueError(f"ratio_weight and aux_weight must be >= 0, got {ratio_weight}, {aux_weight}")
        self.token_ratio, self.block_keep_ratio = list(token_ratio), block_keep_ratio
        self.ratio_weight, self.aux_weight = ratio_weight, aux_weight

    @classmethod
    def for_model(cls, model: nn.Module, **weights: float) -> "SegmentationLoss":
        dynamic = model.is_dynamic
        token_ratio = model.token_ratio if dynamic and model.pruning_loc else []
        block = model.block_keep_ratio if dynamic and model.use_routers else None
        return cls(token_ratio, block, **weights)

    def forward(self, inputs: Tensor, outputs, targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        gates = outputs.gates if self.block_keep_ratio is not None else outputs.gates.new_ones(1)
        loss, parts = segmentation_loss(outputs.logits, outputs.aux_logits, targets,
                                        outputs.decisions if self.token_ratio else [], gates, self.token_ratio,
                                        self.block_keep_ratio or 1.0, self.aux_weight, self.ratio_weight)
        parts["loss"] = loss.item()
        return loss, parts
