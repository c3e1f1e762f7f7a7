"""The data of `clip`: captioned `shapes` pairs, STL-10 or an image folder with prompts, open_clip weights.

Every source becomes a `PairedData`: the class names, the prompting strategies (a function
per strategy giving a class's prompts), a `fit` split (train images paired with texts:
trains the small CLIP and fits the gap and Procrustes maps), a `test` split and, for
`shapes`, a `val` split and the `holdout` images of the colour-shape combination that no
training caption names. Real images are paired with a prompt of their class, in turn
through the ensemble's templates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from syllabus.config import choice, ranged
from syllabus.data import captions as cap
from syllabus.data import shapes
from syllabus.data.paths import data_dir
from syllabus.errors import UsageError
from syllabus.explain.embeddings import accuracy, zero_shot_predict

Prompts = Callable[[str], list[str]]


@dataclass
class DataConfig:
    name: str = choice("shapes", ["shapes", "stl10", "folder"])
    dir: str = ""  # cache of embedded sets; default $SYLLABUS_DATA or ~/.cache/syllabus
    root: str = ""  # stl10: the folder holding stl10_binary/; folder: one with train/<class>/ and test/<class>/
    download: bool = False  # stl10: fetch it (2.6 GB) into data.root when missing
    image_size: int = ranged(32, 32, 256)  # shapes
    n_train: int = ranged(4000, 2)  # shapes
    n_val: int = ranged(1000, 1)  # shapes
    n_test: int = ranged(1000, 1)  # shapes
    captions_per_image: int = ranged(4, 1)  # shapes: wordings per training image
    holdout: str = "green star"  # shapes: "<colour> <shape>" never captioned in training; "" for none
    max_fit: int = ranged(5000, 2)  # real data: train images paired with prompts for the fits
    max_test: int = ranged(0, 0)  # real data: cap on test images; 0 = all
    num_workers: int = ranged(0, 0)
    seed: int = 0


@dataclass
class Split:
    images: Dataset  # (image, label) pairs, ready for the image tower
    labels: np.ndarray  # (N,)
    texts: list[list[str]]  # the texts of each image (captions, or prompts of its class)
    colours: list[str] = field(default_factory=list)  # shapes: the colour name of each object


@dataclass
class PairedData:
    classes: list[str]
    strategies: dict[str, Prompts]
    fit: Split
    test: Split
    info: dict
    val: Split | None = None
    holdout: Split | None = None
    holdout_combo: tuple[str, str] | None = None  # (colour, shape)


def _templates(*templates: str) -> Prompts:
    return lambda c: [t.format(c) for t in templates]


SHAPE_STRATEGIES = {
    "bare": _templates("{}"),
    "photo": _templates("a photo of a {}."),
    "descriptive": _templates("a picture of a {} shape on a background."),
    "ensemble": _templates("a {}.", "a drawing of a {}.", "a picture of a {}.", "a {} shape.", "{}",
                           "a photo of a {}."),
}
PHOTO_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a blurry photo of a {}.", "a close-up photo of a {}.",
                   "a bright photo of a {}.", "a cropped photo of a {}.", "a low resolution photo of a {}.",
                   "a good photo of the {}.")
STL10_KINDS = {"airplane": "aircraft", "bird": "animal", "car": "vehicle", "cat": "animal", "deer": "animal",
               "dog": "animal", "horse": "animal", "monkey": "animal", "ship": "boat", "truck": "vehicle"}
PHOTO_STRATEGIES = {
    "bare": _templates("{}"),
    "photo": _templates("a photo of a {}."),
    "descriptive": lambda c: [f"a photo of a {c}, a type of {STL10_KINDS.get(c, 'object')}."],
    "ensemble": _templates(*PHOTO_TEMPLATES),
}


class CaptionPairs(Dataset):
    """(image, tokens (K, L)) for training: every caption of an image, tokenised once."""

    def __init__(self, images: Dataset, texts: list[list[str]], tokenizer: cap.CaptionTokenizer):
        self.images = images
        unique = sorted({t for row in texts for t in row})
        ids = tokenizer(unique)  # (U, L)
        index = {t: i for i, t in enumerate(unique)}
        self.tokens = torch.stack([ids[[index[t] for t in row]] for row in texts])  # (N, K, L)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int):
        return self.images[i][0], self.tokens[i]


# --- shapes ---


def parse_holdout(text: str) -> tuple[str, str] | None:
    if not text.strip():
        return None
    words = text.split()
    if len(words) != 2 or words[0] not in cap.COLOURS or words[1] not in shapes.SHAPE_CLASSES:
        raise UsageError(f"data.holdout={text!r}: expected '<colour> <shape>' with a colour of "
                         f"{', '.join(cap.COLOURS)} and a shape of {', '.join(shapes.SHAPE_CLASSES)} (or '')")
    return words[0], words[1]


def _take(images: Dataset, labels: np.ndarray, texts: list, colours: list, idx: np.ndarray) -> Split:
    return Split(Subset(images, idx.tolist()), labels[idx], [texts[i] for i in idx], [colours[i] for i in idx])


def shapes_pairs(cfg: DataConfig) -> PairedData:
    """Captioned `shapes` splits; the held-out combination leaves train and val for its own split."""
    root, combo = data_dir(cfg.dir or None), parse_holdout(cfg.holdout)
    counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    splits, held = {}, []
    for s, count in counts.items():
        arrays = shapes.load_shapes_split(s, cfg.image_size, count, cfg.seed, root)
        attrs = cap.split_attributes(arrays, shapes.split_seed(cfg.seed, s))
        texts = cap.captions_for(attrs, cfg.captions_per_image if s == "train" else 1, shapes.split_seed(cfg.seed, s))
        images = shapes.ShapesDataset(arrays, transform=lambda x: (x - 0.5) / 0.25)
        is_held = np.array([c == combo for c in attrs.combos()])
        keep = np.flatnonzero(~is_held)
        splits[s] = _take(images, arrays["labels"], texts, attrs.colour, keep)
        if s != "train":
            held.append(_take(images, arrays["labels"], texts, attrs.colour, np.flatnonzero(is_held)))
    holdout = None
    if combo is not None:
        holdout = Split(ConcatDataset([h.images for h in held]), np.concatenate([h.labels for h in held]),
                        [t for h in held for t in h.texts], [c for h in held for c in h.colours])
    info = {"dataset": "shapes", "root": str(root / "shapes"), "sizes": {s: len(v.labels) for s, v in splits.items()},
            "holdout": cfg.holdout, "holdout_images": 0 if holdout is None else len(holdout.labels)}
    return PairedData(list(shapes.SHAPE_CLASSES), SHAPE_STRATEGIES, splits["train"], splits["test"], info,
                      val=splits["val"], holdout=holdout, holdout_combo=combo)


def holdout_study(encode_images: Callable[[Dataset], np.ndarray], encode_texts: Callable[[list[str]], np.ndarray],
                  data: PairedData, shape_weights: np.ndarray) -> list[dict]:
    """Shape, colour and colour-shape zero-shot accuracy on the held-out combination and on seen test images."""
    combos = [(c, s) for c in cap.COLOURS for s in data.classes]
    combo_w = encode_texts([f"a {c} {s}." for c, s in combos])  # (C * S, E)
    colour_w = combo_w.reshape(len(cap.COLOURS), len(data.classes), -1).mean(1)  # (C, E): ensemble over shapes
    rows = []
    for name, split in (("seen test images", data.test), ("held-out combination", data.holdout)):
        img = encode_images(split.images)  # (N, E)
        colours = split.colours
        combo_true = np.array([combos.index((c, data.classes[y])) for c, y in zip(colours, split.labels)])
        rows.append({"images": name, "n": len(split.labels),
                     "shape": accuracy(zero_shot_predict(img, shape_weights), split.labels),
                     "colour": accuracy(zero_shot_predict(img, colour_w), np.array([cap.COLOURS.index(c)
                                                                                    for c in colours])),
                     "colour and shape": accuracy(zero_shot_predict(img, combo_w), combo_true)})
    return rows


# --- real images: STL-10 or a folder, with open_clip's preprocessing ---


def _root(cfg: DataConfig, name: str) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else data_dir(cfg.dir or None) / name


def check_data(cfg: DataConfig) -> None:
    """Fail before anything loads when a real dataset is missing (shapes is generated)."""
    if cfg.name == "shapes":
        parse_holdout(cfg.holdout)
    elif cfg.name == "stl10" and not cfg.download:
        root = _root(cfg, "stl10")
        if not (root / "stl10_binary" / "test_X.bin").exists():
            raise UsageError(f"STL-10 is not in {root} (expected stl10_binary/test_X.bin); rerun with "
                             "--set data.download=true to fetch it (2.6 GB), or point --set data.root at the "
                             "folder holding stl10_binary/")
    elif cfg.name == "folder":
        root = _root(cfg, "folder")
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise UsageError(f"data.root={root} has no {' or '.join(missing)}/ folder; an image folder for clip "
                             "holds train/<class>/*.jpg and test/<class>/*.jpg (set it with --set data.root=...)")


def _real_split(dataset: Dataset, labels: np.ndarray, classes: list[str], cap_n: int, seed: int) -> Split:
    """A seeded subset of at most `cap_n` images (0 = all), each paired with one template of its class."""
    idx = np.arange(len(labels))
    if cap_n and cap_n < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, cap_n, replace=False))
    texts = [[PHOTO_TEMPLATES[i % len(PHOTO_TEMPLATES)].format(classes[labels[j]])] for i, j in enumerate(idx)]
    return Split(Subset(dataset, idx.tolist()), labels[idx], texts)


def real_pairs(cfg: DataConfig, preprocess: Callable) -> PairedData:
    """STL-10 (train: fit pairs, test) through torchvision, or an ImageFolder with train/ and test/."""
    from torchvision import datasets

    check_data(cfg)
    if cfg.name == "stl10":
        root = _root(cfg, "stl10")
        parts = {s: datasets.STL10(str(root), split=s, transform=preprocess, download=cfg.download)
                 for s in ("train", "test")}
        labels = {s: np.asarray(d.labels, np.int64) for s, d in parts.items()}
        classes = list(parts["test"].classes)
    else:
        root = _root(cfg, "folder")
        parts = {s: datasets.ImageFolder(str(root / s), transform=preprocess) for s in ("train", "test")}
        labels = {s: np.asarray(d.targets, np.int64) for s, d in parts.items()}
        classes = list(parts["test"].classes)
        if list(parts["train"].classes) != classes:
            raise UsageError(f"{root}: train/ and test/ hold different class folders")
    fit = _real_split(parts["train"], labels["train"], classes, cfg.max_fit, cfg.seed)
    test = _real_split(parts["test"], labels["test"], classes, cfg.max_test, cfg.seed + 1)
    info = {"dataset": cfg.name, "root": str(root), "sizes": {"fit": len(fit.labels), "test": len(test.labels)}}
    return PairedData(classes, PHOTO_STRATEGIES, fit, test, info)


def resolve_weights(model_cfg) -> tuple[str | None, bool]:
    """(what open_clip's `pretrained` gets, whether QuickGELU is forced) without downloading unless asked."""
    from open_clip import pretrained as oc_pretrained

    tag = model_cfg.pretrained
    if tag.lower() == "none":
        return None, False
    if Path(tag).expanduser().is_file():
        return str(Path(tag).expanduser()), False
    cfg = oc_pretrained.get_pretrained_cfg(model_cfg.arch, tag)
    if not cfg:
        raise UsageError(f"open_clip has no weights {tag!r} for {model_cfg.arch} (model.pretrained: a tag, a "
                         "weights file, or none)")
    if model_cfg.download:
        return tag, False
    cached = _cached_weights(cfg)
    if cached is None:
        raise UsageError(f"open_clip {model_cfg.arch} weights {tag!r} are not on this machine; rerun with "
                         "--set model.download=true to fetch them (about 600 MB), or point --set "
                         "model.pretrained at a local weights file")
    return cached, bool(cfg.get("quick_gelu", False))


def _cached_weights(cfg: dict) -> str | None:
    """A local copy of open_clip weights: the Hugging Face cache, else open_clip's URL cache."""
    from huggingface_hub import try_to_load_from_cache

    hub = cfg.get("hf_hub", "").strip("/")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hub, name) if hub else None
        if isinstance(found, str):
            return found
    url = cfg.get("url", "")
    local = Path("~/.cache/clip").expanduser() / Path(url).name
    return str(local) if url and local.is_file() else None


def load_open_clip(model_cfg, device: torch.device):
    """(model in eval mode on `device`, image preprocessing, tokenizer) of open_clip."""
    import open_clip

    pretrained, quick_gelu = resolve_weights(model_cfg)
    model, _, preprocess = open_clip.create_model_and_transforms(model_cfg.arch, pretrained=pretrained,
                                                                 force_quick_gelu=quick_gelu, device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_cfg.arch)
