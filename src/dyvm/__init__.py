"""dyvm: Dynamic Vision Mamba (DyVM, arXiv 2504.04787) on CPUs and GPUs.

    import dyvm
    vim = dyvm.create_model("vim_small", checkpoint_path="vim_s_midclstok_80p5acc.pth")
    model = dyvm.create_model("dyvm_vim_small", checkpoint_path="vim_s_midclstok_80p5acc.pth")
    dyvm.count_flops(model)            # G multiply-accumulates per image

The command line's work is all here too: ``dyvm.train``, ``dyvm.evaluate_checkpoint``,
``dyvm.count_flops``, ``dyvm.bench_backbone`` / ``dyvm.bench_dyvm``, ``dyvm.convert_checkpoint``,
``dyvm.run_demo``, ``dyvm.visualize_pruning``, ``dyvm.predict``, ``dyvm.export_model`` (and
``dyvm.load_exported``).

Attributes are imported lazily, so ``dyvm --help`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

__version__ = "0.1.0"
TORCH_FLOOR = (2, 5)  # torch.serialization.safe_globals (safe checkpoint loading) appeared in 2.5


def _check_torch(version: Optional[str]) -> None:
    """Raise ImportError with a clear message when torch is missing or older than TORCH_FLOOR."""
    floor = ".".join(map(str, TORCH_FLOOR))
    if version is None:
        raise ImportError(f"dyvm needs PyTorch >= {floor}, which is not installed: pip install 'torch>={floor}'")
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < TORCH_FLOOR:
        raise ImportError(f"dyvm needs PyTorch >= {floor}, found torch {version}: pip install -U 'torch>={floor}'")


def _torch_version() -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


_check_torch(_torch_version())  # without importing torch, so `dyvm --help` stays fast

_LAZY = {
    "create_model": "dyvm.models", "list_models": "dyvm.models", "VisionMamba": "dyvm.models",
    "DyVM": "dyvm.models", "load_checkpoint": "dyvm.checkpoint", "LoadReport": "dyvm.checkpoint",
    "save_checkpoint": "dyvm.checkpoint", "convert_checkpoint": "dyvm.checkpoint",
    "count_flops": "dyvm.flops", "solve_keep_ratio": "dyvm.flops", "DyVMLoss": "dyvm.losses",
    "train": "dyvm.engine", "evaluate_checkpoint": "dyvm.evaluate", "run_demo": "dyvm.demo",
    "visualize_pruning": "dyvm.viz", "bench_backbone": "dyvm.bench", "bench_dyvm": "dyvm.bench",
    "selective_scan": "dyvm.kernels", "predict": "dyvm.prediction", "export_model": "dyvm.export",
    "load_exported": "dyvm.export",
}
_SUBMODULES = {"bench", "checkpoint", "cli", "data", "demo", "dynamic", "engine", "evaluate", "export", "flops", "kernels",
               "losses", "model_options", "models", "prediction", "utils", "viz", "weights"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"dyvm.{name}")
    raise AttributeError(f"module 'dyvm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__ + sorted(_SUBMODULES)
