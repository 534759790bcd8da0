"""Datasets and transforms: Fashion-MNIST from its original idx files, any ImageFolder tree.

Splits: ``train`` (minus a held-out validation split used for model selection), ``val`` (the
held-out part: the last ``val_size`` images of Fashion-MNIST's training set, or a fixed random
subset of an ImageFolder's ``train/``), ``test`` (Fashion-MNIST's official 10,000 test images, or
the ImageFolder's ``val/``; only for final numbers).
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a uint8 array."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable idx file ({exc})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated ({body.size} bytes of {int(np.prod(shape))})")
    return body.reshape(shape)


def find_fashion_mnist(data_path: Optional[str] = None) -> Path:
    """The folder holding the Fashion-MNIST idx files (``data_path`` or Debian's location)."""
    candidates = [data_path] if data_path else list(FASHION_MNIST_DIRS)
    for root in candidates:
        for sub in ("", "FashionMNIST/raw", "raw"):
            folder = Path(root) / sub
            if all(_idx_file(folder, name) for pair in _FILES.values() for name in pair):
                return folder
    where = f"--data-path {data_path}" if data_path else f"{FASHION_MNIST_DIRS[0]} (apt-get install dataset-fashion-mnist)"
    if data_path and not Path(data_path).exists():
        raise FileNotFoundError(f"--data-path {data_path}: no such directory")
    raise FileNotFoundError(f"Fashion-MNIST idx files (train-images-idx3-ubyte[.gz], ...) not found in {where}")


def _idx_file(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


class FashionMNIST(Dataset):
    """Fashion-MNIST from idx files. Items: (transformed image, label). Images are 28×28 grey PIL
    images before the transform ("L"; converted to "RGB" when ``channels == 3``)."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: Optional[str] = None, split: str = "train", transform: Optional[Callable] = None,
                 channels: int = 1, download: bool = False):
        if split not in _FILES:
            raise ValueError(f"split={split!r}; expected 'train' or 'test'")
        try:
            folder = find_fashion_mnist(root)
        except FileNotFoundError:
            if not download:
                raise
            from torchvision.datasets import FashionMNIST as TVFashionMNIST

            TVFashionMNIST(root or "data", train=True, download=True)
            TVFashionMNIST(root or "data", train=False, download=True)
            folder = find_fashion_mnist(root or "data")
        images, labels = (read_idx(_idx_file(folder, n)) for n in _FILES[split])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{folder}: idx files of split {split!r} do not match ({images.shape}, {labels.shape})")
        self.images, self.targets = images, torch.from_numpy(labels.astype(np.int64))
        self.transform, self.channels, self.root = transform, channels, str(folder)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index], mode="L")
        if self.channels == 3:
            img = img.convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.targets[index])


class SafeImageFolder(Dataset):
    """torchvision ImageFolder whose unreadable files are skipped (returns None, warned once per
    file, dropped by :func:`collate_skip_none`) or, with ``on_corrupt='fail'``, raise naming the file."""

    def __init__(self, root: str, transform: Optional[Callable] = None, channels: int = 3, on_corrupt: str = "skip"):
        from torchvision.datasets import ImageFolder

        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: no such directory")
        try:
            self.folder = ImageFolder(root, loader=lambda p: p)  # paths only; decoding happens here
        except FileNotFoundError as exc:
            raise ValueError(f"{root}: no class folders with images ({exc})") from None
        self.classes, self.targets = self.folder.classes, self.folder.targets
        self.transform, self.channels, self.on_corrupt = transform, channels, on_corrupt

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int):
        path, target = self.folder.samples[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB" if self.channels == 3 else "L")
        except Exception as exc:
            if self.on_corrupt == "fail":
                raise ValueError(f"unreadable image {path}: {type(exc).__name__}: {exc}") from None
            warnings.warn(f"skipping unreadable image {path} ({type(exc).__name__})", RuntimeWarning)
            return None
        return (self.transform(img) if self.transform else img), target


def collate_skip_none(batch: list):
    """Default collation after dropping the items of unreadable files (None)."""
    from torch.utils.data import default_collate

    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return default_collate(kept)


def data_config_for(model: torch.nn.Module) -> dict[str, Any]:
    """Preprocessing of ``model`` (timm's ``pretrained_cfg`` keys: input_size, mean, std, crop_pct,
    interpolation), as ``timm.data.resolve_data_config`` reads it."""
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)


def build_transform(data_cfg: dict[str, Any], is_training: bool, aa: Optional[str] = None, reprob: float = 0.0,
                    scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5, color_jitter: float = 0.0):
    """timm's transform for the model's data config (train: RandomResizedCrop, flip, RandAugment,
    random erasing; eval: resize by crop_pct, center crop)."""
    from timm.data import create_transform

    c, h, _ = data_cfg["input_size"]
    if is_training:
        return create_transform(input_size=data_cfg["input_size"], is_training=True, scale=scale, hflip=hflip,
                                auto_augment=None if aa in (None, "none", "") else aa, re_prob=reprob,
                                re_mode="pixel", re_count=1, interpolation=data_cfg["interpolation"],
                                mean=data_cfg["mean"], std=data_cfg["std"], color_jitter=color_jitter or None)
    return create_transform(input_size=data_cfg["input_size"], is_training=False,
                            interpolation=data_cfg["interpolation"], mean=data_cfg["mean"], std=data_cfg["std"],
                            crop_pct=data_cfg["crop_pct"])


def build_dataset(dataset: str, split: str, transform: Optional[Callable], data_path: Optional[str] = None,
                  channels: int = 3, val_size: int = 5000, on_corrupt: str = "skip", subset: Optional[int] = None,
                  download: bool = False) -> Dataset:
    """``split`` in train / val / test, as described in the module docstring."""
    from torch.utils.data import Subset

    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}; expected train, val or test")
    if dataset == "fashion-mnist":
        full = FashionMNIST(data_path, "test" if split == "test" else "train", transform, channels, download)
        order = np.arange(len(full))
    elif dataset == "imagefolder":
        if not data_path:
            raise ValueError("--data-path is required for --dataset imagefolder (a folder with train/ and val/)")
        sub = "val" if split == "test" else "train"
        full = SafeImageFolder(os.path.join(data_path, sub), transform, channels, on_corrupt)
        order = np.random.default_rng(0).permutation(len(full)) if split != "test" else np.arange(len(full))
    else:
        raise ValueError(f"dataset={dataset!r}; expected fashion-mnist or imagefolder")
    if len(full) == 0:
        raise ValueError(f"{dataset} split {split!r} is empty")
    if split != "test":
        if not 0 <= val_size < len(full):
            raise ValueError(f"val_size={val_size} must be in [0, {len(full)}) for this training set")
        order = order[len(order) - val_size:] if split == "val" else order[:len(order) - val_size]
    if subset is not None and split == "train":
        if subset < 1:
            raise ValueError(f"subset must be >= 1, got {subset}")
        order = order[:subset]
    ds = Subset(full, order.tolist()) if len(order) != len(full) or split != "test" else full
    ds.classes = full.classes  # type: ignore[attr-defined]
    return ds


def num_classes_of(ds: Dataset) -> int:
    return len(getattr(ds, "classes"))
