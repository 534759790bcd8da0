"""Our checkpoint format (weights + what rebuilds the model), official ``.pth`` ↔ ``.safetensors``
conversion. Loading weights into a model lives in :mod:`dyvm.weights` (re-exported here).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

from .models.registry import create_model
from .weights import (DYNAMIC_PREFIXES, DYNAMIC_SUFFIXES, LoadReport, _is_dynamic,  # noqa: F401 (re-exported)
                      extract_state_dict, load_checkpoint, read_checkpoint, resize_pos_embed)


def atomic_write(path: str | os.PathLike, write: "Callable[[str], None]") -> None:
    """Call ``write(tmp_path)`` then rename into ``path``: a crash never leaves a half-written file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; give a file name to write")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, key: str = "auto") -> int:
    """Official ``.pth`` ↔ ``.safetensors``. Returns the number of tensors written."""
    dst = os.fspath(dst)
    if not dst.endswith((".safetensors", ".pth", ".pt")):
        raise ValueError(f"dst={dst!r}: expected a .safetensors, .pth or .pt file name")
    if os.path.abspath(dst) == os.path.abspath(os.fspath(src)):
        raise ValueError("dst must differ from src")
    state = extract_state_dict(read_checkpoint(src), key)
    if dst.endswith(".safetensors"):
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}  # no shared storage
        atomic_write(dst, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", "source": os.path.basename(os.fspath(src))}))
    else:
        atomic_write(dst, lambda tmp: torch.save({"model": state}, tmp))
    return len(state)


FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Write our checkpoint format atomically: weights plus what rebuilds the model
    (``arch``, ``config``, ``data_config``), ``format_version`` and ``dyvm_version``."""
    from . import __version__

    model = getattr(model, "module", model)  # unwrap DDP
    payload = {"format_version": FORMAT_VERSION, "dyvm_version": __version__,
               "arch": getattr(model, "arch", None), "config": dict(getattr(model, "config", {})),
               "data_config": {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in dict(getattr(model, "pretrained_cfg", {}) or {}).items()},
               "model": model.state_dict()}
    payload.update(extra)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def model_from_checkpoint(path: str | os.PathLike | dict, map_location: str | torch.device = "cpu",
                          **overrides: Any) -> tuple[nn.Module, dict]:
    """Rebuild the model a dyvm checkpoint describes and load its weights (strict).

    ``overrides`` change inference knobs or model options (e.g. ``token_keep_ratio``)."""
    ckpt = path if isinstance(path, dict) else read_checkpoint(path, map_location)
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "config" not in ckpt or not ckpt.get("arch"):
        raise ValueError(f"{path!r} is not a dyvm checkpoint (no 'arch'/'config'); for an official checkpoint "
                         "pass --model NAME as well")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path!r} has checkpoint format {ckpt['format_version']}, newer than this dyvm "
                         f"understands ({FORMAT_VERSION}); upgrade dyvm")
    config = dict(ckpt["config"])
    if "token_keep_ratio" in overrides:
        config.pop("token_ratio", None)
    config.update(overrides)
    model = create_model(ckpt["arch"], **config)
    load_checkpoint(model, ckpt, strict=True)
    if ckpt.get("data_config"):
        cfg = dict(ckpt["data_config"])
        if "input_size" in cfg:
            cfg["input_size"] = tuple(cfg["input_size"])
        for key in ("mean", "std"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        model.pretrained_cfg = model.default_cfg = cfg
    return model, ckpt
