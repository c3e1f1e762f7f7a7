"""``birds``: the Indian Birds species dataset (25 classes) as torchvision ImageFolders.

Accepted layouts under ``root`` (or ``root/Birds_25`` when that folder exists):

- ``train/``, ``val/``, ``test/``, each ``<class>/*.jpg``;
- the Kaggle layout ``train/`` and ``valid/``: ``valid`` becomes ``val`` and a stratified
  ``test`` split is carved out of ``train`` with a fixed seed.

The dataset is never downloaded: it lives on Kaggle behind a login.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.vision import StandardTransform

from syllabus.data.folder_check import cache_file, check_images, image_files, refuse_shared_files, scan_classes
from syllabus.data.paths import data_dir
from syllabus.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KAGGLE_FOLDER = "Birds_25"
KAGGLE_TITLE = "Indian Birds Species Image Classification"
DATASET_NAME = f'Indian Birds, 25 species (the Kaggle dataset "{KAGGLE_TITLE}", folder {KAGGLE_FOLDER})'
LAYOUT = "ROOT/train/<class>/*.jpg and ROOT/valid/<class>/*.jpg, or ROOT/{train,val,test}/<class>/*.jpg"
ROOT_KEY = f"--set data.root=/path/to/{KAGGLE_FOLDER}"


def _not_found(why: str) -> UsageError:
    return UsageError(f"birds: {why}; expected {DATASET_NAME} laid out as {LAYOUT}; pass {ROOT_KEY}")


def load_rgb(path: str) -> Image.Image:
    """The ImageFolder loader, with a corrupt file reported as a UsageError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"corrupt image: {path} ({err}); delete or replace it") from err


def verify_images(root: str | Path, cache: Path | None = None) -> int:
    """Cheaply check every image file under ``root`` with PIL's ``verify()`` (see `check_images`).

    ``verify()`` reads headers and structure without decoding pixels, so it catches
    garbage and most damaged files, not every truncation (``load_rgb`` catches the rest).

    Returns:
        The number of files checked.

    Raises:
        UsageError: naming every corrupt file.
    """
    return check_images(image_files(Path(root)), cache)


def birds_transform(image_size: int = 256, augment: bool = False) -> Callable:
    """PIL image → normalised (3, image_size, image_size) float tensor (ImageNet mean/std)."""
    if augment:
        geometry = [T.RandomResizedCrop(image_size, scale=(0.6, 1.0)), T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(image_size), T.CenterCrop(image_size)]
    return T.Compose(
        [
            T.ToImage(),
            *geometry,
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def find_layout(root: str | Path | None) -> tuple[Path, dict[str, Path]]:
    """Resolve ``root`` and map splits to folders; ``test`` is absent when it must be carved."""
    if root is None:
        raise _not_found("no dataset folder given")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise _not_found(f"{base} does not exist")
    if (base / KAGGLE_FOLDER).is_dir():
        base = base / KAGGLE_FOLDER
    if all((base / s).is_dir() for s in ("train", "val", "test")):
        return base, {s: base / s for s in ("train", "val", "test")}
    if (base / "train").is_dir() and (base / "valid").is_dir():
        return base, {"train": base / "train", "val": base / "valid"}
    raise _not_found(f"no train/valid or train/val/test folders in {base}")


def find_birds_root(root: str | Path | None) -> Path:
    """The resolved dataset folder; raises UsageError (naming ``data.root``) when unusable."""
    return find_layout(root)[0]


class _ScannedFolder(ImageFolder):
    """An ImageFolder over classes and samples found by `scan_classes` (no second walk of the tree)."""

    def __init__(self, root: Path, classes: list[str], samples: list[tuple[str, int]], transform: Callable):
        self._scanned = classes, samples
        super().__init__(str(root), transform=transform, loader=load_rgb)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = self._scanned[0]
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory: str, class_to_idx: dict[str, int], *args, **kwargs) -> list[tuple[str, int]]:
        return list(self._scanned[1])


def _scan(path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    try:
        return scan_classes(path)
    except UsageError as err:
        raise UsageError(f"birds: {err}; expected {LAYOUT}; pass {ROOT_KEY}") from None


def _subset(folder: ImageFolder, indices, transform: Callable) -> ImageFolder:
    """The same ImageFolder restricted to ``indices``, with its own transform."""
    part = copy.copy(folder)
    part.samples = [folder.samples[i] for i in indices]
    part.imgs = part.samples
    part.targets = [target for _, target in part.samples]
    part.transform = transform
    part.transforms = StandardTransform(transform, None)
    return part


def _carve_test(train: ImageFolder, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) index arrays, each sorted."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise UsageError(f"birds test_fraction must be between 0 and 1, got {fraction}")
    _check_stratifiable(train, fraction)
    try:
        keep, test = train_test_split(
            np.arange(len(train)), test_size=fraction, stratify=train.targets, random_state=seed
        )
    except ValueError as err:  # a case _check_stratifiable does not foresee
        raise UsageError(f"birds: cannot carve a stratified test split ({err})") from err
    return np.sort(keep), np.sort(test)


def _check_stratifiable(train: ImageFolder, fraction: float) -> None:
    """Each class needs 2 images, and both parts one image per class (sklearn's conditions)."""
    counts = np.bincount(train.targets, minlength=len(train.classes))  # (K,)
    n, k = len(train), len(train.classes)
    n_test = int(np.ceil(fraction * n))
    smallest = int(counts.argmin())
    asked = f"a stratified test split of data.test_fraction={fraction:g} ({n_test} of {n} train images)"
    if counts[smallest] < 2:
        raise UsageError(f"birds: cannot carve {asked}: class {train.classes[smallest]!r} has "
                         f"{counts[smallest]} image(s) in train and each class needs at least 2")
    if n_test < k or n - n_test < k:
        low, high = k / n, 1 - k / n
        raise UsageError(f"birds: cannot carve {asked}: with {k} classes both parts need at least {k} images "
                         f"(one per class), so data.test_fraction must lie between {low:.3g} and {high:.3g}")


def _check_classes(scans: dict[str, tuple[list[str], list]]) -> None:
    reference = scans["train"][0]
    for split, (classes, _) in scans.items():
        if classes != reference:
            differ = sorted(set(classes) ^ set(reference))
            raise UsageError(f"birds: {split} classes differ from train classes: {', '.join(differ)}")


def birds_splits(
    root: str | Path | None,
    image_size: int = 256,
    test_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = False,
    verify: bool = True,
) -> tuple[dict[str, ImageFolder], dict]:
    """The train/val/test ImageFolders and what was done to make them.

    Args:
        root: the dataset folder (``--set data.root=...``): ``Birds_25`` or its parent.
        image_size: square side of the returned tensors.
        test_fraction: share of ``train`` carved off as ``test`` in the Kaggle layout.
        seed: seed of that stratified carve.
        augment: random resized crops and flips on ``train`` (``val``/``test`` never).
        verify: header-check every image first (cached by size and mtime, see `check_images`).

    Returns:
        ``({"train", "val", "test"}: ImageFolder, split_info)``; each dataset has
        ``.classes`` (folder names, sorted) and ``.targets``. ``split_info`` records the
        root, layout, counts and, for a carved test split, its seed, fraction and files.
    """
    base, dirs = find_layout(root)
    scans = {s: _scan(path) for s, path in dirs.items()}  # (classes, samples)
    _check_classes(scans)
    refuse_shared_files({s: samples for s, (_, samples) in scans.items()})
    if verify:
        check_images((p for _, samples in scans.values() for p, _ in samples), cache_file(base, data_dir()))
    plain = birds_transform(image_size, augment=False)
    train_transform = birds_transform(image_size, augment) if augment else plain
    folders = {s: _ScannedFolder(dirs[s], *scan, train_transform if s == "train" else plain)
               for s, scan in scans.items()}
    info = {"dataset": "birds", "root": str(base), "classes": folders["train"].classes}
    if "test" in folders:
        info["layout"] = "train/val/test"
    else:
        keep, test = _carve_test(folders["train"], test_fraction, seed)
        folders["test"] = _subset(folders["train"], test, plain)
        folders["train"] = _subset(folders["train"], keep, train_transform)
        test_files = [str(Path(p).relative_to(base)) for p, _ in folders["test"].samples]
        info.update(
            layout="train/valid, test carved from train",
            test_fraction=test_fraction,
            split_seed=seed,
            test_files=test_files,
        )
    datasets = {s: folders[s] for s in ("train", "val", "test")}
    info["counts"] = {s: len(d) for s, d in datasets.items()}
    return datasets, info


# --- catalogue hooks (syllabus data list / prepare) ---


def birds_location(root_override: str | None = None) -> Path:
    """The folder given by ``data.root``, else ``<data dir>/birds``."""
    return Path(root_override).expanduser() if root_override else data_dir() / "birds"


def birds_present(root_override: str | None = None) -> bool:
    try:
        find_layout(birds_location(root_override))
    except UsageError:
        return False
    return True


def prepare_birds(root_override: str | None = None, download: bool = False) -> str:
    """Report where the dataset is, or where to put it; it cannot be downloaded for you."""
    if download:
        raise UsageError(
            f"birds cannot be downloaded automatically: {DATASET_NAME} has no public direct URL; "
            f"download it from Kaggle by hand, unzip it and pass {ROOT_KEY}"
        )
    location = birds_location(root_override)
    if not birds_present(root_override):
        return (
            f"birds: not found at {location}; download {DATASET_NAME} from Kaggle, "
            f"unzip it there ({LAYOUT}) or anywhere and pass {ROOT_KEY}"
        )
    base, dirs = find_layout(location)
    return f"birds: found at {base} (splits: {', '.join(dirs)})"
