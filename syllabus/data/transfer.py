"""Source and target tasks for transfer learning: `shapes` -> finer `shapes`, CIFAR-10 -> CIFAR-100.

Embedded (offline): the source task is `shapes` (12 shape classes); the target task has 36
finer classes, shape x colour group, where the colour group is the dominant channel of the
object's base colour (reddish / greenish / bluish: three 120-degree hue sectors, multiplicative
shading keeps the dominant channel). Source and target never share an image: each split of
the cached set is cut in two, the first part for the source (`source_share` of train, half of
val and test), the rest for the target. As CIFAR-100 is to CIFAR-10, the target has more,
finer classes of the same kind of images and fewer training examples per class.

Real: CIFAR-10 and CIFAR-100 through torchvision, under `data.root` (default
`<data dir>/cifar`), fetched only with `data.download=true`; a validation split is carved from
the training set with a seeded permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision import transforms as T

from syllabus.config import choice, ranged
from syllabus.data.images import ImageDataConfig, check_image_data, image_splits
from syllabus.data.paths import data_dir
from syllabus.data.shapes import load_shapes_split
from syllabus.errors import UsageError

COLOUR_GROUPS = ("red", "green", "blue")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# name -> (torchvision class, its title, class count); looked up at call time so a test can stand in FakeData
CIFAR_SETS: dict[str, tuple[Callable[..., Dataset], str, int]] = {
    "cifar10": (datasets.CIFAR10, "CIFAR-10", 10),
    "cifar100": (datasets.CIFAR100, "CIFAR-100", 100),
}


@dataclass
class Task:
    """One classification task: `splits` (train augmented when asked), `eval_splits` (no augmentation), classes."""

    splits: dict[str, Dataset]
    eval_splits: dict[str, Dataset]
    classes: list[str]


# --- the finer shapes task ---


def colour_group(colors: np.ndarray) -> np.ndarray:
    """(N, 3) RGB base colours -> (N,) index into COLOUR_GROUPS (the dominant channel)."""
    return np.asarray(colors).argmax(1).astype(np.int64)


def fine_labels(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Shape label x colour group -> (N,) fine label in [0, 3 * n_shapes)."""
    return np.asarray(labels, np.int64) * len(COLOUR_GROUPS) + colour_group(colors)


def fine_class_names(shape_classes: Sequence[str]) -> list[str]:
    """Names of the fine classes in label order: "circle/red", "circle/green", ..."""
    return [f"{s}/{c}" for s in shape_classes for c in COLOUR_GROUPS]


class LabelledView(Dataset):
    """Examples `indices` of `base` with new labels: yields (image, targets[i]).

    Args:
        base: a dataset of (image, label, ...).
        indices: which examples of `base`, in order.
        targets: the label of each chosen example.
        classes: the class names the labels index.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], targets: Sequence[int], classes: Sequence[str]):
        if len(indices) != len(targets):
            raise ValueError(f"{len(indices)} indices but {len(targets)} targets")
        self.base, self.indices = base, [int(i) for i in indices]
        self.targets, self.classes = [int(t) for t in targets], list(classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, *_ = self.base[self.indices[i]]
        return x, self.targets[i]


def source_target_views(base: Dataset, colors: np.ndarray, source_share: float) -> tuple[LabelledView, LabelledView]:
    """Cut one split of shapes (with `.targets`, `.classes`) into a source part and a finer target part."""
    n = len(base)
    cut = int(round(n * source_share))
    coarse = np.asarray(base.targets, np.int64)  # (N,)
    fine = fine_labels(coarse, colors)  # (N,)
    source = LabelledView(base, range(cut), coarse[:cut], base.classes)
    target = LabelledView(base, range(cut, n), fine[cut:], fine_class_names(base.classes))
    return source, target


def per_class_subset(targets: Sequence[int], per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` examples of every class (seeded), all of them when `per_class` <= 0.

    Classes with fewer examples keep what they have. Sorted, so the order of a loader is unchanged.
    """
    targets = np.asarray(targets)
    if per_class <= 0:
        return np.arange(len(targets))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(targets == c))[:per_class] for c in np.unique(targets)]
    return np.sort(np.concatenate(keep))


# --- CIFAR through torchvision ---


def cifar_transforms(image_size: int, augment: bool) -> tuple[Callable, Callable]:
    """(train, eval) transforms: ImageNet statistics; 32 px keeps CIFAR's size, else resize."""
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if image_size == 32:
        train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
        return T.Compose(train + norm), T.Compose(norm)
    resize = [T.Resize(image_size, antialias=True)]
    train = [T.RandomResizedCrop(image_size, scale=(0.6, 1), antialias=True), T.RandomHorizontalFlip()]
    return T.Compose((train if augment else resize) + norm), T.Compose(resize + norm)


def _open_cifar(name: str, root: str, train: bool, transform: Callable, download: bool) -> Dataset:
    cls, title, _ = CIFAR_SETS[name]
    try:
        return cls(root=root, train=train, transform=transform, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise UsageError(f"{title} not found under {root} ({err}); fetch it with --set data.download=true, "
                         "or point --set data.root at the folder holding it") from None


def _targets(ds: Dataset) -> np.ndarray:
    """(N,) labels: torchvision's `targets`, else read example by example (a stand-in dataset)."""
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets, np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], np.int64)


def cifar_task(name: str, root: str, image_size: int, val_size: int, seed: int, augment: bool = True,
               download: bool = False) -> Task:
    """CIFAR-10 or CIFAR-100 as a Task: train/val/test of (image, label), val carved from train.

    Args:
        name: "cifar10" or "cifar100".
        root: the torchvision root folder.
        image_size: 32 (CIFAR's own) or e.g. 224 (resized, as ImageNet models expect).
        val_size: examples carved from the training set for validation.
        seed: the seed of that carving.
        augment: random crops and flips on the train split.
        download: let torchvision fetch the files when they are missing.
    """
    if name not in CIFAR_SETS:
        raise UsageError(f"unknown CIFAR set {name!r}; valid: {', '.join(CIFAR_SETS)}")
    train_tf, eval_tf = cifar_transforms(image_size, augment)
    train_aug = _open_cifar(name, root, True, train_tf, download)
    train_eval = _open_cifar(name, root, True, eval_tf, False)
    test = _open_cifar(name, root, False, eval_tf, False)
    targets = _targets(train_aug)  # (N,)
    if not 0 < val_size < len(targets):
        raise UsageError(f"data.val_size={val_size}: must be between 1 and {len(targets) - 1} for {name}")
    order = np.random.default_rng(seed).permutation(len(targets))
    val_idx, train_idx = np.sort(order[:val_size]), np.sort(order[val_size:])
    classes = list(getattr(train_aug, "classes", None) or [str(c) for c in range(CIFAR_SETS[name][2])])
    view = lambda ds, idx, y: LabelledView(ds, idx, y, classes)
    evals = {"train": view(train_eval, train_idx, targets[train_idx]),
             "val": view(train_eval, val_idx, targets[val_idx]), "test": view(test, range(len(test)), _targets(test))}
    return Task({**evals, "train": view(train_aug, train_idx, targets[train_idx])}, evals, classes)


# --- the two tasks of a transfer study, by `data.*` ---


@dataclass
class TransferDataConfig:
    """`data.*` of resnet-transfer: `shapes` (embedded) or `cifar` (CIFAR-10 -> CIFAR-100)."""

    name: str = choice("shapes", ["shapes", "cifar"])
    dir: str = ""  # cache of embedded sets; default $SYLLABUS_DATA or ~/.cache/syllabus
    root: str = ""  # cifar: torchvision root folder; default <data dir>/cifar
    download: bool = False  # cifar: fetch missing files; also lets named model weights be fetched
    image_size: int = ranged(32, 8)
    n_train: int = ranged(4000, 2)  # shapes: images per split, shared out between source and target
    n_val: int = ranged(1000, 2)
    n_test: int = ranged(1000, 2)
    source_share: float = ranged(0.5, 0, 1, lo_open=True, hi_open=True)  # shapes: the source's part of train
    val_size: int = ranged(5000, 1)  # cifar: examples carved from train for validation
    augment: bool = False
    num_workers: int = ranged(0, 0)
    seed: int = 0  # generation seed of shapes, split seed of cifar


def cifar_root(cfg: TransferDataConfig) -> str:
    return str(Path(cfg.root).expanduser() if cfg.root else data_dir(cfg.dir or None) / "cifar")


def check_transfer_data(cfg: TransferDataConfig) -> None:
    """Fail before training when CIFAR is missing (and may not be fetched) or a setting does not apply."""
    if cfg.name == "shapes":
        check_image_data(_shapes_config(cfg))
    elif not cfg.download:
        for name in ("cifar10", "cifar100"):
            _open_cifar(name, cifar_root(cfg), True, None, False)


def _shapes_config(cfg: TransferDataConfig) -> ImageDataConfig:
    return ImageDataConfig(name="shapes", dir=cfg.dir, root=cfg.root, image_size=cfg.image_size, n_train=cfg.n_train,
                           n_val=cfg.n_val, n_test=cfg.n_test, augment=cfg.augment, seed=cfg.seed)


def transfer_tasks(cfg: TransferDataConfig) -> tuple[Task, Task, dict]:
    """(source task, target task, how they were made)."""
    if cfg.name == "cifar":
        root = cifar_root(cfg)
        source = cifar_task("cifar10", root, cfg.image_size, cfg.val_size, cfg.seed, cfg.augment, cfg.download)
        target = cifar_task("cifar100", root, cfg.image_size, cfg.val_size, cfg.seed, cfg.augment, cfg.download)
        info = {"source": "CIFAR-10", "target": "CIFAR-100", "root": root}
    else:
        shapes_cfg = _shapes_config(cfg)
        data = image_splits(shapes_cfg)
        root = data_dir(cfg.dir or None)
        counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
        colors = {s: load_shapes_split(s, cfg.image_size, n, cfg.seed, root)["colors"] for s, n in counts.items()}
        src, tgt = {}, {}
        for kind, splits in (("splits", data.splits), ("eval_splits", data.eval_splits)):
            pairs = {s: source_target_views(ds, colors[s], cfg.source_share if s == "train" else 0.5)
                     for s, ds in splits.items()}
            src[kind], tgt[kind] = {s: a for s, (a, _) in pairs.items()}, {s: b for s, (_, b) in pairs.items()}
        source = Task(src["splits"], src["eval_splits"], list(data.classes))
        target = Task(tgt["splits"], tgt["eval_splits"], fine_class_names(data.classes))
        info = {"source": "shapes", "target": f"shapes x colour group ({len(target.classes)} classes)",
                **data.info}
    info["sizes"] = {t: {s: len(ds) for s, ds in task.splits.items()} for t, task in (("source", source),
                                                                                     ("target", target))}
    return source, target, info
