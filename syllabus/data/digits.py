"""Handwritten digits: scikit-learn's bundled `digits` (embedded) and MNIST (real).

Both come as in-memory `TensorDataset`s of (image (1, S, S) float in [0, 1], label),
with `classes` and `targets` attributes like torchvision datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from syllabus.data.paths import data_dir
from syllabus.errors import UsageError

DIGIT_CLASSES = [str(i) for i in range(10)]
MNIST_KEY = "--set data.root=/path/to/mnist"


class DigitsDataset(TensorDataset):
    """(image (1, S, S) in [0, 1], label) pairs held in memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__(images, labels)
        self.images, self.targets, self.classes = images, labels, DIGIT_CLASSES


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, S, S) -> (N, 1, size, size), bilinear with antialiasing, clamped to [0, 1]."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def digits_splits(size: int = 8, seed: int = 0, val_fraction: float = 0.15,
                  test_fraction: float = 0.15) -> dict[str, DigitsDataset]:
    """scikit-learn's 1,797 real 8x8 digits, stratified into fixed train/val/test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
    labels = torch.tensor(bunch.target, dtype=torch.long)  # (N,)
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    val_share = val_fraction / (1 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    images = resize(images, size)
    return {name: DigitsDataset(images[i], labels[i]) for name, i in
            (("train", train), ("val", val), ("test", test))}


def mnist_location(root_override: str | None = None) -> Path:
    return Path(root_override).expanduser() if root_override else data_dir() / "mnist"


def _mnist(root: Path, train: bool, download: bool):
    from torchvision.datasets import MNIST

    try:
        return MNIST(str(root), train=train, download=download)
    except RuntimeError:
        raise UsageError(f"MNIST not found under {root}; run `syllabus data prepare mnist --download` "
                         f"or point {MNIST_KEY}") from None


def mnist_splits(root: str | None = None, size: int = 28, seed: int = 0, val_size: int = 5000,
                 download: bool = False) -> dict[str, DigitsDataset]:
    """MNIST through torchvision: train minus `val_size` held-out images, val, and test."""
    location = mnist_location(root)
    train, test = _mnist(location, True, download), _mnist(location, False, download)
    to_float = lambda d: resize(d.data[:, None].float() / 255, size)  # noqa: E731  (N, 1, S, S)
    perm = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    x, y = to_float(train), train.targets
    return {"train": DigitsDataset(x[train_idx], y[train_idx]), "val": DigitsDataset(x[val_idx], y[val_idx]),
            "test": DigitsDataset(to_float(test), test.targets)}


def require_digits_data(name: str, root: str | None = None) -> None:
    """Fail before training when `data.name=mnist` and MNIST is not on disk (digits ship with scikit-learn)."""
    if name == "mnist" and not mnist_present(root):
        raise UsageError(f"MNIST not found under {mnist_location(root)}; run "
                         f"`syllabus data prepare mnist --download` or point {MNIST_KEY}")


def mnist_present(root_override: str | None = None) -> bool:
    raw = mnist_location(root_override) / "MNIST" / "raw"
    return raw.is_dir() and any(raw.iterdir())


def prepare_mnist(root_override: str | None = None, download: bool = False) -> str:
    location = mnist_location(root_override)
    if mnist_present(root_override):
        return f"mnist: present in {location}"
    if not download:
        raise UsageError(f"mnist is not in {location}; add --download to fetch it, or point {MNIST_KEY}")
    _mnist(location, True, True), _mnist(location, False, True)
    return f"mnist: downloaded to {location}"


def prepare_digits(root_override: str | None = None, download: bool = False) -> str:
    n = sum(len(d) for d in digits_splits().values())
    return f"digits: {n} images ship with scikit-learn; nothing to prepare"
