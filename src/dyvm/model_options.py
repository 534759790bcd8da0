"""The one road from options to :func:`dyvm.models.create_model` keywords.

``dyvm train`` / ``eval`` / ``flops`` / ``predict`` / ``viz``, their YAML files (which become the same
argparse options) and the Python API (:class:`dyvm.engine.TrainConfig`, keyword arguments) all turn
their model and DyVM options into constructor keywords here, so a flag means the same in every
command.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

ARCHITECTURE_OPTIONS = ("img_size", "patch_size", "depth", "embed_dim", "num_classes", "in_chans", "scan_backend")
# The DyVM options; a plain model has none of them.
DYNAMIC_OPTIONS = ("token_keep_ratio", "block_keep_ratio", "router_threshold", "score", "pruning_loc",
                   "predictor_input", "use_routers", "use_pruning", "token_sampler", "slot_prior", "token_noise",
                   "pruned_token_grad", "baseline_masks", "drop_pruned_tail", "keep_ratio_source")
# DyVM options that a built model changes in place (``model.configure``), without rebuilding.
INFERENCE_OPTIONS = ("token_keep_ratio", "router_threshold", "score")
# What a model predicts (``model.task``), chosen by ``--task``.
TASKS = ("classification", "segmentation")


def check_task(task: str, model: Optional[str] = None) -> None:
    """``task`` is one of TASKS and ``model`` (a registered name, when given) predicts what it asks for."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    if model is None:
        return
    from .models.registry import model_class

    kind = model_class(model).task
    if kind != task:
        hint = "a segmenter such as vim_seg_micro / dyvm_vim_seg_micro" if task == "segmentation" else \
            "a classifier such as vim_tiny / dyvm_vim_tiny"
        raise ValueError(f"--model {model} is a {kind} model; --task {task} needs {hint}")


def default_pruning_loc(depth: int) -> list[int]:
    """The official [6, 12, 18] of 24 layers scaled to ``depth``, without repeats or layer 0."""
    locs = sorted({d for d in (depth // 4, depth // 2, 3 * depth // 4) if 1 <= d <= depth - 1})
    if not locs:
        raise ValueError(f"--depth {depth}: a DyVM needs at least 2 layers to prune tokens between them "
                         "(or pass --no-pruning)")
    return locs


def given_options(options: Any, names: tuple[str, ...] = DYNAMIC_OPTIONS) -> list[str]:
    """The ``names`` set in ``options`` (a TrainConfig, an argparse Namespace or a dict): not None, and for the
    switches ``use_routers`` / ``use_pruning`` (on by default) set to False."""
    get = options.get if isinstance(options, Mapping) else lambda key: getattr(options, key, None)
    return [name for name in names
            if (get(name) is False if name in ("use_routers", "use_pruning") else get(name) is not None)]


def refuse_dynamic_options(model: str, given: list[str], verb: str = "use") -> None:
    """One-line ValueError when DyVM options (``given``, option names) were set for the plain model ``model``,
    which has no predictors or routers to apply them to: the flags are named, and the DyVM to ``verb`` instead."""
    if not given:
        return
    from .models.registry import list_models

    switches = {"use_routers": "no-routers", "use_pruning": "no-pruning"}
    flags = ", ".join("--" + switches.get(name, name.replace("_", "-")) for name in given)
    dynamic = "dyvm_" + model
    hint = f"{verb} a DyVM with --model {dynamic}, or drop them" if dynamic in list_models() else "drop them"
    raise ValueError(f"{flags}: DyVM options, but --model {model} is a plain model with no predictors or routers "
                     f"({hint})")


def model_overrides(options: Any, dynamic: Optional[bool] = None) -> dict[str, Any]:
    """``create_model`` keywords from ``options``: a TrainConfig, an argparse Namespace or a dict.

    Options that are unset (None or absent) are left to the model's preset; ``drop_path`` becomes
    ``drop_path_rate``. ``dynamic`` says whether the model is a DyVM: False drops
    the DyVM options (a plain model has none), True also scales the default ``pruning_loc`` to a
    given ``depth``, None (not known before a checkpoint is read) passes them on as given.
    """
    get = options.get if isinstance(options, Mapping) else lambda key: getattr(options, key, None)
    names = ARCHITECTURE_OPTIONS + (DYNAMIC_OPTIONS if dynamic is not False else ())
    kwargs = {key: get(key) for key in names if get(key) is not None}
    if get("drop_path") is not None:  # 0 too: the segmentation backbone's own default is 0.1
        kwargs["drop_path_rate"] = get("drop_path")
    if dynamic and kwargs.get("pruning_loc") is None and "depth" in kwargs and kwargs.get("use_pruning", True):
        kwargs["pruning_loc"] = default_pruning_loc(kwargs["depth"])
    return kwargs
