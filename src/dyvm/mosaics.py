"""Fashion-MNIST mosaics: a small, real semantic-segmentation task (``dyvm train --task segmentation``).

Each mosaic is a ``canvas × canvas`` grey picture holding 2–4 real 28×28 Fashion-MNIST garments
at random places (later ones on top). A pixel's label is the class (0–9) of the topmost garment
whose pixel there is foreground (value ≥ ``FOREGROUND_THRESHOLD``), else ``BACKGROUND`` (10).

Splits: ``train`` mosaics are made of the official training images except the last 5,000
(the classification's held-out images), ``val`` of those last 5,000, ``test`` of the official
10,000 test images. Every split is drawn by its own fixed seed with numpy's PCG64, all mosaics at
once (no per-sample Python work): the same arguments give the same mosaics on every machine.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .data import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, VAL_CAP, FashionMNIST

CANVAS = 56                  # mosaic side (px): two garments side by side
GARMENT = 28                 # Fashion-MNIST side
GARMENTS_PER_MOSAIC = (2, 4)  # inclusive range
FOREGROUND_THRESHOLD = 32    # uint8 pixel value from which a garment pixel is the garment (not background)
BACKGROUND = len(FASHION_MNIST_CLASSES)  # label 10
MOSAIC_CLASSES = tuple(FASHION_MNIST_CLASSES) + ("background",)
MOSAIC_SIZES = {"train": 20000, "val": 1000, "test": 2000}   # default number of mosaics per split
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
SEGMENTATION_IGNORE = 255


def garment_pool(split: str, data_path: Optional[str] = None, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The garments (N, 28, 28) uint8 and classes (N,) a split's mosaics are made of."""
    if split not in MOSAIC_SIZES:
        raise ValueError(f"split={split!r}; expected train, val or test")
    fm = FashionMNIST(data_path, "test" if split == "test" else "train", download=download)
    images, labels = fm.images, fm.targets.numpy()
    if split == "train":
        return images[:len(images) - VAL_CAP], labels[:len(images) - VAL_CAP]
    if split == "val":
        return images[len(images) - VAL_CAP:], labels[len(images) - VAL_CAP:]
    return images, labels


def make_mosaics(garments: np.ndarray, classes: np.ndarray, count: int, seed: int, canvas: int = CANVAS,
                 per_mosaic: tuple[int, int] = GARMENTS_PER_MOSAIC, threshold: int = FOREGROUND_THRESHOLD
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` mosaics from ``garments`` (N, g, g) uint8 with ``classes`` (N,).

    Returns images (count, canvas, canvas) uint8, labels (count, canvas, canvas) uint8 and the
    placements (count, max garments, 4) int64: garment index, top, left, 1 if placed (in paint order)."""
    if count < 1:
        raise ValueError(f"mosaic count must be >= 1, got {count}")
    g = garments.shape[-1]
    lo, hi = per_mosaic
    if canvas < g or not 1 <= lo <= hi:
        raise ValueError(f"canvas={canvas} must hold a {g}-px garment and 1 <= {lo} <= {hi}")
    rng = np.random.default_rng(seed)
    n_placed = rng.integers(lo, hi + 1, size=count)
    which = rng.integers(0, len(garments), size=(count, hi))
    top = rng.integers(0, canvas - g + 1, size=(count, hi))
    left = rng.integers(0, canvas - g + 1, size=(count, hi))
    placed = np.arange(hi)[None] < n_placed[:, None]
    images = np.zeros((count, canvas, canvas), np.uint8)
    labels = np.full((count, canvas, canvas), BACKGROUND, np.uint8)
    n = np.arange(count)[:, None, None]
    offs = np.arange(g)
    for slot in range(hi):  # paint order: a later garment covers an earlier one where it is foreground
        rows = top[:, slot, None, None] + offs[None, :, None]
        cols = left[:, slot, None, None] + offs[None, None, :]
        pixels = garments[which[:, slot]]
        fg = (pixels >= threshold) & placed[:, slot, None, None]
        images[n, rows, cols] = np.where(fg, pixels, images[n, rows, cols])
        labels[n, rows, cols] = np.where(fg, classes[which[:, slot]][:, None, None].astype(np.uint8),
                                         labels[n, rows, cols])
    placements = np.stack([which, top, left, placed.astype(np.int64)], -1)
    return images, labels, placements


class FashionMNISTMosaics(Dataset):
    """One split of the mosaics. Items: (image (1, H, W) float normalised with Fashion-MNIST's mean/std,
    labels (H, W) int64). ``classes``: the 10 garment classes and "background"."""

    classes = MOSAIC_CLASSES

    def __init__(self, split: str = "train", count: Optional[int] = None, data_path: Optional[str] = None,
                 canvas: int = CANVAS, download: bool = False):
        garments, garment_classes = garment_pool(split, data_path, download)
        count = MOSAIC_SIZES[split] if count is None else count
        images, labels, self.placements = make_mosaics(garments, garment_classes, count, _SPLIT_SEEDS[split], canvas)
        self.split, self.canvas = split, canvas
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return normalise(self.images[index][None]), self.labels[index].long()


def normalise(images: Tensor) -> Tensor:
    """uint8 pictures (..., H, W) → the model's input: /255, Fashion-MNIST mean/std."""
    return (images.float() / 255 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
