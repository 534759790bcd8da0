"""``dyvm predict`` / :func:`predict`: classify image files with a trained checkpoint.

Per image: the top-k classes (names stored in the checkpoint by ``dyvm train``) with their
probabilities and, for DyVM, the fraction of patch tokens kept after the last pruning stage and the
fraction of SSM branches (forward/backward, all layers) that ran for that image.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, Optional, Sequence

import torch


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named in ``inputs`` or found (recursively, sorted) in the folders among them."""
    from .data import _is_image

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, names in os.walk(item) for f in names
                           if _is_image(f) and not f.startswith("."))
            if not found:
                raise ValueError(f"{item}: no image files in this folder")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise ValueError("no images given")
    return files


class _Files(torch.utils.data.Dataset):
    def __init__(self, files: list[str], transform, channels: int):
        self.files, self.transform, self.channels = files, transform, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from .data import read_image

        try:
            return i, self.transform(read_image(self.files[i], self.channels)), None
        except Exception as exc:  # reported per image, the others go on
            return i, None, f"unreadable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def _collate(batch):
    ok = [b for b in batch if b[1] is not None]
    images = torch.stack([b[1] for b in ok]) if ok else None
    return [b[0] for b in ok], images, [(b[0], b[2]) for b in batch if b[1] is None]


@torch.no_grad()
def predict(images: str | os.PathLike | Iterable[str | os.PathLike], checkpoint: str, *, model: Optional[str] = None,
            top_k: int = 5, batch_size: int = 64, device: Optional[str] = None, progress: bool = False,
            token_keep_ratio: Optional[float] = None, router_threshold: Optional[float] = None,
            workers: int = 0) -> list[dict[str, Any]]:
    """Classify image files and/or folders with ``checkpoint``.

    Returns one dict per image, in input order (folders sorted): ``path``, ``top`` (list of
    ``{"class", "index", "prob"}``, best first) and, for a DyVM, ``token_keep`` (fraction of the
    patch tokens left after the last pruning stage), ``token_keep_per_stage`` and ``branch_keep``
    (fraction of SSM branches that ran). An unreadable file gets ``error`` instead of ``top``.
    """
    from torch.utils.data import DataLoader

    from .data import build_transform, data_config_for
    from .evaluate import load_for_eval
    from .model_options import model_overrides

    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {top_k!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r}")
    files = collect_images([images] if isinstance(images, (str, os.PathLike)) else list(images))
    knobs = model_overrides(dict(token_keep_ratio=token_keep_ratio, router_threshold=router_threshold))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = load_for_eval(checkpoint, model, knobs).to(dev).eval()
    if net.task != "classification":
        raise ValueError(f"--checkpoint {checkpoint}: a {net.task} model; dyvm predict classifies images "
                         "(dyvm eval scores a segmenter, dyvm viz draws its pruning)")
    names = net.class_names
    is_dyvm = net.is_dynamic
    k = min(top_k, net.num_classes)
    loader = DataLoader(_Files(files, build_transform(data_config_for(net), False), net.in_chans),
                        batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate)
    results: list[Optional[dict[str, Any]]] = [None] * len(files)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr, dynamic_ncols=True)
    for idx, x, errors in loader:
        for i, err in errors:
            results[i] = dict(path=files[i], error=err)
        if x is not None:
            x = x.to(dev)
            if is_dyvm:
                out = net.forward_inference(x)
                logits = out.logits
                gates = out.gates.float().mean(dim=(0, 2)).cpu()                       # (B,)
                kept = [len(ki[0]) / net.num_patches for ki in out.keep_indices] if out.keep_indices else []
            else:
                logits = net(x)
            prob, top = logits.float().softmax(-1).topk(k, dim=-1)
            for row, i in enumerate(idx):
                r: dict[str, Any] = dict(path=files[i], top=[
                    dict(**{"class": names[int(c)]}, index=int(c), prob=float(p)) for p, c in zip(prob[row], top[row])])
                if is_dyvm:
                    r.update(token_keep=kept[-1] if kept else 1.0, token_keep_per_stage=kept,
                             branch_keep=float(gates[row]))
                results[i] = r
        if bar is not None:
            bar.update(len(idx) + len(errors))
    if bar is not None:
        bar.close()
    return [r for r in results if r is not None]


def format_prediction(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['path']}: error: {r['error']}"
    tops = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
    extra = (f"  [tokens kept {100 * r['token_keep']:.0f}%, branches run {100 * r['branch_keep']:.0f}%]"
             if "token_keep" in r else "")
    return f"{r['path']}: {tops}{extra}"


def predict_cli(args) -> int:
    results = predict(args.images, args.checkpoint, model=args.model, top_k=args.top_k, batch_size=args.batch_size,
                      device=args.device, token_keep_ratio=args.token_keep_ratio,
                      router_threshold=args.router_threshold,
                      progress=not args.no_progress and (len(args.images) > 1 or any(os.path.isdir(p) for p in args.images)))
    if args.json == "-":
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(format_prediction(r))
        if args.json:
            from .checkpoint import atomic_write

            text = json.dumps(results, indent=2)
            atomic_write(args.json, lambda tmp: open(tmp, "w").write(text))
    failed = sum("error" in r for r in results)
    if failed:
        print(f"dyvm predict: {failed} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed == len(results) else 0
