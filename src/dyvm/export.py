"""``dyvm export`` / :func:`export_model`: a Vim-family model as a ``torch.export`` program (.pt2).

The selective scan and the causal conv are the custom ops ``torch.ops.dyvm.selective_scan`` and
``torch.ops.dyvm.causal_conv1d`` (with fake kernels), so dynamo and ``torch.export`` trace the
whole eval-mode forward as one graph, Vim and DyVM alike: ``torch._dynamo.explain`` reports no
graph break. What makes DyVM's inference static in a traced program:

- token pruning keeps ``int(ρ_k · M)`` tokens per stage (top-k with a fixed k): static shapes;
- a router-skipped SSM branch is computed for every image and multiplied by its 0/1 gate (as in
  training) instead of running on the sub-batch of images that need it (a data-dependent shape).
  The logits are the eager ones; the compute a skipped branch saves in eager mode is not saved;
- the NaN/Inf input check is an in-graph assertion (``RuntimeError`` instead of ``ValueError``);
- ``forward_inference(x).cls_positions`` (Python ints) is empty when traced (use ``prefix_positions``).

Loading a program needs the ops registered: ``import dyvm.kernels`` (or use :func:`load_exported`)
before ``torch.export.load``.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor, nn


def example_input(model: nn.Module, batch_size: int = 1, seed: int = 0) -> Tensor:
    """A normal-noise image batch (B, C, H, W) the model takes (what the export traces with)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, model.in_chans, model.img_size, model.img_size, generator=gen)


def export_model(model: nn.Module, example: Tensor, path: Optional[str | os.PathLike] = None,
                 dynamic_batch: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` program of ``model.eval()`` traced on ``example`` (B, C, H, W); written to ``path``
    (atomically) when given. dynamic_batch: the program takes any batch size (the example's batch
    must then be >= 2, torch.export specialises a traced size of 1); else only the example's."""
    from . import kernels  # noqa: F401 (registers the custom ops)

    if dynamic_batch and example.shape[0] < 2:
        raise ValueError("dynamic_batch needs an example batch of at least 2 images (a traced batch of 1 is "
                         "specialised by torch.export)")
    if path is not None and os.path.isdir(path):
        raise ValueError(f"{os.fspath(path)} is a directory; give a file name to write")
    model.eval()
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    if path is not None:
        from .checkpoint import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                torch.export.save(program, fh)

        atomic_write(path, write)
    return program


def load_exported(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """``torch.export.load`` after registering dyvm's custom ops; run it with ``.module()(x)``."""
    from . import kernels  # noqa: F401 (registers the custom ops)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such file")
    return torch.export.load(path)


def _check_writable(path: str) -> None:
    """Fail before the (slow) export when ``path`` cannot be written."""
    if os.path.isdir(path):
        raise ValueError(f"OUT {path} is a directory; give a file name such as model.pt2")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"OUT {path}: cannot create the folder {parent} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"OUT {path}: the folder {parent} is not writable")


def export_cli(args) -> int:
    from .evaluate import load_for_eval

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_writable(args.output)
    model = load_for_eval(args.checkpoint, args.model).eval()
    batch = max(args.batch_size, 2) if args.dynamic_batch else args.batch_size
    x = example_input(model, batch)
    program = export_model(model, x, args.output, dynamic_batch=args.dynamic_batch)
    with torch.no_grad():
        diff = (program.module()(x) - model(x)).abs().max().item()
    shape = f"(B, {model.in_chans}, {model.img_size}, {model.img_size})" if args.dynamic_batch else tuple(x.shape)
    print(f"wrote {args.output}: {type(model).__name__} taking {shape}; max |exported - eager| logit "
          f"difference {diff:.2e}. Load it after `import dyvm.kernels` (or with dyvm.export.load_exported).")
    return 0
