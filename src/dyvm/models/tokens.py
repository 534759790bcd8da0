"""The token sequence of every Vim-family model: patch tokens plus P *prefix tokens* (a class
token, registers, or none) at positions a :class:`PrefixLayout` dictates.

Every variant and both DyVM paths go through the same three operations of
:class:`TokenSequence`: ``patches`` (split the prefix off), ``select`` (inference: keep a subset
of patch tokens, physically) and ``rearrange`` (training: kept patches first, pruned ones last,
masked). After either, the prefix tokens are re-placed where the layout wants them for the new
number of kept patches. Index tensors only; no per-sample Python loops.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from torch import Tensor


# ------------------------------------------------------------------------------------ layouts
class PrefixLayout:
    """Where P prefix tokens sit in a sequence of n patches + P prefix tokens."""

    num_prefix = 0

    def positions(self, num_patches: Tensor) -> Tensor:
        """num_patches (B,) long → sorted prefix positions (B, P)."""
        return num_patches.new_zeros(num_patches.shape[0], 0)

    def shared_positions(self, num_patches: int) -> list[int]:
        """The prefix positions as Python ints when every image has ``num_patches`` patches (cached)."""
        cache = self.__dict__.setdefault("_shared", {})
        if num_patches not in cache:
            cache[num_patches] = self.positions(torch.tensor([num_patches]))[0].tolist()
        return cache[num_patches]


class NoPrefix(PrefixLayout):
    """Patch tokens only (the segmentation backbone)."""


class MiddleClassToken(PrefixLayout):
    """Vim: one class token at ``n // 2``, re-centred among the kept patches after each pruning."""

    num_prefix = 1

    def positions(self, num_patches: Tensor) -> Tensor:
        return (num_patches // 2)[:, None]


class HeadClassToken(PrefixLayout):
    """VideoMamba: one class token at index 0, where it stays."""

    num_prefix = 1

    def positions(self, num_patches: Tensor) -> Tensor:
        return num_patches.new_zeros(num_patches.shape[0], 1)


class InterleavedRegisters(PrefixLayout):
    """MambaReg: ``count`` registers spread evenly: with ``interval = n // (count+1)`` register i
    sits at ``(interval+1)(i+1) − 1``, i.e. [interval patches, register] × count, then the rest."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError(f"the register count must be >= 1, got {count}")
        self.num_prefix = count

    def positions(self, num_patches: Tensor) -> Tensor:
        interval = num_patches // (self.num_prefix + 1)
        i = torch.arange(1, self.num_prefix + 1, device=num_patches.device)
        return (interval[:, None] + 1) * i[None] - 1


# ------------------------------------------------------------------------ gather primitives
def _is_prefix(prefix_pos: Tensor, length: int) -> Tensor:
    """(B, P) positions → (B, L) bool."""
    flags = torch.zeros(prefix_pos.shape[0], length, dtype=torch.bool, device=prefix_pos.device)
    return flags.scatter_(1, prefix_pos, True)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """x (B, L, D), index (B, K) → (B, K, D): whole D-rows by one ``index_select`` over the flattened
    batch (3-7× faster on a CPU than ``gather`` with an expanded index, which reads an index per element); an
    index expanded from one row (every image at the same positions, as at inference) by one ``index_select``."""
    if index.shape[0] == 1 or (index.shape[0] > 1 and index.stride(0) == 0):
        return x.index_select(1, index[0])
    return _gather_rows(x, _flat_rows(index, x.shape[1]), index.shape[1])


def _flat_rows(index: Tensor, length: int) -> Tensor:
    """(B, K) positions in sequences of ``length`` → (B·K,) rows of the batch flattened to (B·length, ...)."""
    batch = index.shape[0]
    return (index + torch.arange(0, batch * length, length, device=index.device)[:, None]).reshape(-1)


def _gather_rows(x: Tensor, rows: Tensor, k: int) -> Tensor:
    """x (B, L, ...) and rows from :func:`_flat_rows` of a (B, k) index → (B, k, ...) (k given: B may be 0)."""
    batch, length = x.shape[:2]
    return x.reshape(batch * length, *x.shape[2:]).index_select(0, rows).view(batch, k, *x.shape[2:])


# Index constants of batches whose images all have their prefix tokens at the same positions (inference),
# cached per shape: a pruning stage then needs no per-image index arithmetic.
def index_constant(values: Sequence[int], device: torch.device) -> Tensor:
    """An int64 index tensor for the caches below, made outside inference mode whatever the caller's mode: an
    inference tensor could not be saved for backward by a later forward with autograd (a model evaluated under
    ``torch.inference_mode`` and then trained in the same process failed in its first training step)."""
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=torch.long, device=device)


@functools.lru_cache(maxsize=512)
def shared_patch_slots(prefix: tuple, length: int, device: torch.device) -> Tensor:
    """Sequence positions (N,) of the patch tokens among ``length`` tokens with prefix tokens at ``prefix``."""
    skip = set(prefix)
    return index_constant([i for i in range(length) if i not in skip], device)


@functools.lru_cache(maxsize=512)
def _shared_insert_order(prefix: tuple, num_patches: int, device: torch.device) -> Tensor:
    """For a new sequence of ``num_patches`` patches with prefix tokens at ``prefix``: the column (K+P,) of
    ``cat(patches (K columns), prefix (P columns))`` that each slot reads."""
    where = {p: j for j, p in enumerate(prefix)}
    order, seen = [], 0
    for slot in range(num_patches + len(prefix)):
        if slot in where:
            order.append(num_patches + where[slot])
            seen += 1
        else:
            order.append(slot - seen)
    return index_constant(order, device)


@functools.lru_cache(maxsize=512)
def shared_index(values: tuple, device: torch.device) -> Tensor:
    """``values`` (prefix positions) as a cached index tensor; callers only expand it (views)."""
    return index_constant(values, device)


@functools.lru_cache(maxsize=512)
def _shared_arange(n: int, device: torch.device) -> Tensor:
    """``arange(n)``, cached (the patch ids of fresh embeddings); callers only expand it (views)."""
    return index_constant(range(n), device)


def patch_slots(prefix_pos: Tensor, length: int) -> Tensor:
    """Sequence positions (B, L−P) of the patch tokens, in order, given the prefix positions."""
    flags = _is_prefix(prefix_pos, length).to(torch.int8)
    return torch.sort(flags, dim=1, stable=True).indices[:, :length - prefix_pos.shape[1]]


def split_prefix(x: Tensor, prefix_pos: Tensor) -> tuple[Tensor, Tensor]:
    """x (B, L, D) → prefix tokens (B, P, D), patch tokens (B, L−P, D), both in sequence order."""
    return gather_tokens(x, prefix_pos), gather_tokens(x, patch_slots(prefix_pos, x.shape[1]))


def insert_prefix(prefix: Tensor, patches: Tensor, prefix_pos: Tensor) -> Tensor:
    """Inverse of :func:`split_prefix`: prefix (B, P, D) at ``prefix_pos`` (B, P) among patches (B, N, D)."""
    n, p = patches.shape[1], prefix.shape[1]
    if p == 0:
        return patches
    flags = _is_prefix(prefix_pos, n + p)
    seen = flags.long().cumsum(1)                                  # prefix tokens up to and at each slot
    slot = torch.arange(n + p, device=patches.device)[None]
    source = torch.where(flags, n + seen - 1, slot - seen)          # index into cat(patches, prefix)
    return gather_tokens(torch.cat([patches, prefix.to(patches.dtype)], dim=1), source)


def kept_first_order(decision: Tensor) -> Tensor:
    """Stable permutation (B, N) putting kept tokens (decision > 0.5) first, both groups in order.

    This is the heart of DyVM's training layout: with the pruned tokens at the end of the
    sequence, the forward scan reaches them only after every kept token, and the backward scan
    meets them first while its state is still zero (masked u = 0 and B = 0), so kept-token
    outputs equal those of the physically shortened sequence that inference computes.
    """
    return torch.sort((decision <= 0.5).to(torch.int8), dim=1, stable=True).indices


# ------------------------------------------------------------------------------- sequence
@dataclass
class TokenSequence:
    """The state flowing through the blocks.

    hidden (B, L, D): last mixer output (the embeddings before layer 0); residual (B, L, D) or
    None before layer 0; prefix_pos (B, P): where the prefix tokens sit; patch_ids (B, N): the
    original patch index of each patch slot, in sequence order (N = L − P); mask (B, L, 1): training
    only, 1 at prefix tokens and kept patches, 0 at pruned ones (None: all live); policy (B, N, 1):
    training only, the patch part of the mask.
    """

    hidden: Tensor
    residual: Optional[Tensor]
    prefix_pos: Tensor
    patch_ids: Tensor
    layout: PrefixLayout
    mask: Optional[Tensor] = None
    policy: Optional[Tensor] = None

    @classmethod
    def from_parts(cls, prefix: Tensor, patches: Tensor, layout: PrefixLayout) -> "TokenSequence":
        """Lay out fresh embeddings: prefix (B, P, D) placed among patches (B, M, D) by the layout."""
        batch, m = patches.shape[:2]
        if torch.compiler.is_compiling():  # the layout's tensor arithmetic (traced), not cached Python ints
            ids = torch.arange(m, device=patches.device).expand(batch, m)
            pos = layout.positions(torch.full((batch,), m, dtype=torch.long, device=patches.device))
            hidden = insert_prefix(prefix, patches, pos)
        else:  # every image has m patches: the prefix positions and the insertion order are cached constants
            shared = tuple(layout.shared_positions(m))
            ids = _shared_arange(m, patches.device).expand(batch, m)
            pos = shared_index(shared, patches.device).expand(batch, len(shared))
            hidden = patches if not shared else torch.cat([patches, prefix.to(patches.dtype)], dim=1).index_select(
                1, _shared_insert_order(shared, m, patches.device))
        return cls(hidden, None, pos, ids, layout)

    @property
    def num_patches(self) -> int:
        return self.patch_ids.shape[1]

    def prefix(self, x: Optional[Tensor] = None) -> Tensor:
        """Prefix tokens (B, P, D) of ``x`` (default: hidden) in this sequence's layout."""
        return gather_tokens(self.hidden if x is None else x, self.prefix_pos)

    def patches(self, x: Optional[Tensor] = None, positions: Optional[list[int]] = None) -> Tensor:
        """Patch tokens (B, N, D) of ``x`` (default: hidden), in sequence order. ``positions``: the prefix
        positions when every image has them (inference; Python ints), read by cached constants."""
        x = self.hidden if x is None else x
        if positions is not None:
            return x.index_select(1, shared_patch_slots(tuple(positions), x.shape[1], x.device))
        return gather_tokens(x, patch_slots(self.prefix_pos, x.shape[1]))

    def _relayout(self, keep: Tensor, num_kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Patches reordered/subset by ``keep`` (B, K) patch-slot indices; prefix re-placed for
        ``num_kept`` (B,) live patches. Returns (hidden, residual, new prefix positions)."""
        new_pos = self.layout.positions(num_kept)
        slots = patch_slots(self.prefix_pos, self.hidden.shape[1])
        source = slots.gather(1, keep)                                 # sequence positions of the kept
        # the new sequence's source position per slot (B, K+P): one gather per tensor
        index = insert_prefix(self.prefix_pos[..., None], source[..., None], new_pos)[..., 0]
        return gather_tokens(self.hidden, index), gather_tokens(self.residual, index), new_pos

    def select(self, keep: Tensor, positions: Optional[list[int]] = None) -> "TokenSequence":
        """Inference: keep the patch slots ``keep`` (B, K), ascending; the others are dropped. ``positions``:
        the prefix positions when every image has them (Python ints): the new sequence's index then comes
        from cached constants instead of per-image index arithmetic (same result)."""
        if positions is None:
            counts = torch.full((keep.shape[0],), keep.shape[1], dtype=torch.long, device=keep.device)
            hidden, residual, pos = self._relayout(keep, counts)
        else:
            batch, length, device = keep.shape[0], self.hidden.shape[1], keep.device
            new = self.layout.shared_positions(keep.shape[1])
            source = shared_patch_slots(tuple(positions), length, device)[keep]          # (B, K)
            prefix = torch.tensor(positions, dtype=torch.long, device=device).expand(batch, -1)
            order = _shared_insert_order(tuple(new), keep.shape[1], device)
            rows = _flat_rows(torch.cat([source, prefix], 1).index_select(1, order), length)
            hidden, residual = _gather_rows(self.hidden, rows, len(order)), _gather_rows(self.residual, rows, len(order))
            pos = torch.tensor(new, dtype=torch.long, device=device).expand(batch, -1)
        return replace(self, hidden=hidden, residual=residual, prefix_pos=pos,
                       patch_ids=self.patch_ids.gather(1, keep))

    def rearrange(self, decision: Tensor, num_kept: Optional[int] = None) -> "TokenSequence":
        """Training: ``decision`` (B, N) 0/1 per patch slot (straight-through values kept). Kept patches
        move to the front in order, pruned ones to the end; prefix tokens go where the layout puts
        them for each image's kept count; the mask is 1 at prefix tokens and kept patches.

        num_kept: when every image keeps exactly this many patches (a sampler with inference's count),
        the pruned tail is dropped: the sequence is the K kept patches + the prefix, what inference
        computes, and the later layers cost what inference's do. The mask (1 + straight-through terms)
        stays on the kept slots, so the predictor's gradient through them is unchanged; the pruned
        slots' own mask gradient, which only reaches the model through the backward branch's conv
        window at the kept/pruned border, is what is given up.
        """
        order = kept_first_order(decision)
        decision = decision.gather(1, order)
        counts = decision.detach().sum(1).round().long()
        hidden, residual, pos = self._relayout(order, counts)
        ones = decision.new_ones(decision.shape[0], pos.shape[1], 1)
        mask = insert_prefix(ones, decision[..., None], pos)
        patch_ids = self.patch_ids.gather(1, order)
        if num_kept is not None:
            if not bool((counts == num_kept).all()):
                raise RuntimeError(f"rearrange: every image was to keep {num_kept} patches, got {counts.tolist()}")
            length = num_kept + pos.shape[1]
            hidden, residual, mask = hidden[:, :length], residual[:, :length], mask[:, :length]
            decision, patch_ids = decision[:, :num_kept], patch_ids[:, :num_kept]
        return replace(self, hidden=hidden, residual=residual, prefix_pos=pos, patch_ids=patch_ids,
                       mask=mask, policy=decision[..., None])
