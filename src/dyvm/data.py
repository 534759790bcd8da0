"""Datasets and transforms: Fashion-MNIST from its original idx files, any ImageFolder tree.

Splits: ``train`` (minus a held-out validation split used for model selection), ``val`` (the
held-out part: the last ``val_size`` images of Fashion-MNIST's training set, or a fixed random
subset of an ImageFolder's ``train/``), ``test`` (Fashion-MNIST's official 10,000 test images, or
the ImageFolder's ``val/``; only for final numbers).

The held-out validation split defaults to 10% of the training images, capped at 5,000
(:func:`default_val_size`; Fashion-MNIST: 5,000 of 60,000).

ImageFolder layouts: ``ROOT/train/<class>/*`` with ``ROOT/val/<class>/*`` (the same class
folders), or a single tree ``ROOT/<class>/*`` (also ``ROOT/train/`` alone) whose ``test`` split is
a deterministic, per-class ``val_fraction`` of every class. Images are read as they come (any
mode PIL opens: grey, RGB, alpha, palette, CMYK, 16-bit; EXIF rotation applied) and converted to
the model's channel count by :func:`to_model_mode`.

Fashion-MNIST on a canvas (``canvas=N``, ``dyvm train --canvas N``): every image is placed on a black N x N
canvas at an offset drawn once per image (uniform, each axis, from a fixed seed per split), so the garment moves
and most patches are background: the data where token selection has something to find.
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_FIX = "apt-get install -y dataset-fashion-mnist"
VAL_FRACTION, VAL_CAP = 0.1, 5000   # default held-out validation split: 10% of train, at most 5,000
CANVAS_SEEDS = {"train": 1, "test": 2}  # the offsets belong to the data, not to a run's seed
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
    if data_path and not Path(data_path).exists():
        raise FileNotFoundError(f"--data-path {data_path}: no such directory")
    if data_path:
        raise FileNotFoundError(f"--data-path {data_path}: no Fashion-MNIST idx files (train-images-idx3-ubyte[.gz], "
                                "...) there; add --download to fetch them there")
    raise FileNotFoundError(f"Fashion-MNIST is not installed ({FASHION_MNIST_DIRS[0]} is missing); fix: "
                            f"{FASHION_MNIST_FIX}  (elsewhere: add --download, or --data-path DIR)")


def _idx_file(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def place_on_canvas(images: np.ndarray, canvas: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, canvas, canvas) images with each of ``images`` (N, S, S) at its own offset, and the (N, 2) offsets
    (row, column), uniform in 0..canvas - S from ``seed``; the rest is 0."""
    n, size = len(images), images.shape[1]
    offsets = np.random.default_rng(seed).integers(0, canvas - size + 1, size=(n, 2))
    placed = np.zeros((n, canvas, canvas), dtype=images.dtype)
    span = np.arange(size)
    rows = (offsets[:, 0, None] + span)[:, :, None]  # (N, S, 1)
    cols = (offsets[:, 1, None] + span)[:, None, :]  # (N, 1, S)
    placed[np.arange(n)[:, None, None], rows, cols] = images
    return placed, offsets


class FashionMNIST(Dataset):
    """Fashion-MNIST from idx files. Items: (transformed image, label). Images are 28×28 grey PIL
    images before the transform ("L"; converted to "RGB" when ``channels == 3``), or ``canvas`` × ``canvas``
    with the garment at ``self.offsets[i]`` (:func:`place_on_canvas`) when ``canvas`` is set."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: Optional[str] = None, split: str = "train", transform: Optional[Callable] = None,
                 channels: int = 1, download: bool = False, canvas: int = 0):
        if split not in _FILES:
            raise ValueError(f"split={split!r}; expected 'train' or 'test'")
        check_canvas(canvas)
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
        self.offsets = None
        if canvas:
            images, self.offsets = place_on_canvas(images, canvas, CANVAS_SEEDS[split])
        self.images, self.targets = images, torch.from_numpy(labels.astype(np.int64))
        self.transform, self.channels, self.root, self.canvas = transform, channels, str(folder), canvas

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index], mode="L")
        if self.channels == 3:
            img = img.convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.targets[index])


def check_canvas(canvas: int, dataset: str = "fashion-mnist") -> None:
    """One-line errors for ``--canvas``: 0 (off) or an integer of at least 28, Fashion-MNIST only."""
    if canvas and dataset != "fashion-mnist":
        raise ValueError(f"--canvas {canvas}: applies to --dataset fashion-mnist only, not {dataset}")
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)) or (canvas and canvas < 28):
        raise ValueError(f"--canvas {canvas!r}: 0 (the garments as they are) or a canvas size of at least 28 px")


def to_model_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL image → "L" (``channels == 1``) or "RGB" (``channels == 3``): EXIF rotation applied,
    palette and CMYK converted, alpha dropped, 16/32-bit grey scaled to 8 bits."""
    from PIL import ImageOps

    if channels not in (1, 3):
        raise ValueError(f"in_chans={channels}: images can be read as 1 (grey) or 3 (RGB) channels")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        pass
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8))
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # palette, with or without a transparent colour
    target = "RGB" if channels == 3 else "L"
    if img.mode != target:
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB" if img.mode in ("RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV") else "L")
        img = img.convert(target)
    return img


def read_image(path: str | os.PathLike, channels: int) -> Image.Image:
    """Open and decode one image file in the model's mode (see :func:`to_model_mode`)."""
    with Image.open(path) as im:
        im.load()
        return to_model_mode(im, channels)


def _is_image(path: str) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return path.lower().endswith(IMG_EXTENSIONS)


def scan_class_folders(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted sub-folder names) and (path, class index) samples of an ImageFolder tree.

    Raises ValueError naming ``folder`` for no class folders, a single class, or empty classes."""
    from torchvision.datasets.folder import make_dataset

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such directory")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder}: no class folders (expected {os.path.join(folder, '<class>', '<image files>')})")
    index = {c: i for i, c in enumerate(classes)}
    samples = make_dataset(folder, index, is_valid_file=_is_image, allow_empty=True)
    counts = np.bincount([t for _, t in samples], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if len(empty) == len(classes):
        raise ValueError(f"{folder}: no image files in its class folders ({', '.join(classes[:5])}"
                         f"{', ...' if len(classes) > 5 else ''})")
    if empty:
        raise ValueError(f"{folder}: class folders without images: {', '.join(empty[:10])}"
                         f"{' ...' if len(empty) > 10 else ''} (add images or remove them)")
    if len(classes) < 2:
        raise ValueError(f"{folder}: only one class folder ({classes[0]!r}); a classifier needs at least 2")
    return classes, samples


def imagefolder_layout(root: str) -> tuple[str, Optional[str]]:
    """(train tree, val tree or None) of ``root``: ROOT/train + ROOT/val, or a single tree."""
    if not root:
        raise ValueError("--data-path is required for --dataset imagefolder (ROOT/train/<class>/..., "
                         "ROOT/val/<class>/..., or a single tree ROOT/<class>/...)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data-path {root}: no such directory")
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    if os.path.isdir(train):
        return train, (val if os.path.isdir(val) else None)
    return root, None


class SafeImageFolder(Dataset):
    """An ImageFolder tree whose unreadable files are skipped (returns None, warned once per file,
    dropped by :func:`collate_skip_none`) or, with ``on_corrupt='fail'``, raise naming the file.
    Every image is converted to ``channels`` (see :func:`to_model_mode`)."""

    def __init__(self, root: str, transform: Optional[Callable] = None, channels: int = 3, on_corrupt: str = "skip",
                 scanned: Optional[tuple[list[str], list[tuple[str, int]]]] = None):
        self.classes, self.samples = scanned or scan_class_folders(root)
        self.targets = [t for _, t in self.samples]
        self.root, self.transform, self.channels, self.on_corrupt = root, transform, channels, on_corrupt

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            img = read_image(path, self.channels)
        except Exception as exc:
            if self.on_corrupt == "fail":
                raise ValueError(f"unreadable image {path}: {type(exc).__name__}: {exc}") from None
            warnings.warn(f"skipping unreadable image {path} ({type(exc).__name__})", RuntimeWarning)
            return None
        return (self.transform(img) if self.transform else img), target


def default_val_size(n_train: int) -> int:
    """Images held out of ``n_train`` for model selection: 10%, at least 1, at most 5,000."""
    return max(1, min(VAL_CAP, int(round(VAL_FRACTION * n_train))))


def split_per_class(targets: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic split of indices into (rest, held) with ``fraction`` of every class held
    (at least one image of each class with two or more, never all of a class)."""
    if not 0 < fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {fraction}")
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    rest, held = [], []
    for c in np.unique(targets):
        idx = np.nonzero(targets == c)[0]
        idx = idx[rng.permutation(len(idx))]
        k = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if len(idx) > 1 else 0
        held += idx[:k].tolist()
        rest += idx[k:].tolist()
    return sorted(rest), sorted(held)


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

    cfg = resolve_data_config({}, model=model)
    channels = cfg["input_size"][0]
    for key in ("mean", "std"):  # e.g. ImageNet's 3-channel statistics on a 1-channel model
        values = tuple(cfg[key])
        if len(values) != channels:
            cfg[key] = (sum(values) / len(values),) * channels
    return cfg


class ToNormalizedTensor:
    """ToTensor then Normalize in one step for 8-bit L / RGB PIL images: float32 x / 255, then (x − mean) / std, in
    numpy, the same values bit for bit as the two torchvision steps (checked on every byte value) at a fraction of
    their per-image cost (several small tensor ops: 0.64x the training transform's time at 28 px). Anything else
    (tensors, other modes, a mean that does not match the channels) goes through the two steps as before."""

    def __init__(self, to_tensor: Callable, normalize: Any):
        self.to_tensor, self.normalize = to_tensor, normalize
        self.mean = torch.as_tensor(normalize.mean, dtype=torch.float32).reshape(-1).numpy()
        self.std = torch.as_tensor(normalize.std, dtype=torch.float32).reshape(-1).numpy()

    def __call__(self, pic):
        channels = {"L": 1, "RGB": 3}.get(getattr(pic, "mode", None))
        if channels is None or self.mean.size not in (1, channels) or self.std.size not in (1, channels):
            return self.normalize(self.to_tensor(pic))
        x = np.asarray(pic, dtype=np.uint8).astype(np.float32) / np.float32(255)
        x = (x.reshape(x.shape[0], x.shape[1], channels) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.tolist()}, std={self.std.tolist()})"


def _fuse_to_normalized_tensor(transform):
    """``transform`` (a Compose) with its first ToTensor that is immediately followed by a (non-inplace) Normalize
    replaced, with that Normalize, by one :class:`ToNormalizedTensor` (timm's transforms hold one such pair)."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    for i in range(len(steps) - 1):
        to_tensor, normalize = steps[i], steps[i + 1]
        if isinstance(to_tensor, T.ToTensor) and isinstance(normalize, T.Normalize) and not normalize.inplace:
            transform.transforms = steps[:i] + [ToNormalizedTensor(to_tensor, normalize)] + steps[i + 2:]
            break
    return transform


def build_transform(data_cfg: dict[str, Any], is_training: bool, aa: Optional[str] = None, reprob: float = 0.0,
                    scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5, color_jitter: float = 0.0):
    """timm's transform for the model's data config (train: RandomResizedCrop, flip, RandAugment,
    random erasing; eval: resize by crop_pct, center crop), its ToTensor + Normalize fused
    (:class:`ToNormalizedTensor`, identical values)."""
    from timm.data import create_transform

    if is_training:
        mode = dict(is_training=True, scale=scale, hflip=hflip, auto_augment=None if aa in (None, "none", "") else aa,
                    re_prob=reprob, re_mode="pixel", re_count=1, color_jitter=color_jitter or None)
    else:
        mode = dict(is_training=False, crop_pct=data_cfg["crop_pct"])
    return _fuse_to_normalized_tensor(create_transform(input_size=data_cfg["input_size"],
                                                       interpolation=data_cfg["interpolation"],
                                                       mean=data_cfg["mean"], std=data_cfg["std"], **mode))


def build_dataset(dataset: str, split: str, transform: Optional[Callable], data_path: Optional[str] = None,
                  channels: int = 3, val_size: Optional[int] = None, on_corrupt: str = "skip",
                  subset: Optional[int] = None, download: bool = False, val_fraction: float = 0.2,
                  canvas: int = 0) -> Dataset:
    """``split`` in train / val / test, as described in the module docstring. ``val_size``: images
    held out of the training set for model selection (None: :func:`default_val_size`);
    ``val_fraction``: share of each class that becomes the test split of a single ImageFolder tree;
    ``canvas``: Fashion-MNIST placed on a canvas of this size (0: as it is)."""
    from torch.utils.data import Subset

    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}; expected train, val or test")
    check_canvas(canvas, dataset)
    if dataset == "fashion-mnist":
        full = FashionMNIST(data_path, "test" if split == "test" else "train", transform, channels, download, canvas)
        order = np.arange(len(full))
    elif dataset == "imagefolder":
        train_dir, val_dir = imagefolder_layout(data_path)
        train_scan = scan_class_folders(train_dir)
        if val_dir is not None:
            val_scan = scan_class_folders(val_dir)
            if val_scan[0] != train_scan[0]:
                only_t = sorted(set(train_scan[0]) - set(val_scan[0]))
                only_v = sorted(set(val_scan[0]) - set(train_scan[0]))
                raise ValueError(f"--data-path {data_path}: {train_dir} and {val_dir} must hold the same class folders; "
                                 f"only in train/: {', '.join(only_t) or '-'}; only in val/: {', '.join(only_v) or '-'}")
            if split == "test":
                full = SafeImageFolder(val_dir, transform, channels, on_corrupt, val_scan)
                order = np.arange(len(full))
            else:
                full = SafeImageFolder(train_dir, transform, channels, on_corrupt, train_scan)
                order = np.random.default_rng(0).permutation(len(full))
        else:  # a single tree: a fixed per-class share is the test split
            full = SafeImageFolder(train_dir, transform, channels, on_corrupt, train_scan)
            rest, held = split_per_class(full.targets, val_fraction)
            order = np.asarray(held) if split == "test" else np.asarray(rest)[np.random.default_rng(0).permutation(len(rest))]
    else:
        raise ValueError(f"dataset={dataset!r}; expected fashion-mnist or imagefolder")
    if len(order) == 0:
        raise ValueError(f"{dataset} split {split!r} is empty")
    if split != "test":
        if val_size is None:
            val_size = default_val_size(len(order))
        if not 0 <= val_size < len(order):
            raise ValueError(f"--val-size {val_size} must be in [0, {len(order)}) for this training set "
                             f"of {len(order)} images")
        order = order[len(order) - val_size:] if split == "val" else order[:len(order) - val_size]
    if subset is not None and split == "train":
        if subset < 1:
            raise ValueError(f"subset must be >= 1, got {subset}")
        order = order[:subset]
    ds = Subset(full, order.tolist()) if len(order) != len(full) or split != "test" else full
    ds.classes = list(full.classes)  # type: ignore[attr-defined]
    return ds


def num_classes_of(ds: Dataset) -> int:
    return len(getattr(ds, "classes"))
