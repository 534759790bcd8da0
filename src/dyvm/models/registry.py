"""Model registry: ``create_model(name, **overrides)``, mirrored into timm's registry."""
from __future__ import annotations

import os
import typing
from typing import Any, Callable, Optional

from torch import nn

from ..weights import load_checkpoint

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its ``__name__`` here and in timm (so ``timm.create_model`` works)."""
    import timm.models

    _MODELS[fn.__name__] = fn

    def timm_entry(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                   cache_dir=None, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"pretrained=True: dyvm fetches no weights from a hub; use "
                             f"timm.create_model({fn.__name__!r}, checkpoint_path='vim_....pth')")
        return fn(**kwargs)

    timm_entry.__name__ = fn.__name__
    timm_entry.__qualname__ = fn.__name__
    timm_entry.__module__ = fn.__module__
    timm_entry.__doc__ = fn.__doc__
    timm.models.register_model(timm_entry)
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def _factory(name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model name {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def model_class(name: str) -> type:
    """The class the factory ``name`` builds (its return annotation), without building a model."""
    return typing.get_type_hints(_factory(name))["return"]


def is_dynamic_name(name: str) -> bool:
    """"Is this a DyVM?" for a registered name, before a model exists (``model.is_dynamic`` after)."""
    return bool(model_class(name).is_dynamic)


def static_counterpart(name: str) -> str:
    """The registered plain model a dynamic one is built on (``dyvm_vim_small`` → ``vim_small``): the
    architecture of its distillation teacher. A plain model is its own counterpart."""
    if not is_dynamic_name(name):
        return name
    base = name.removeprefix("dyvm_")
    if base not in _MODELS or is_dynamic_name(base):
        raise ValueError(f"{name!r} has no registered plain counterpart (expected {base!r})")
    return base


def create_model(name: str, checkpoint_path: Optional[str] = None, pretrained: Any = False,
                 **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` are constructor keywords (official Vim names).

    ``checkpoint_path`` loads an official ``.pth``, a bare state dict or a ``.safetensors`` file
    (see :func:`dyvm.load_checkpoint`). ``pretrained`` as a path is the segmentation backbone's
    official keyword (its initialising checkpoint); ``pretrained=True`` (a hub download) is refused.
    """
    factory = _factory(name)
    if isinstance(pretrained, (str, os.PathLike)):
        overrides["pretrained"] = os.fspath(pretrained)
    elif pretrained:
        raise ValueError("pretrained=True: dyvm fetches no weights from a hub; pass checkpoint_path=...")
    model = factory(**overrides)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model
