"""The image-classification data settings shared by the image experiments.

`data.name=shapes` is the embedded default (generated, cached under `data.dir`);
`data.name=birds` is the Indian Birds ImageFolder under `data.root`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from syllabus.config import choice, ranged
from syllabus.data.paths import data_dir
from syllabus.errors import UsageError


@dataclass
class ImageDataConfig:
    """`data.*` of the image experiments (`shapes` embedded, `birds` an ImageFolder)."""

    name: str = choice("shapes", ["shapes", "birds"])
    dir: str = ""  # cache of embedded sets; default $SYLLABUS_DATA or ~/.cache/syllabus
    root: str = ""  # folder of a real dataset (birds: the Birds_25 folder)
    image_size: int = ranged(32, 8)
    n_train: int = ranged(4000, 1)  # shapes only
    n_val: int = ranged(1000, 1)  # shapes only
    n_test: int = ranged(1000, 1)  # shapes only
    # birds: share of train carved off as test when the layout has no test split
    test_fraction: float = ranged(0.1, 0, 1, lo_open=True, hi_open=True)
    augment: bool = False  # random flips (shapes) / random resized crops (birds)
    num_workers: int = ranged(0, 0)
    seed: int = 0  # generation seed of embedded sets, split seed of real ones


SHAPES_MEAN, SHAPES_STD = 0.5, 0.25  # shapes images in [0, 1] -> roughly zero mean, unit variance


@dataclass
class ImageSplits:
    """What every image experiment gets from `image_splits`.

    splits: train/val/test datasets of `(image, label)` or, with masks, `(image, label, mask)`;
        train carries the training transform (augmentation when `data.augment` is on).
    eval_splits: the same three splits with the evaluation transform only (metrics on train
        are computed on these, never on augmented images).
    classes: class names, index = label.
    info: how the splits were made (saved in the run's summary).
    unnormalize: model input (B, 3, H, W) -> displayable RGB in [0, 1].
    """

    splits: dict[str, Dataset]
    eval_splits: dict[str, Dataset]
    classes: list[str]
    info: dict
    unnormalize: Callable[[torch.Tensor], torch.Tensor]


class _Normalized(Dataset):
    """Shapes images in [0, 1] -> normalised; optional flips (of the mask too)."""

    def __init__(self, base: Dataset, augment: bool):
        self.base, self.augment = base, augment
        self.classes, self.targets = base.classes, base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y, *mask = self.base[i]  # x: (3, H, W) in [0, 1]; mask: (H, W)
        if self.augment and torch.rand(()) < 0.5:
            x, mask = x.flip(-1), [m.flip(-1) for m in mask]
        return ((x - SHAPES_MEAN) / SHAPES_STD, y, *mask)


def _unnormalize(mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    def unnormalize(x: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        return (x * s + m).clamp(0, 1)
    return unnormalize


def _birds_root(cfg: ImageDataConfig) -> Path:
    """`data.root`, else `<data.dir>/birds`."""
    return Path(cfg.root).expanduser() if cfg.root else data_dir(cfg.dir or None) / "birds"


def check_image_data(cfg: ImageDataConfig) -> None:
    """Fail before training if a real dataset is missing or a setting does not apply."""
    if cfg.name == "birds":
        from syllabus.data.birds import find_birds_root

        find_birds_root(_birds_root(cfg))
        return
    if cfg.root:
        raise UsageError(f"data.root is for real datasets; data.name={cfg.name} is generated "
                         f"(under data.dir); drop data.root or set data.name=birds")
    if not 32 <= cfg.image_size <= 256:
        raise UsageError(f"data.image_size={cfg.image_size}: shapes supports 32 to 256")


def image_splits(cfg: ImageDataConfig, with_masks: bool = False) -> ImageSplits:
    """The train/val/test splits of `cfg.name`, with class names, split info and `unnormalize`.

    Args:
        with_masks: items carry the object mask (H, W) in {0, 1} as a third element
            (embedded sets only; real datasets have no masks and refuse).
    """
    if cfg.name == "birds":
        if with_masks:
            raise UsageError("data.name=birds has no object masks; this analysis needs data.name=shapes")
        from syllabus.data.birds import IMAGENET_MEAN, IMAGENET_STD, birds_splits

        root = _birds_root(cfg)
        splits, info = birds_splits(root, cfg.image_size, cfg.test_fraction, cfg.seed, cfg.augment)
        plain = birds_splits(root, cfg.image_size, cfg.test_fraction, cfg.seed, False, verify=False)[0] \
            if cfg.augment else splits  # the same files, already checked
        return ImageSplits(splits, plain, list(splits["train"].classes), info,
                           _unnormalize(IMAGENET_MEAN, IMAGENET_STD))
    from syllabus.data.shapes import shapes_splits

    root = data_dir(cfg.dir or None)
    base = shapes_splits(cfg.image_size, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed, root)
    for ds in base.values():
        ds.with_mask = with_masks
    splits = {s: _Normalized(ds, cfg.augment and s == "train") for s, ds in base.items()}
    plain = {s: _Normalized(ds, False) for s, ds in base.items()}
    info = {"dataset": "shapes", "root": str(Path(root) / "shapes"), "seed": cfg.seed,
            "sizes": {s: len(ds) for s, ds in splits.items()}}
    return ImageSplits(splits, plain, list(base["train"].classes), info, _unnormalize(SHAPES_MEAN, SHAPES_STD))
