"""The image-classification data settings shared by the image experiments.

`data.name=shapes` is the embedded default (generated, cached under `data.dir`);
`data.name=birds` is the Indian Birds ImageFolder under `data.root`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from syllabus.config import choice
from syllabus.data.paths import data_dir
from syllabus.errors import UsageError


@dataclass
class ImageDataConfig:
    name: str = choice("shapes", ["shapes", "birds"])
    dir: str = ""  # cache of embedded sets; default $SYLLABUS_DATA or ~/.cache/syllabus
    root: str = ""  # folder of a real dataset (birds: the Birds_25 folder)
    image_size: int = 32
    n_train: int = 4000  # shapes only
    n_val: int = 1000  # shapes only
    n_test: int = 1000  # shapes only
    test_fraction: float = 0.1  # birds: test split carved from train when absent
    augment: bool = False  # random flips (shapes) / random resized crops (birds)
    num_workers: int = 0
    seed: int = 0  # generation seed of embedded sets, split seed of real ones


class _Normalized(Dataset):
    """Shapes images in [0, 1] -> roughly zero mean, unit variance; optional flips."""

    def __init__(self, base: Dataset, augment: bool):
        self.base, self.augment = base, augment
        self.classes, self.targets = base.classes, base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, *rest = self.base[i]  # x: (3, H, W) in [0, 1]
        if self.augment and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return ((x - 0.5) / 0.25, *rest)


def _birds_root(cfg: ImageDataConfig) -> Path:
    """`data.root`, else `<data.dir>/birds`."""
    return Path(cfg.root).expanduser() if cfg.root else data_dir(cfg.dir or None) / "birds"


def check_image_data(cfg: ImageDataConfig) -> None:
    """Fail before training if a real dataset is missing."""
    if cfg.name == "birds":
        from syllabus.data.birds import find_birds_root

        find_birds_root(_birds_root(cfg))
    elif not 32 <= cfg.image_size <= 256:
        raise UsageError(f"data.image_size={cfg.image_size}: shapes supports 32 to 256")


def image_splits(cfg: ImageDataConfig) -> tuple[dict[str, Dataset], list[str], dict]:
    """Datasets keyed train/val/test, class names, and how the splits were made."""
    if cfg.name == "birds":
        from syllabus.data.birds import birds_splits

        splits, info = birds_splits(_birds_root(cfg), cfg.image_size, cfg.test_fraction, cfg.seed, cfg.augment)
    else:
        from syllabus.data.shapes import shapes_splits

        root = data_dir(cfg.dir or None)
        base = shapes_splits(cfg.image_size, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed, root)
        splits = {s: _Normalized(ds, cfg.augment and s == "train") for s, ds in base.items()}
        info = {"dataset": "shapes", "root": str(Path(root) / "shapes"), "seed": cfg.seed,
                "sizes": {s: len(ds) for s, ds in splits.items()}}
    return splits, list(splits["train"].classes), info
