"""The real CLEVRTex (Karazija et al. 2021) in its official layout.

Public API:
    index_clevrtex(root, variant="full") -> list of (index, image path, mask path), by index;
        UsageError (one line naming the file or folder) when the set is missing or incomplete
    split_items(items, split, limit=0) -> the split's items (index fractions, as the official
        loader: test [0, .1), val [.1, .2), train [.2, 1)), the first ``limit`` when > 0
    load_image(path, size) -> (3, size, size) float in [0, 1]: RGBA to RGB, centre crop of
        0.8 x the short side, bilinear resize
    load_mask(path, size) -> (size, size) int64 object ids (0 = background), same crop, nearest
    ClevrTexDataset(items, size)[i] -> (image, mask) as the two functions above
    clevrtex_splits(root, variant, size, limit) -> {"train", "val", "test"} -> ClevrTexDataset
    clevrtex_location / clevrtex_present / prepare_clevrtex: hooks for ``syllabus data``

Layout: ``<root>/clevrtex_<variant>/<i // 1000>/CLEVRTEX_<variant>_<iiiiii>.png`` (RGBA
320x240), ``..._flat.png`` beside it (palette mask: 0 background, k = object k), and
``....json`` (metadata, not needed here). ``root`` may also be the ``clevrtex_<variant>``
folder itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from syllabus.data.paths import data_dir
from syllabus.errors import UsageError

SPLIT_FRACTIONS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}
CROP_FRACTION = 0.8
URL = "https://www.robots.ox.ac.uk/~vgg/data/clevrtex/"


def _variant_dir(root: Path, variant: str) -> Path:
    root = Path(root).expanduser()
    return root if root.name == f"clevrtex_{variant}" else root / f"clevrtex_{variant}"


def index_clevrtex(root: Path, variant: str = "full") -> list[tuple[int, Path, Path]]:
    """Every (index, image, mask) of one variant, sorted by index; checks each image has its mask."""
    folder = _variant_dir(root, variant)
    pattern = re.compile(rf"CLEVRTEX_{re.escape(variant)}_(\d+)\.png")
    images = sorted((int(m.group(1)), p) for p in folder.glob("*/*.png") if (m := pattern.fullmatch(p.name)))
    if not images:
        raise UsageError(f"CLEVRTex not found: no CLEVRTEX_{variant}_<index>.png under {folder}/<k>/; get it from "
                         f"{URL} and point --set data.root=... at the folder holding clevrtex_{variant}/")
    items = []
    for index, image in images:
        mask = image.with_name(f"{image.stem}_flat.png")
        if not mask.is_file():
            raise UsageError(f"CLEVRTex is incomplete: {image} has no mask {mask.name} beside it")
        items.append((index, image, mask))
    return items


def split_items(items: list, split: str, limit: int = 0) -> list:
    """The items of one split by position in the sorted index, cut to ``limit`` when > 0."""
    if split not in SPLIT_FRACTIONS:
        raise UsageError(f"unknown CLEVRTex split {split!r}; valid: {', '.join(SPLIT_FRACTIONS)}")
    if limit < 0:
        raise UsageError(f"data.limit must be >= 0, got {limit}")
    lo, hi = SPLIT_FRACTIONS[split]
    chosen = items[int(lo * len(items)): int(hi * len(items))]
    return chosen[:limit] if limit else chosen


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centred square of side 0.8 x the short side: (left, top, right, bottom)."""
    side = int(CROP_FRACTION * min(width, height))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError) as err:
        raise UsageError(f"cannot read CLEVRTex file {path}: {err}") from err
    return image


def load_image(path: Path, size: int) -> torch.Tensor:
    """One render: (3, size, size) float in [0, 1]."""
    image = _open(path).convert("RGB")  # RGBA renders: the alpha channel is dropped
    image = image.crop(crop_box(*image.size)).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)


def load_mask(path: Path, size: int) -> torch.Tensor:
    """One palette mask: (size, size) int64 object ids."""
    mask = _open(path)
    if mask.mode not in ("P", "L", "I", "I;16"):
        raise UsageError(f"CLEVRTex mask {path} is not a palette image (mode {mask.mode})")
    mask = mask.crop(crop_box(*mask.size)).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(mask).astype(np.int64))


class ClevrTexDataset(Dataset):
    """CLEVRTex images and masks, read from disk on each access.

    Args:
        items: (index, image path, mask path) triples (see ``index_clevrtex``).
        size: output side in pixels (128 in the benchmark).
    """

    def __init__(self, items: list, size: int = 128):
        self.items, self.size = list(items), size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, image, mask = self.items[i]
        return load_image(image, self.size), load_mask(mask, self.size)  # (3, S, S), (S, S)


def clevrtex_splits(root: Path, variant: str = "full", size: int = 128, limit: int = 0) -> dict[str, ClevrTexDataset]:
    """The three splits of one variant (see ``split_items``)."""
    items = index_clevrtex(root, variant)
    return {s: ClevrTexDataset(split_items(items, s, limit), size) for s in ("train", "val", "test")}


# --- catalogue hooks (syllabus data list / prepare) ---


def clevrtex_location(root_override: str | None = None) -> Path:
    """``data.root`` when given, else ``<data dir>/clevrtex``."""
    return Path(root_override).expanduser() if root_override else data_dir() / "clevrtex"


def clevrtex_present(root_override: str | None = None) -> bool:
    try:
        index_clevrtex(clevrtex_location(root_override))
    except UsageError:
        return False
    return True


def prepare_clevrtex(root_override: str | None = None, download: bool = False) -> str:
    """Check the set; it is not downloaded here (get it from the authors' page, see URL)."""
    items = index_clevrtex(clevrtex_location(root_override))
    return f"clevrtex: {len(items)} images with masks in {clevrtex_location(root_override)}"
