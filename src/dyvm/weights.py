"""Loading weights into a model: official Vim/DyVM ``.pth`` files, bare state dicts, ``.safetensors``.

Knows nothing about the model registry (the models import this module, never the reverse); a
model family adapts an official state dict through its own ``checkpoint_filter``.

Official checkpoints pickle an ``argparse.Namespace`` beside the weights; they are read with
``torch.load(weights_only=True)`` and an allow-list of harmless globals, never by plain
unpickling.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Prefixes of the parameters DyVM adds to a Vim; a Vim checkpoint lacks them.
DYNAMIC_PREFIXES = ("score_predictors.",)
DYNAMIC_SUFFIXES = (".block_head.weight", ".block_head.bias")


def _safe_globals() -> list:
    allowed: list = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]
    try:  # numpy scalars (e.g. a best accuracy) appear in some training checkpoints
        import numpy as np

        allowed += [np.dtype, type(np.dtype("float64")), type(np.dtype("float32")), type(np.dtype("int64"))]
        try:
            from numpy._core.multiarray import scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import scalar
        allowed.append(scalar)
    except ImportError:
        pass
    return allowed


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint file safely: ``.safetensors`` or a torch pickle via ``weights_only=True``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint_path={path!r}: no such file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device=str(map_location))
        except Exception as exc:
            raise ValueError(f"checkpoint_path={path!r} is not a readable safetensors file: {exc}") from None
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        first = next((line for line in msg if "Unsupported global" in line or "GLOBAL" in line), msg[0] if msg else "")
        raise ValueError(f"checkpoint_path={path!r} could not be read as a weights-only torch checkpoint "
                         f"({type(exc).__name__}: {first.strip()})") from None


def extract_state_dict(ckpt: Any, key: str = "auto") -> dict[str, Tensor]:
    """The state dict inside a checkpoint: ``ckpt[key]``; ``auto`` tries ``model``, ``state_dict``,
    then the checkpoint itself when it is a bare state dict. ``module.`` prefixes are stripped."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint holds a {type(ckpt).__name__}, expected a dict (a state dict, "
                         "or a training checkpoint with a 'model' entry)")
    if key == "auto":
        for candidate in ("model", "state_dict"):
            if isinstance(ckpt.get(candidate), dict):
                state = ckpt[candidate]
                break
        else:
            state = ckpt
    else:
        if not isinstance(ckpt.get(key), dict):
            have = [k for k, v in ckpt.items() if isinstance(v, dict)]
            raise ValueError(f"key={key!r}: the checkpoint has no state dict under that key "
                             f"(dict entries: {have})")
        state = ckpt[key]
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"checkpoint entry is not a state dict: non-tensor values under {bad[:5]}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def resize_pos_embed(pos_embed: Tensor, new_num_patches: int, cls_index: Optional[str] = "middle") -> Tensor:
    """(1, P+M, D) → (1, P+M', D): the patch rows are interpolated (bicubic on the square grid), the
    class row (if any) is moved. ``cls_index``: where the class row sits, ``middle`` (Vim: at M//2,
    and at M'//2 after), ``first`` (VideoMamba: row 0) or None (no class row)."""
    if cls_index not in ("middle", "first", None):
        raise ValueError(f"cls_index={cls_index!r}; expected 'middle', 'first' or None")
    has_cls = cls_index is not None
    old_m = pos_embed.shape[1] - has_cls
    old_side, new_side = math.isqrt(old_m), math.isqrt(new_num_patches)
    if old_side * old_side != old_m or new_side * new_side != new_num_patches:
        raise ValueError(f"pos_embed: cannot resize {old_m} patch positions to {new_num_patches} "
                         "(both must be square grids)")
    c_old = {"middle": old_m // 2, "first": 0, None: 0}[cls_index]
    c_new = {"middle": new_num_patches // 2, "first": 0, None: 0}[cls_index]
    cls = pos_embed[:, c_old:c_old + has_cls]
    patches = torch.cat([pos_embed[:, :c_old], pos_embed[:, c_old + has_cls:]], dim=1)
    dim = patches.shape[-1]
    grid = patches.reshape(1, old_side, old_side, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_num_patches, dim).to(pos_embed.dtype)
    return torch.cat([patches[:, :c_new], cls, patches[:, c_new:]], dim=1)


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did. All lists hold parameter names."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    new_initialised: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = []
        for name in ("missing", "unexpected", "mismatched", "new_initialised", "skipped_head", "resized"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name} ({len(items)}): {_abbrev(items)}")
        return "; ".join(parts) if parts else "all keys matched"


def _abbrev(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", … (+{len(names) - limit})" if len(names) > limit else "")


def _is_dynamic(name: str) -> bool:
    return name.startswith(DYNAMIC_PREFIXES) or name.endswith(DYNAMIC_SUFFIXES)


def load_checkpoint(model: nn.Module, path: str | os.PathLike | dict, *, key: str = "auto",
                    strict: Optional[bool] = None, skip_mismatched_head: bool = False,
                    map_location: str | torch.device = "cpu") -> LoadReport:
    """Load weights into ``model`` and report what happened.

    Args:
        path: a ``.pth``/``.pt`` file (official training checkpoint, our own checkpoint or a bare
            state dict), a ``.safetensors`` file, or an in-memory checkpoint dict.
        key: ``auto`` (``model`` → ``state_dict`` → bare), ``model``, ``model_ema``, ...
        strict: True: every key must match. False: report and go on. None (default): strict, except
            that a DyVM model may start from a plain Vim checkpoint, its predictors and routers
            being reported as newly initialised.
        skip_mismatched_head: keep the model's head when the checkpoint's class count differs
            (fine-tuning to new classes) instead of failing.

    ``pos_embed`` is resized when the patch grid differs. Raises ``ValueError`` naming the keys for
    shape mismatches (a checkpoint of another size) and, when strict, missing/unexpected keys.
    """
    source = "checkpoint" if isinstance(path, dict) else repr(os.fspath(path))
    ckpt = path if isinstance(path, dict) else read_checkpoint(path, map_location)
    state = extract_state_dict(ckpt, key)
    own = model.state_dict()
    report = LoadReport()

    checkpoint_filter = getattr(type(model), "checkpoint_filter", None)  # the family's own adaptation
    if checkpoint_filter is not None:
        before = {k: tuple(v.shape) for k, v in state.items()}
        state = checkpoint_filter(state, model)
        report.resized = sorted(k for k, v in state.items() if k in before and tuple(v.shape) != before[k])
        for k in report.resized:
            log.info("resized %s %s -> %s", k, before[k], tuple(state[k].shape))

    head_keys = [k for k in ("head.weight", "head.bias") if k in state and k in own]
    if any(state[k].shape != own[k].shape for k in head_keys) and skip_mismatched_head:
        for k in head_keys:
            state.pop(k)
        report.skipped_head = head_keys

    for k, v in state.items():
        if k in own and v.shape != own[k].shape:
            report.mismatched.append(f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})")
    if report.mismatched:
        hint = ("; the class count differs: pass skip_mismatched_head=True to fine-tune to new classes"
                if all(m.startswith("head.") for m in report.mismatched) else
                "; is this a checkpoint of another model size or architecture?")
        raise ValueError(f"{source} does not fit this model: shape mismatch for "
                         f"{_abbrev(report.mismatched, 3)}{hint}")

    report.missing = sorted(set(own) - set(state) - set(report.skipped_head))
    report.unexpected = sorted(set(state) - set(own))
    if report.missing and len(report.missing) == len(own):
        raise ValueError(f"{source} shares no parameter names with this model "
                         f"(e.g. checkpoint has {_abbrev(sorted(state), 3)}); is it a checkpoint of another architecture?")
    dynamic_missing = [k for k in report.missing if _is_dynamic(k)]
    vim_into_dyvm = bool(dynamic_missing) and len(dynamic_missing) == len(report.missing) and \
        not any(_is_dynamic(k) for k in state)
    if strict is None:
        strict_now = not vim_into_dyvm
        if vim_into_dyvm:
            report.new_initialised, report.missing = report.missing, []
    else:
        strict_now = strict
    if strict_now and (report.missing or report.unexpected):
        raise ValueError(f"{source}: strict loading failed; missing keys: {_abbrev(report.missing) or 'none'}; "
                         f"unexpected keys: {_abbrev(report.unexpected) or 'none'}")

    model.load_state_dict(state, strict=False)
    if report.new_initialised and getattr(model, "is_dynamic", False):
        model.reset_dynamic_parameters()
    log.info("loaded %s: %s", source, report)
    return report
