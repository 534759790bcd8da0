"""The typed model configuration: the constructor keywords a registered model was built with.

Checkpoints store it (``dict(model.config)``) and rebuild the model from it with
``create_model(arch, **config)``. Fields a family does not use stay None and are left out of
the keywords, so one dataclass serves every family.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional


@dataclass
class ModelConfig:
    """Constructor keywords (official names). Vim backbone first, then DyVM, then variant extras."""

    img_size: int = 224
    patch_size: int = 16
    stride: Optional[int] = None
    depth: int = 24
    embed_dim: int = 192
    d_state: int = 16
    num_classes: int = 1000
    channels: int = 3
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_epsilon: float = 1e-5
    if_divide_out: bool = True
    # DyVM
    pruning_loc: Optional[list[int]] = None
    token_ratio: Optional[list[float]] = None
    block_keep_ratio: Optional[float] = None
    router_tau: Optional[float] = None
    router_threshold: Optional[float] = None
    score: Optional[str] = None             # keep-score source: predictor, random or static
    token_sampler: Optional[str] = None     # training keep decisions: gumbel (the paper) or topk
    slot_prior: Optional[bool] = None       # learnt positional keep prior, starting at static selection
    slot_prior_strength: Optional[float] = None
    token_noise: Optional[float] = None      # Gumbel noise scale of the topk sampler
    pruned_token_grad: Optional[bool] = None  # zero-valued probe: a gradient for the pruned tokens
    baseline_masks: Optional[str] = None    # training masks of random/static: official (revival) or nested
    drop_pruned_tail: Optional[bool] = None  # training drops the pruned tail (no gradient for pruned decisions)
    keep_ratio_source: Optional[str] = None  # exact-count samplers' keep-ratio loss: decisions or probabilities
    use_routers: Optional[bool] = None
    use_pruning: Optional[bool] = None
    predictor_input: Optional[str] = None
    # variants: MambaReg registers and neck, segmentation feature layers and head
    num_cls_tokens: Optional[int] = None
    cls_reduce: Optional[int] = None
    out_indices: Optional[list[int]] = None
    decode_channels: Optional[int] = None   # a segmenter's decode/auxiliary head width

    def to_kwargs(self) -> dict[str, Any]:
        """The keywords that rebuild the model (unused fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    # the mapping protocol, so ``dict(config)``, ``config[key]`` and ``config.update(...)`` work
    def keys(self):
        return self.to_kwargs().keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._names():
            raise KeyError(f"{key!r} is not a ModelConfig field")
        setattr(self, key, value)

    def update(self, values: Optional[dict[str, Any]] = None, **kwargs: Any) -> None:
        for key, value in {**(values or {}), **kwargs}.items():
            self[key] = value

    @classmethod
    def _names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
