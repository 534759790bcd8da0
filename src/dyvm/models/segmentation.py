"""DyVM segmentation backbone (official ``Semantic_Segmentation/seg/backbone/vim.py``, ``VisionMambaSeg``).

What differs from the classification DyVM: no class token (``pos_embed`` (1, M, D)); the keep
predictor scores all M positions, earlier-pruned ones included (their frozen state), and pruned
tokens are **frozen** in a full-length, original-order buffer from which every later feature
map takes them back at their original positions. The routers read the mean of ``xz`` over the
sequence (training: sum / (Σmask + 1), the official quirk). Dense features are the *mixer
outputs* (not the residual stream, no ``norm_f``) after the ``out_indices`` layers, through the
official neck: fpn1 = ConvT2×2 → BN → GELU → ConvT2×2 (stride 4), fpn2 = ConvT2×2 (8), fpn3 =
identity (16), fpn4 = MaxPool 2 (32). In eval ``model(x)`` returns that list of maps, as the
official backbone does; in training a :class:`DenseOutput` (features plus what the losses need).

With ``num_classes > 0`` the model is a whole segmenter: a :class:`LightFPNHead` decodes the four
maps into per-pixel logits and an :class:`FCNAuxHead` (training only) reads the third map, the
official auxiliary-head idea; ``model(x)`` in eval then returns logits (B, K, H, W) at the input size.
The official UPerHead (pyramid pooling, 3×3 convs of D channels at stride 4) is not provided: at a
56-px canvas it would cost several times the backbone.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dynamic import Noise, gumbel_softmax_keep, top_k_spreading_ties
from ..weights import load_checkpoint, resize_pos_embed
from .dyvm import DyVM
from .presets import build_model
from .registry import register_model
from .tokens import NoPrefix, PrefixLayout, TokenSequence
from .vim import VisionMamba

# The official forward emits the last layer's map only if this literal index is in out_indices
# ("last layer of a 24-layer model"), whatever the depth.
OFFICIAL_LAST_LAYER_INDEX = 23


class DenseOutput(NamedTuple):
    """Segmentation backbone output. features: 4 maps after the neck, (B, D, 4h, 4w), (B, D, 2h, 2w),
    (B, D, h, w), (B, D, h/2, w/2); features_pre_neck: the 4 (B, D, h, w) mixer-output maps;
    decisions: S × (B, M) keep decisions in raster order (training: Gumbel × previous policy);
    keep_indices: S × (B, K_s) kept raster positions (eval); gates, router_logits (depth, B, 2);
    pred_scores: S × (B, M, 2); layer_hidden / layer_residual: per layer, in the sequence layout;
    logits (B, K, 4h, 4w) from the decode head and aux_logits (B, K, h, w) from the auxiliary head
    (None without a head; aux_logits only in training)."""

    features: list[Tensor]
    features_pre_neck: list[Tensor]
    decisions: list[Tensor]
    keep_indices: list[Tensor]
    gates: Tensor
    router_logits: Tensor
    pred_scores: list[Tensor]
    layer_hidden: list[Tensor]
    layer_residual: list[Tensor]
    logits: Optional[Tensor] = None
    aux_logits: Optional[Tensor] = None


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LightFPNHead(nn.Module):
    """A light FPN decode head over the neck's 4 maps (B, D, ·) of strides 4, 8, 16, 32 (relative to
    the patch grid: 4h … h/2): 1×1 lateral convs to C channels (BN, ReLU), top-down upsample-and-add
    from the coarsest map, dropout 0.1, a 1×1 classifier → logits (B, K, 4h, 4w)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, levels: int = 4):
        super().__init__()
        self.laterals = nn.ModuleList(_conv_bn_relu(in_channels, channels, 1) for _ in range(levels))
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        merged = self.laterals[-1](features[-1])
        for lateral, f in zip(reversed(self.laterals[:-1]), reversed(features[:-1])):
            merged = lateral(f) + F.interpolate(merged, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(merged))

    def macs(self, sizes: list[tuple[int, int]]) -> int:
        """Multiply-accumulates per image for feature maps of ``sizes`` (h, w) (convs only)."""
        lat = self.laterals[0][0]
        per_pixel = lat.in_channels * lat.out_channels
        return sum(h * w for h, w in sizes) * per_pixel + \
            sizes[0][0] * sizes[0][1] * self.classifier.in_channels * self.classifier.out_channels


class FCNAuxHead(nn.Module):
    """The official auxiliary head's idea (mmseg FCNHead, one conv) at small width: 3×3 conv D → C,
    BN, ReLU, dropout 0.1, 1×1 classifier → logits (B, K, h, w). Training only."""

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.conv = _conv_bn_relu(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feature: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.conv(feature)))


def restore_full(seq: TokenSequence, x: Tensor, frozen: Tensor) -> Tensor:
    """Live tokens ``x`` (B, N, D) put back at their raster positions over the frozen buffer (B, M, D)
    (which is zero wherever a token is live)."""
    ids = seq.patch_ids[..., None].expand(-1, -1, x.shape[-1])
    return torch.zeros_like(frozen).scatter(1, ids, x.to(frozen.dtype)) + frozen


class SegmentationVariant:
    """What the segmentation backbone changes; mixed in before :class:`VisionMamba` or :class:`DyVM`."""

    FIXED_OPTIONS = {"rms_norm": True, "if_abs_pos_embed": True, "if_rope": False, "if_rope_residual": False,
                     "bimamba_type": "v2", "if_cls_token": False}
    class_row = None

    task = "segmentation"
    AUX_LEVEL = 2  # the auxiliary head reads the third map (official: layer 17's)

    def __init__(self, out_indices: Sequence[int] = (5, 11, 17, 23), pretrained: Optional[str] = None,
                 num_classes: int = 0, final_pool_type: str = "all", drop_path_rate: float = 0.1,
                 if_cls_token: bool = False, decode_channels: int = 64, **kwargs: Any):
        self.out_indices = list(out_indices)
        if not isinstance(decode_channels, int) or decode_channels < 1:
            raise ValueError(f"decode_channels must be a positive integer, got {decode_channels!r}")
        self.decode_channels = decode_channels
        super().__init__(num_classes=num_classes, final_pool_type=final_pool_type, drop_path_rate=drop_path_rate,
                         if_cls_token=if_cls_token, **kwargs)
        depth = self.depth
        emitted = [i for i in self.out_indices if i < depth - 1] + \
            ([depth - 1] if OFFICIAL_LAST_LAYER_INDEX in self.out_indices else [])
        if len(emitted) != 4:
            raise ValueError(f"out_indices={self.out_indices} emits {len(emitted)} feature maps at depth {depth}, "
                             f"the neck takes 4: give 3 layers below {depth - 1} plus the literal "
                             f"{OFFICIAL_LAST_LAYER_INDEX} for the last layer (the official rule)")
        self.config.update(out_indices=self.out_indices)
        if num_classes > 0:
            self.config.update(decode_channels=decode_channels)
        d = self.embed_dim
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2), nn.BatchNorm2d(d), nn.GELU(),
                                  nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str) -> None:
        """The official init from a classification checkpoint: non-strict, head dropped, ``pos_embed``
        adapted by :meth:`checkpoint_filter`, routers reset to weight 0 / bias 5 afterwards."""
        load_checkpoint(self, path, strict=False)
        if self.is_dynamic and self.use_routers:
            for layer in self.layers:
                layer.mixer.reset_router()

    @classmethod
    def checkpoint_filter(cls, state: dict[str, Tensor], model: VisionMamba) -> dict[str, Tensor]:
        """A classification checkpoint into the backbone: its linear head and class token dropped (a
        segmenter's checkpoint keeps its decode head); a pos_embed with one extra row loses **row 0**
        (the official loader, even for a middle-class Vim), then the patch rows are resized
        bicubically to the backbone's grid."""
        
        state = {k: v for k, v in state.items() if k not in ("head.weight", "head.bias") and k != "cls_token"}
        old = state.get("pos_embed")
        if old is not None and old.dim() == 3 and old.shape != model.pos_embed.shape:
            if old.shape[1] == round(old.shape[1] ** 0.5) ** 2 + 1:
                old = old[:, 1:]
            state["pos_embed"] = resize_pos_embed(old, model.num_patches, cls_index=None)
        return state

    def build_layout(self) -> PrefixLayout:
        return NoPrefix()

    def _build_head(self) -> None:
        """No head for a backbone (num_classes 0); else the decode head and the auxiliary head."""
        if self.num_classes > 0:
            self.head = LightFPNHead(self.embed_dim, self.decode_channels, self.num_classes)
            self.aux_head = FCNAuxHead(self.embed_dim, self.decode_channels, self.num_classes)
        else:
            self.head = nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        raise ValueError(f"{type(self).__name__}: the class count of a segmenter is fixed when it is built "
                         f"(num_classes={self.num_classes})")

    def forward_head(self, features: list[Tensor], pre_logits: bool = False) -> list[Tensor]:
        """The neck: 4 maps (B, D, h, w) → strides 4, 8, 16, 32."""
        if pre_logits:
            return features
        return [op(f) for op, f in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), features)]

    def decode(self, out: DenseOutput) -> DenseOutput:
        """``out`` with the decode head's logits (and, in training, the auxiliary head's) filled in."""
        if self.num_classes == 0:
            return out
        aux = self.aux_head(out.features[self.AUX_LEVEL]) if self.training else None
        return out._replace(logits=self.head(out.features), aux_logits=aux)

    def segment(self, out: DenseOutput, size: tuple[int, int]) -> Tensor:
        """Per-pixel logits (B, K, *size): the decode head's, resized bilinearly."""
        logits = out.logits
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def head_macs(self) -> int:
        """The neck's transposed convolutions (2×2, stride 2: D·D·4 per input pixel) and the decode
        head's convolutions (the auxiliary head runs in training only)."""
        h, w = self.patch_embed.grid_size
        per_pixel = self.embed_dim * self.embed_dim * 4
        neck = per_pixel * (h * w + 4 * h * w) + per_pixel * h * w   # fpn1 (two), fpn2 (one)
        if self.num_classes == 0:
            return neck
        return neck + self.head.macs([(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (h // 2, w // 2)])

    def _to_map(self, tokens: Tensor) -> Tensor:
        """(B, M, D) in raster order → (B, D, h, w)."""
        h, w = self.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def _emits(self, layer: int) -> bool:
        return layer in self.out_indices if layer < self.depth - 1 else OFFICIAL_LAST_LAYER_INDEX in self.out_indices


class VimSeg(SegmentationVariant, VisionMamba):
    """Plain Vim segmentation backbone (no pruning, no routers): the same features and neck."""

    def forward_dense(self, x: Tensor) -> DenseOutput:
        seq = self.embed_sequence(x)
        hidden, residual, maps = seq.hidden, None, []
        for i, layer in enumerate(self.layers):
            hidden, residual = layer(hidden, residual)
            if self._emits(i):
                maps.append(self._to_map(hidden))
        ones = hidden.new_ones(self.depth, x.shape[0], 2)
        return self.decode(DenseOutput(self.forward_head(maps), maps, [], [], ones, ones, [], [], []))

    def forward_features(self, x: Tensor, layers=None) -> list[Tensor]:  # type: ignore[override]
        """Images → the 4 pre-neck maps (B, D, h, w)."""
        return self.forward_dense(x).features_pre_neck

    def forward_inference(self, x: Tensor, return_layers: bool = False) -> DenseOutput:
        return self.forward_dense(x)

    def forward(self, x: Tensor):  # type: ignore[override]
        """Backbone: the 4 maps after the neck. Segmenter: :class:`DenseOutput` in training, per-pixel
        logits (B, K, H, W) in eval."""
        out = self.forward_dense(x)
        if self.num_classes == 0:
            return out.features
        return out if self.training else self.segment(out, x.shape[-2:])


class DyVMSeg(SegmentationVariant, DyVM):
    """DyVM segmentation backbone (the official ``VisionMambaSeg``)."""

    predictor_scores_all_positions = True  # frozen tokens are scored too (for FLOPs)

    def __init__(self, predictor_input: str = "hidden", token_sampler: str = "gumbel", pruned_token_grad: bool = False,
                 **kwargs: Any):
        if predictor_input != "hidden":  # the official backbone scores frozen + live h + r only
            raise ValueError(f"predictor_input={predictor_input!r}: the segmentation backbone supports 'hidden' only")
        if token_sampler != "gumbel":  # its forward is the official one: a Gumbel-softmax per token
            raise ValueError(f"token_sampler={token_sampler!r}: the segmentation backbone supports 'gumbel' only")
        if pruned_token_grad:  # the probe goes into a class token, which this backbone does not have
            raise ValueError("pruned_token_grad needs a class token; the segmentation backbone has none")
        super().__init__(predictor_input=predictor_input, token_sampler=token_sampler, **kwargs)

    def router_input(self, xz: Tensor, seq: TokenSequence, positions: Optional[list[int]] = None) -> Tensor:
        """Mean of ``xz`` over the sequence; training divides by (Σmask + 1) instead (official)."""
        if seq.mask is None:
            return xz.mean(1)
        return xz.sum(1) / (seq.mask.sum(1) + 1)

    def forward_dense(self, x: Tensor, noise: Noise = None, return_layers: bool = False) -> DenseOutput:
        """Both modes (``self.training``): training masks and rearranges (kept first, raster order
        within each group), inference gathers the kept tokens."""
        if self.score != "predictor":
            raise ValueError(f"score={self.score!r}: the segmentation backbone keeps tokens by its predictor only")
        seq = self.embed_sequence(x)
        batch, m = seq.hidden.shape[:2]
        frozen_h = seq.hidden.new_zeros(seq.hidden.shape, dtype=torch.float32)
        frozen_r = torch.zeros_like(frozen_h)
        policy = frozen_h.new_ones(batch, m, 1)                          # raster order
        if self.training:
            seq.mask = policy
        maps, decisions, keep_indices, pred_scores = [], [], [], []
        all_logits, all_gates, layer_hidden, layer_residual = [], [], [], []
        stage_of = {loc: k for k, loc in enumerate(self.pruning_loc)}
        counts = self.keep_counts()
        for i in range(self.depth):
            if i > 0 and (i in stage_of or self._emits(i - 1)):
                full_h = restore_full(seq, seq.hidden, frozen_h)
                if self._emits(i - 1):
                    maps.append(self._to_map(full_h))
            if i in stage_of:
                k = stage_of[i]
                frozen_h, frozen_r = full_h, restore_full(seq, seq.residual, frozen_r)
                logp = self.score_predictors[k](frozen_h + frozen_r, policy)
                pred_scores.append(logp)
                if self.training:
                    decision = gumbel_softmax_keep(logp, noise) * policy[..., 0]
                else:
                    scores = logp[..., 0].masked_fill(policy[..., 0] == 0, float("-inf"))
                    keep = top_k_spreading_ties(scores, counts[k])
                    decision = torch.zeros_like(scores).scatter_(1, keep, 1.0)
                    keep_indices.append(keep)
                decisions.append(decision)
                policy = decision[..., None]
                ids = torch.arange(m, device=x.device).expand(batch, m)
                live = TokenSequence((frozen_h * policy).to(seq.hidden.dtype), frozen_r * policy,
                                     seq.prefix_pos[:, :0], ids, self.layout)
                frozen_h, frozen_r = frozen_h * (1 - policy), frozen_r * (1 - policy)
                seq = live.rearrange(decision) if self.training else live.select(keep)
            logits, gate = self._layer(i, seq, None, noise)
            all_logits.append(logits)
            all_gates.append(gate)
            if return_layers:
                layer_hidden.append(seq.hidden)
                layer_residual.append(seq.residual)
        if self._emits(self.depth - 1):
            maps.append(self._to_map(restore_full(seq, seq.hidden, frozen_h)))
        return self.decode(DenseOutput(self.forward_head(maps), maps, decisions, keep_indices,
                                       self._stack(all_gates, batch, x.device),
                                       self._stack(all_logits, batch, x.device), pred_scores, layer_hidden,
                                       layer_residual))

    def forward_features(self, x: Tensor, layers=None) -> list[Tensor]:  # type: ignore[override]
        """Images → the 4 pre-neck maps (B, D, h, w) (pruned inference path in eval)."""
        return self.forward_dense(x).features_pre_neck

    def forward_train(self, x: Tensor, noise: Noise = None) -> DenseOutput:  # type: ignore[override]
        return self.forward_dense(x, noise)

    def forward_inference(self, x: Tensor, return_layers: bool = False) -> DenseOutput:  # type: ignore[override]
        return self.forward_dense(x, return_layers=return_layers)

    def forward(self, x: Tensor, noise: Noise = None):  # type: ignore[override]
        """Training: :class:`DenseOutput`; eval: the 4 feature maps after the neck (backbone) or the
        per-pixel logits (B, K, H, W) (segmenter)."""
        out = self.forward_dense(x, noise)
        if self.training:
            return out
        return out.features if self.num_classes == 0 else self.segment(out, x.shape[-2:])


@register_model
def vim_seg_tiny(**kwargs: Any) -> VimSeg:
    """Vim-T segmentation backbone (512², UperNet neck), plain."""
    return build_model(VimSeg, "vim_seg_tiny", "seg", "tiny", **kwargs)


@register_model
def vim_seg_small(**kwargs: Any) -> VimSeg:
    """Vim-S segmentation backbone (512², UperNet neck), plain."""
    return build_model(VimSeg, "vim_seg_small", "seg", "small", **kwargs)


@register_model
def dyvm_vim_seg_tiny(**kwargs: Any) -> DyVMSeg:
    """DyVM Vim-T segmentation backbone: ρ=0.9 (keeps 921/829/746 of 1024 tokens)."""
    return build_model(DyVMSeg, "dyvm_vim_seg_tiny", "seg", "tiny", **kwargs)


@register_model
def dyvm_vim_seg_small(**kwargs: Any) -> DyVMSeg:
    """DyVM Vim-S segmentation backbone: ρ=0.8 (keeps 819/655/524 of 1024 tokens)."""
    return build_model(DyVMSeg, "dyvm_vim_seg_small", "seg", "small", **kwargs)


@register_model
def vim_seg_micro(**kwargs: Any) -> VimSeg:
    """Vim segmenter for 56-px Fashion-MNIST mosaics: D=64, 8 layers, light FPN decode head."""
    return build_model(VimSeg, "vim_seg_micro", "seg", "micro", **kwargs)


@register_model
def dyvm_vim_seg_micro(**kwargs: Any) -> DyVMSeg:
    """DyVM segmenter for 56-px Fashion-MNIST mosaics: pruning before layers 2, 4, 6, ρ=0.7, β=0.8."""
    return build_model(DyVMSeg, "dyvm_vim_seg_micro", "seg", "micro", **kwargs)
