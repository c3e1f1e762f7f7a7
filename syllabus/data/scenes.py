"""``scenes``: procedural multi-object scenes with instance masks, for object discovery.

Public API:
    generate_scenes(n, size, seed, min_objects=2, max_objects=6) -> arrays
        ``images`` (N, S, S, 3) uint8, ``masks`` (N, S, S) uint8 instance ids (0 = background,
        i = the i-th object in depth order, 1 farthest), ``counts`` (N,) objects per image.
    load_scenes_split(split, size, count, seed, root, min_objects, max_objects) -> arrays (cached)
    ScenesDataset(arrays)[i] -> (image (3, S, S) float in [0, 1], mask (S, S) int64)
    SceneDataConfig: the ``data.*`` keys of the object-discovery experiments
    scene_splits(cfg) -> ({"train", "val", "test"} -> Dataset, info); ``data.name`` picks the
        embedded ``scenes`` or the real ``clevrtex`` (see ``syllabus.data.clevrtex``)
    check_scene_data(cfg): raises UsageError before training when the data cannot be had
    scenes_location / scenes_present / prepare_scenes: hooks for ``syllabus data``

Each scene draws 2 to 6 objects (the twelve outlines of ``shapes``, scaled, rotated, each
with a colour and a texture: flat, stripes, checks or blotches, under a light gradient) over a
low-contrast noise background, painted back to front so that nearer objects occlude farther
ones; a placement that would hide more than 60% of an object is drawn again. Image ``i`` of
a set comes from its own generator seeded by ``(seed, i)``; each split derives its own seed
from ``data.seed``; caches live under ``<data dir>/scenes/v<version>/``.
"""

from __future__ import annotations

import colorsys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from syllabus.config import choice
from syllabus.data.paths import data_dir
from syllabus.data.shapes import _PARTS, _noise_texture, _shading, _shape_alpha, _upsampled_noise, split_seed
from syllabus.errors import UsageError
from syllabus.runs import save_npz

GENERATOR_VERSION = 1  # bump whenever the scenes a seed produces change (new cache folder)
SPLITS = ("train", "val", "test")
MIN_SIZE, MAX_SIZE = 32, 256
MAX_OBJECTS = 10
_HALF_EXTENT = (0.11, 0.2)  # an object's half extent as a fraction of the side
_MIN_VISIBLE = 0.4  # fraction of an object that must stay visible
_TRIES = 30


def _object_alpha(rng: np.random.Generator, size: int) -> np.ndarray:
    """One random outline, scaled, rotated and placed inside the frame: coverage (S, S) in [0, 1]."""
    parts = _PARTS[rng.integers(len(_PARTS))]
    half = rng.uniform(*_HALF_EXTENT) * size
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = rng.uniform(half, size - half, 2)
    return _shape_alpha([(v @ rot.T * half + centre, fill) for v, fill in parts], size)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour. (3,) in [0, 255]."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.65, 1.0))
    return 255 * np.array(rgb)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A brightness pattern in [0.55, 1]: flat, stripes, checks or blotches. (S, S)."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size] / size  # (S, S) each
    theta, freq = rng.uniform(0, np.pi), rng.uniform(5, 10)
    u, v = xx * np.cos(theta) + yy * np.sin(theta), -xx * np.sin(theta) + yy * np.cos(theta)
    if kind == 0:
        field = np.ones((size, size))
    elif kind == 1:
        field = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * freq * u))
    elif kind == 2:
        field = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * freq * u) * np.sin(2 * np.pi * freq * v))
    else:
        field = _upsampled_noise(rng, 6, size)
        field = (field - field.min()) / max(np.ptp(field), 1e-6)
    return 0.55 + 0.45 * field


def _visible_ids(alphas: list[np.ndarray]) -> np.ndarray:
    """Paint coverage >= 0.5 back to front: the id of the nearest object at each pixel. (S, S) uint8."""
    ids = np.zeros(alphas[0].shape, np.uint8)
    for i, alpha in enumerate(alphas, start=1):
        ids[alpha >= 0.5] = i
    return ids


def _place_objects(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    """Coverages of up to ``count`` objects (front last), each at least 40% visible."""
    alphas: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(_TRIES):
            candidate = alphas + [_object_alpha(rng, size)]
            ids = _visible_ids(candidate)
            areas = [max(int((a >= 0.5).sum()), 1) for a in candidate]
            if all((ids == i).sum() >= _MIN_VISIBLE * area for i, area in enumerate(areas, start=1)):
                alphas = candidate
                break
    return alphas


def _render(seed: int, index: int, size: int, min_objects: int, max_objects: int):
    """Scene ``index`` of the set drawn from ``seed``: image (S, S, 3) uint8, ids (S, S) uint8, count."""
    rng = np.random.default_rng([seed, 2, index])
    bg = _noise_texture(rng, size)  # (S, S, 3)
    mean = bg.mean((0, 1))
    image = mean + rng.uniform(0.2, 0.4) * (bg - mean)  # low contrast
    alphas = _place_objects(rng, int(rng.integers(min_objects, max_objects + 1)), size)
    for alpha in alphas:
        obj = _colour(rng) * (_texture(rng, size) * _shading(rng, size))[..., None]  # (S, S, 3)
        image = image + alpha[..., None] * (obj - image)
    ids = _visible_ids(alphas) if alphas else np.zeros((size, size), np.uint8)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), ids, len(alphas)


def _check(size: int, n: int, seed: int, min_objects: int, max_objects: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UsageError(f"scenes image size must be {MIN_SIZE} to {MAX_SIZE}, got {size}")
    if n < 0 or seed < 0:
        raise UsageError(f"scenes count and seed must be >= 0, got n={n}, seed={seed}")
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise UsageError(f"scenes need 1 <= data.min_objects <= data.max_objects <= {MAX_OBJECTS}, "
                         f"got {min_objects} and {max_objects}")


def generate_scenes(n: int, size: int, seed: int, min_objects: int = 2, max_objects: int = 6) -> dict:
    """Generate ``n`` scenes of ``size`` x ``size`` deterministically from ``seed`` (see module doc)."""
    _check(size, n, seed, min_objects, max_objects)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    counts = np.empty(n, np.int64)
    for i in range(n):
        images[i], masks[i], counts[i] = _render(seed, i, size, min_objects, max_objects)
    return {"images": images, "masks": masks, "counts": counts}


def cache_path(split: str, size: int, count: int, seed: int, objects: tuple[int, int], root: Path) -> Path:
    """``root/scenes/v<version>/<split>-<size>px-<count>-<min>to<max>obj-seed<seed>.npz``."""
    name = f"{split}-{size}px-{count}-{objects[0]}to{objects[1]}obj-seed{seed}.npz"
    return Path(root) / "scenes" / f"v{GENERATOR_VERSION}" / name


def load_scenes_split(split: str, size: int, count: int, seed: int, root: Path,
                      min_objects: int = 2, max_objects: int = 6) -> dict:
    """One split's arrays, read from the cache or generated (from the split's own seed) and cached."""
    _check(size, count, seed, min_objects, max_objects)
    path = cache_path(split, size, count, seed, (min_objects, max_objects), root)
    if path.exists():
        arrays = _read_cache(path)
    else:
        arrays = generate_scenes(count, size, split_seed(seed, split), min_objects, max_objects)
        save_npz(path, arrays)
    return arrays


def _read_cache(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("images", "masks", "counts")}
        if not len(arrays["images"]) == len(arrays["masks"]) == len(arrays["counts"]):
            raise ValueError("arrays of different lengths")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"scenes cache file {path} is corrupt or unreadable ({err}); delete it") from err
    return arrays


class ScenesDataset(Dataset):
    """Scenes as (image (3, S, S) float in [0, 1], mask (S, S) int64 instance ids)."""

    def __init__(self, arrays: dict):
        self.images = torch.from_numpy(np.ascontiguousarray(arrays["images"]))  # (N, S, S, 3) uint8
        self.masks = torch.from_numpy(np.ascontiguousarray(arrays["masks"]))  # (N, S, S) uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].permute(2, 0, 1).float().div(255), self.masks[index].long()


@dataclass
class SceneDataConfig:
    name: str = choice("scenes", ["scenes", "clevrtex"])
    dir: str = ""  # cache of embedded sets; default $SYLLABUS_DATA or ~/.cache/syllabus
    root: str = ""  # clevrtex: the folder holding clevrtex_<variant>/
    variant: str = "full"  # clevrtex: full, outd, camo, ...
    image_size: int = 64
    n_train: int = 5000  # scenes only
    n_val: int = 500  # scenes only
    n_test: int = 500  # scenes only
    min_objects: int = 2  # scenes only
    max_objects: int = 6  # scenes only
    limit: int = 0  # clevrtex: keep the first `limit` images of each split (0: all)
    num_workers: int = 0
    seed: int = 0  # generation seed of the embedded set


def _clevrtex_root(cfg: SceneDataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else data_dir(cfg.dir or None) / "clevrtex"


def check_scene_data(cfg: SceneDataConfig) -> None:
    """Fail before training when the data cannot be had (missing CLEVRTex, bad sizes)."""
    if cfg.name == "clevrtex":
        from syllabus.data.clevrtex import index_clevrtex

        index_clevrtex(_clevrtex_root(cfg), cfg.variant)
    else:
        _check(cfg.image_size, max(cfg.n_train, cfg.n_val, cfg.n_test), cfg.seed, cfg.min_objects, cfg.max_objects)


def scene_splits(cfg: SceneDataConfig) -> tuple[dict[str, Dataset], dict]:
    """The train/val/test datasets of ``data.name`` and how they were made."""
    if cfg.name == "clevrtex":
        from syllabus.data.clevrtex import clevrtex_splits

        root = _clevrtex_root(cfg)
        splits = clevrtex_splits(root, cfg.variant, cfg.image_size, cfg.limit)
        info = {"dataset": f"clevrtex_{cfg.variant}", "root": str(root)}
    else:
        root = data_dir(cfg.dir or None)
        counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
        splits = {s: ScenesDataset(load_scenes_split(s, cfg.image_size, counts[s], cfg.seed, root,
                                                     cfg.min_objects, cfg.max_objects)) for s in SPLITS}
        info = {"dataset": "scenes", "root": str(root / "scenes"), "seed": cfg.seed,
                "objects": [cfg.min_objects, cfg.max_objects]}
    info["sizes"] = {s: len(ds) for s, ds in splits.items()}
    return splits, info


# --- catalogue hooks (syllabus data list / prepare), for `syllabus.data.register` ---

DEFAULT_COUNTS = {"train": 2000, "val": 300, "test": 300}  # the quick profiles' caches
DEFAULT_SIZES = (32, 64)  # slot-attention's quick at 32 px, slot-diffusion's at 64 px


def scenes_location(root_override: str | None = None) -> Path:
    return data_dir(root_override) / "scenes"


def scenes_present(root_override: str | None = None) -> bool:
    root = data_dir(root_override)
    return all(cache_path(s, size, n, 0, (2, 6), root).exists()
               for s, n in DEFAULT_COUNTS.items() for size in DEFAULT_SIZES)


def prepare_scenes(root_override: str | None = None, download: bool = False) -> str:
    """Generate the quick profiles' caches (nothing to download: the set is generated)."""
    root = data_dir(root_override)
    for split, count in DEFAULT_COUNTS.items():
        for size in DEFAULT_SIZES:
            load_scenes_split(split, size, count, 0, root)
    sizes = " and ".join(f"{size}x{size}" for size in DEFAULT_SIZES)
    return f"scenes: {'/'.join(map(str, DEFAULT_COUNTS.values()))} scenes, {sizes}, seed 0, in {scenes_location(root)}"
