"""dyvm: Dynamic Vision Mamba (DyVM, arXiv 2504.04787) on CPUs and GPUs.

    import dyvm
    vim = dyvm.create_model("vim_small", checkpoint_path="vim_s_midclstok_80p5acc.pth")
    model = dyvm.create_model("dyvm_vim_small", checkpoint_path="vim_s_midclstok_80p5acc.pth")
    dyvm.count_flops(model)            # G multiply-accumulates per image

The command line's work is all here too: ``dyvm.train``, ``dyvm.evaluate_checkpoint``,
``dyvm.count_flops``, ``dyvm.bench_backbone`` / ``dyvm.bench_dyvm``, ``dyvm.convert_checkpoint``,
``dyvm.run_demo``, ``dyvm.visualize_pruning``.

Attributes are imported lazily, so ``dyvm --help`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "dyvm.models", "list_models": "dyvm.models", "VisionMamba": "dyvm.models",
    "DyVM": "dyvm.models", "load_checkpoint": "dyvm.checkpoint", "LoadReport": "dyvm.checkpoint",
    "save_checkpoint": "dyvm.checkpoint", "convert_checkpoint": "dyvm.checkpoint",
    "count_flops": "dyvm.flops", "solve_keep_ratio": "dyvm.flops", "DyVMLoss": "dyvm.losses",
    "train": "dyvm.engine", "evaluate_checkpoint": "dyvm.evaluate", "run_demo": "dyvm.demo",
    "visualize_pruning": "dyvm.viz", "bench_backbone": "dyvm.bench", "bench_dyvm": "dyvm.bench",
    "selective_scan": "dyvm.kernels",
}
_SUBMODULES = {"bench", "checkpoint", "cli", "data", "demo", "dynamic", "engine", "evaluate", "flops", "kernels",
               "losses", "models", "viz", "weights"}

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
