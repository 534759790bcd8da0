"""DyVM's dynamic parts: the token keep predictor, Gumbel samplers, keep selection, per-sample noise.

Token layout operations (split / select / rearrange / insert of prefix tokens) live in
:mod:`dyvm.models.tokens`.

Everything is vectorised over the batch; per-sample variation (how many tokens an image keeps,
where its class token sits) is expressed with index tensors, never with Python loops.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from .kernels import mix_cpp
from .kernels.custom_ops import tracing

SCORE_SOURCES = ("predictor", "random", "static")

# An Exp(1) noise source: None (torch's global RNG), a torch.Generator, or a callable
# ``noise(shape, device) -> Tensor`` (e.g. one replaying recorded draws in order).
Noise = Union[None, torch.Generator, Callable[[tuple, torch.device], Tensor]]


def exponential_noise(noise: Noise, shape: tuple, device: torch.device) -> Tensor:
    """Exp(1) draws of ``shape`` (float32). Gumbel noise is ``-log`` of these."""
    if callable(noise) and not isinstance(noise, torch.Generator):
        out = noise(tuple(shape), device)
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"noise callable returned shape {tuple(out.shape)}, expected {tuple(shape)}")
        return out.to(device=device, dtype=torch.float32)
    gen_device = noise.device if isinstance(noise, torch.Generator) else device
    return torch.empty(shape, device=gen_device).exponential_(generator=noise).to(device)


def gumbel_softmax_keep(logp: Tensor, noise: Noise, tau: float = 1.0) -> Tensor:
    """Hard straight-through Gumbel-softmax over the last dim (B, N, 2) → keep decision (B, N).

    Values are exactly 0/1; the gradient is that of the soft sample (``F.gumbel_softmax`` with
    ``hard=True``, noise made explicit).
    """
    gumbel = -exponential_noise(noise, logp.shape, logp.device).log()
    soft = ((logp + gumbel) / tau).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return (hard - soft.detach() + soft)[..., 0]


TOKEN_SAMPLERS = ("gumbel", "topk", "stratified")
# what the keep-ratio loss averages with an exact-count sampler (DyVM keep_ratio_source)
KEEP_RATIO_SOURCES = ("decisions", "probabilities")


def strata(n: int, k: int, device=None) -> Tensor:
    """(k, S) slot indices of k contiguous strata that split n slots as evenly as integers allow
    (boundaries ``floor(j·n/k)``, S = the largest stratum's size); shorter strata are padded with -1."""
    bounds = [j * n // k for j in range(k + 1)]  # Python ints: static shapes for torch.compile / export
    width = max(b - a for a, b in zip(bounds, bounds[1:]))
    return torch.tensor([[a + i if a + i < b else -1 for i in range(width)] for a, b in zip(bounds, bounds[1:])],
                        dtype=torch.long, device=device)


def stratified_keep(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k), ascending: the best-scoring slot of each of k contiguous strata of the N slots of
    ``scores`` (B, N) — evenly spread like static selection, chosen per image like top-k."""
    grid = strata(scores.shape[1], k, scores.device)
    safe = grid.clamp(min=0)
    vals = scores[:, safe].masked_fill(grid < 0, float("-inf"))                # (B, k, S)
    return safe[torch.arange(k, device=scores.device)[None], vals.argmax(-1)]


def gumbel_topk_keep(logp: Tensor, policy: Tensor, k: int, noise: Noise, noise_scale: float = 1.0) -> Tensor:
    """Training keep decisions (B, N) that keep exactly ``k`` live tokens per image, like inference.

    Gumbel-top-k (sampling ``k`` tokens without replacement in proportion to p(keep)): the top ``k``
    of ``log p(keep) + G`` among the live tokens (``policy`` (B, N) 0/1), hard 0/1 values with the
    straight-through gradient of p(keep). Unlike the paper's per-token Gumbel-softmax (whose kept
    count varies per image and is held at ρ only on average by the ratio loss), every image trains
    on the sequence length and class-token position that inference gives it. ``noise_scale`` scales
    the Gumbel noise: 1 samples in proportion to p(keep), 0 keeps inference's own top-k.
    """
    scores = _perturbed_keep_scores(logp, noise, noise_scale).masked_fill(policy <= 0.5, float("-inf"))
    return _straight_through_keep(logp, top_k_spreading_ties(scores, k))


def top_k_spreading_ties(scores: Tensor, k: int) -> Tensor:
    """Indices (B, k), ascending, of the ``k`` best ``scores`` (B, N) per row, where the k-th best value ties with
    others: the slots above it, then of the T slots at it the r still needed spread evenly over them in slot order
    (static selection's integer linspace ``floor(i (T-1) / (r-1))``), not the first ones a top-k happens to return.
    A predictor whose keep log-probabilities saturate (equal scores) then keeps evenly spaced slots, as static
    selection does, instead of one block of the image (docs/study, twentieth round). Without ties: the top-k."""
    batch, n = scores.shape
    if k <= 0 or k >= n:
        return torch.arange(max(min(k, n), 0), device=scores.device).expand(batch, -1)
    scores = scores.nan_to_num(nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))  # NaN: the largest
    kth = scores.topk(k, dim=1).values[:, -1:]                     # (B, 1) the k-th best value
    above, tied = scores > kth, scores == kth
    need = k - above.sum(1, keepdim=True)                          # r >= 1 of the tied slots
    count = tied.sum(1, keepdim=True)                              # T >= r
    rank = tied.cumsum(1) - 1                                      # a tied slot's rank among them, 0..T-1
    # rank j is on the linspace iff i = ceil(j (r-1) / (T-1)) (always < r) maps back to it: i (T-1) // (r-1) == j
    span, steps = (count - 1).clamp(min=1), (need - 1).clamp(min=1)
    i = (rank * (need - 1) + span - 1) // span
    chosen = tied & (i * (count - 1) // steps == rank)
    keep = above | chosen                                          # exactly k per row
    # the kept slots in slot order (a stable sort of the mask: no host sync, unlike nonzero)
    return keep.to(torch.int8).sort(dim=1, descending=True, stable=True).indices[:, :k]


def gumbel_stratified_keep(logp: Tensor, k: int, noise: Noise, noise_scale: float = 1.0) -> Tensor:
    """Training keep decisions (B, N) for the ``stratified`` sampler: one token per stratum (see
    :func:`stratified_keep`) drawn in proportion to p(keep) (Gumbel-max within the stratum), hard 0/1 values
    with the straight-through gradient of p(keep). Every slot must be live (the tail-dropping layout)."""
    return _straight_through_keep(logp, stratified_keep(_perturbed_keep_scores(logp, noise, noise_scale), k))


def _perturbed_keep_scores(logp: Tensor, noise: Noise, noise_scale: float) -> Tensor:
    """log p(keep) (B, N) in float32 plus ``noise_scale`` × Gumbel noise (none when the scale is 0)."""
    gumbel = -exponential_noise(noise, logp.shape[:2], logp.device).log() if noise_scale else 0.0
    return logp[..., 0].float() + noise_scale * gumbel


def _straight_through_keep(logp: Tensor, keep: Tensor) -> Tensor:
    """Hard 0/1 decisions (B, N), 1 at ``keep`` (B, k), with the gradient of p(keep) = exp(logp[..., 0])."""
    hard = torch.zeros(logp.shape[:2], dtype=logp.dtype, device=logp.device).scatter_(1, keep, 1.0)
    soft = logp[..., 0].exp()
    return hard - soft.detach() + soft


def gumbel_sigmoid_gate(logits: Tensor, noise: Noise, tau: float = 2.0, threshold: float = 0.5) -> Tensor:
    """Hard straight-through Gumbel-sigmoid (B, 2) → 0/1 gates with the soft gradient.

    ``y = σ((logit + G1 − G2) / τ)``, gate = ``y > threshold``; G1 is drawn before G2.
    """
    g1 = -exponential_noise(noise, logits.shape, logits.device).log()
    g2 = -exponential_noise(noise, logits.shape, logits.device).log()
    soft = torch.sigmoid((logits + g1 - g2) / tau)
    hard = (soft > threshold).to(soft.dtype)
    return hard - soft.detach() + soft


class TokenPredictor(nn.Module):
    """DynamicViT-style keep predictor: (B, N, D) tokens + (B, N, 1) policy → (B, N, 2) log-probs.

    Channel 0 is "keep". Half of the hidden features are local; the other half is pooled over the
    live tokens as ``Σ x·policy / (Σ policy + 1)`` (the official "+1") and broadcast back. A policy of
    None means every token is live (inference).

    ``num_slots`` (not in the paper): a learnt per-slot bias (num_slots,) added to the keep-vs-drop
    logit of the first ``num_slots`` slots, a positional prior for stages whose live count is fixed.
    """

    def __init__(self, embed_dim: int, num_slots: Optional[int] = None):
        super().__init__()
        self.slot_bias = nn.Parameter(torch.zeros(num_slots)) if num_slots else None
        self.in_conv = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 2), nn.GELU(),
            nn.Linear(embed_dim // 2, embed_dim // 4), nn.GELU(),
            nn.Linear(embed_dim // 4, 2), nn.LogSoftmax(dim=-1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def fused_params(self) -> list[Tensor]:
        """Its tensors in the order of :func:`~dyvm.kernels.mix_cpp.prune_stage`: LayerNorm weight and bias, then
        weight and bias of each Linear (in, and the three of ``out_conv``), then the slot bias if any."""
        # read from the module dicts: Sequential indexing and attribute lookups cost ~30 µs a stage at batch 1
        ins, outs = self._modules["in_conv"]._modules, self._modules["out_conv"]._modules
        params = []
        for m in (ins["0"], ins["1"], outs["0"], outs["2"], outs["4"]):
            own = m._parameters
            params += [own["weight"], own["bias"]]
        return params if self.slot_bias is None else params + [self.slot_bias]

    def forward(self, x: Tensor, policy: Optional[Tensor] = None) -> Tensor:
        if self.slot_bias is not None and x.shape[1] < self.slot_bias.shape[0]:
            raise ValueError(f"TokenPredictor: {x.shape[1]} tokens but a slot prior for {self.slot_bias.shape[0]}")
        if policy is None and not self.training:  # eager CPU inference: one extension call (the pruning stage's)
            params = self.fused_params()
            if mix_cpp.predictor_applies(x, params) and (tracing() or not mix_cpp.tree_hooked(self)):
                return mix_cpp.token_predictor(x, params, self.in_conv[0].eps)
        x = self.in_conv(x)
        half = x.shape[-1] // 2
        local, glob = x[..., :half], x[..., half:]
        if policy is None:
            glob = glob.sum(1, keepdim=True) / (x.shape[1] + 1)
        else:
            policy = policy.to(x.dtype)
            glob = (glob * policy).sum(1, keepdim=True) / (policy.sum(1, keepdim=True) + 1)
        # out_conv's first Linear over cat(local, glob): the pooled half is the same for every token of an
        # image, so its product (and the bias) is computed once per image and broadcast in the add
        first = self.out_conv[0]
        hidden = F.linear(local, first.weight[:, :half]) + F.linear(glob, first.weight[:, half:], first.bias)
        logp = self.out_conv[1:](hidden)
        if self.slot_bias is None:
            return logp
        n, slots = x.shape[1], self.slot_bias.shape[0]
        diff = logp[..., 0] - logp[..., 1] + F.pad(self.slot_bias, (0, n - slots)).to(logp.dtype)
        return torch.stack([F.logsigmoid(diff), F.logsigmoid(-diff)], dim=-1)


def select_keep(source: str, logp: Optional[Tensor], n_alive: Optional[Tensor], k: int,
                generator: Optional[torch.Generator] = None, stratified: bool = False) -> Tensor:
    """Indices (B, k) of the tokens to keep, ascending, among the first ``n_alive`` (B,) slots (None: every
    slot of ``logp`` is live).

    ``predictor``: top-k of the predicted keep log-probability (tied slots at the cut spread evenly:
    :func:`top_k_spreading_ties`); ``random``: k uniformly random
    live tokens; ``static``: evenly spaced live tokens ``floor(linspace(0, n_alive-1, k))`` (the
    official Static ablation). Live tokens always form a prefix of the sequence. ``stratified`` (with
    ``predictor``, every slot live): the best-scoring token of each of k contiguous strata.
    """
    if n_alive is None:  # every slot of logp is live
        if logp is None:
            raise ValueError("select_keep: give n_alive or logp")
        (batch, n), device, alive = logp.shape[:2], logp.device, None
        n_alive = torch.full((batch,), n, dtype=torch.long, device=device) if source == "static" else None
    else:
        batch, n = (logp.shape[:2] if logp is not None else
                    (n_alive.shape[0], int(n_alive.max()) if n_alive.numel() else k))  # k: an empty batch
        device = n_alive.device
        alive = torch.arange(n, device=device)[None] < n_alive[:, None]
    if source == "static":
        steps = torch.arange(k, device=device)[None]
        return steps * (n_alive[:, None] - 1) // max(k - 1, 1)  # exact integer linspace
    if source == "predictor" and stratified:  # inference: every slot is live
        return stratified_keep(logp[..., 0].float(), k)
    if source == "predictor":
        scores = logp[..., 0].float()
    elif source == "random":
        gen_device = generator.device if generator is not None else device
        scores = torch.rand((batch, n), device=gen_device, generator=generator).to(device)
    else:
        raise ValueError(f"score={source!r} is not a keep-score source; expected one of {SCORE_SOURCES}")
    if alive is not None:
        scores = scores.masked_fill(~alive, float("-inf"))
    return top_k_spreading_ties(scores, k)


BASELINE_MASKS = ("official", "nested")


def official_baseline_keep(source: str, batch: int, n: int, ratio: float, noise: Noise, device) -> Tensor:
    """Training keep decisions (B, n) 0/1 of the official Pruning_Strategy ablations over all n rearranged
    slots (not nested in the previous stage's keep: earlier-pruned tokens can be revived).

    ``random``: exactly ``int(B·n·ratio)`` ones at uniformly random slots of the whole batch (per-image counts
    vary), drawn from ``noise`` (the smallest Exp(1) draws); ``static``: the same mask for every image, ones at
    ``linspace(0, n−1, int(n·ratio)).long()``. ``ratio`` is the stage's cumulative keep ratio ρ_k; at least one
    slot is kept (like :meth:`DyVM.keep_counts`).
    """
    if source == "random":
        draws = exponential_noise(noise, (batch, n), device).reshape(-1)
        keep = draws.topk(max(1, int(batch * n * ratio)), largest=False).indices
        return torch.zeros(batch * n, device=device).index_fill_(0, keep, 1.0).view(batch, n)
    if source == "static":
        slots = torch.linspace(0, n - 1, max(1, int(n * ratio)), device=device).long()
        return torch.zeros(n, device=device).index_fill_(0, slots, 1.0).expand(batch, n).clone()
    raise ValueError(f"official_baseline_keep: source {source!r} is not random or static")


# ------------------------------------------------------------------------- per-sample noise
_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_C1, _C2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_P1, _P2, _P3 = _signed(0x9E3779B97F4A7C15), _signed(0xD6E8FEB86659FD93), _signed(0xA0761D6478BD642F)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 values."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64(x: Tensor) -> Tensor:
    """splitmix64's finaliser (wrapping int64 arithmetic): a strong bijective hash."""
    x = x ^ _shr(x, 30)
    x = x * _C1
    x = x ^ _shr(x, 27)
    x = x * _C2
    return x ^ _shr(x, 31)


class SampleNoise:
    """Exp(1) noise that depends only on (seed, epoch, sample id, draw number, element), never on
    which batch or process a sample lands in: a counter-based hash, vectorised over the batch.

    Used so that a multi-process run draws exactly the Gumbel noise of a single-process run.
    ``sample_ids`` (B,) identifies each image of the batch (its dataset index).
    """

    def __init__(self, sample_ids: Tensor, seed: int = 0, epoch: int = 0):
        self.ids = sample_ids.long()
        self.key = int(_mix64(torch.tensor([_signed((seed * 1_000_003 + epoch) & _MASK64)]))[0])
        self.draw = 0

    def __call__(self, shape: tuple, device: torch.device) -> Tensor:
        if shape[0] != self.ids.shape[0]:
            raise ValueError(f"SampleNoise: batch of {shape[0]} but {self.ids.shape[0]} sample ids")
        per_sample = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
        elem = torch.arange(per_sample, device=device, dtype=torch.long)[None]
        ids = self.ids.to(device)[:, None]
        x = ids * _P1 + elem * _P2 + _signed((self.draw * _P3 + self.key) & _MASK64)
        self.draw += 1
        bits = _shr(_mix64(_mix64(x)), 40)                     # top 24 bits
        uniform = (bits.double() + 0.5) / float(1 << 24)         # in (0, 1)
        return (-torch.log(uniform)).float().reshape(shape)
