"""``shapes``: procedurally generated image classification with object masks.

Each image holds one filled shape of a class in ``SHAPE_CLASSES`` (random colour, size,
rotation, position) over a textured background: a dimmed random crop of a photo that
scikit-learn ships, or procedural noise and stripes, plus up to two small distractor
blobs or lines. Every image comes with the binary mask of its object, which scores
Grad-CAM localisation.

Generation is a pure function of ``(n, size, seed)``: image ``i`` draws from its own
generator seeded by ``(seed, i)``, so a set of ``n`` images is a prefix of a set of
``n + k`` and the result does not depend on how the work is split. The three splits use
seeds derived from the run seed, so they do not overlap.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from syllabus.data.paths import data_dir
from syllabus.errors import UsageError
from syllabus.runs import save_npz

SHAPE_CLASSES = (
    "circle", "square", "triangle", "diamond", "star", "cross",
    "ring", "heart", "arrow", "crescent", "semicircle", "hourglass",
)  # fmt: skip
SPLITS = ("train", "val", "test")
MIN_SIZE, MAX_SIZE = 32, 256

# The default quick cache (`syllabus data prepare shapes`); experiments reuse these.
DEFAULT_SIZE = 32
DEFAULT_N_TRAIN = 4000
DEFAULT_N_VAL = 1000
DEFAULT_N_TEST = 1000
DEFAULT_SEED = 0
DEFAULT_COUNTS = {"train": DEFAULT_N_TRAIN, "val": DEFAULT_N_VAL, "test": DEFAULT_N_TEST}

# Per-channel statistics of [0, 1] images (measured on 10,000 images at 64x64, seed 0).
SHAPES_MEAN = (0.481, 0.480, 0.461)
SHAPES_STD = (0.273, 0.246, 0.269)

GENERATOR_VERSION = 2  # bump whenever the images a seed produces change (new cache folder)
_SIZE_RANGE = (0.45, 0.8)  # object extent as a fraction of the image side
_OUTSIDE = 0.03  # how far (fraction of the side) the object may leave the frame
_PHOTO_P = 0.6  # chance of a photo background over a procedural one


# --- geometry: each class is a list of (vertices (K, 2), fill) in unit coordinates ---


def _circle(k: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)  # (k, 2)


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(t), np.sin(t)], 1)  # (n, 2)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    radius = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return _regular(2 * points) * radius[:, None]  # (2 * points, 2)


def _heart(k: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1)  # (k, 2), image coordinates: y grows downwards


def _semicircle(k: int = 32) -> np.ndarray:
    t = np.linspace(0, np.pi, k)
    return np.stack([np.cos(t), -np.sin(t)], 1)  # (k, 2), closed along the diameter


_ARROW = [(-1, -0.22), (0.1, -0.22), (0.1, -0.65), (1, 0), (0.1, 0.65), (0.1, 0.22), (-1, 0.22)]
_CROSS = [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
          (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]  # fmt: skip
_HOURGLASS = [(-0.8, -1), (0.8, -1), (0.12, 0), (0.8, 1), (-0.8, 1), (-0.12, 0)]

_RAW_PARTS = {
    "circle": [(_circle(), 255)],
    "square": [(_regular(4, np.pi / 4), 255)],
    "triangle": [(_regular(3), 255)],
    "diamond": [(np.array([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)]), 255)],
    "star": [(_star(), 255)],
    "cross": [(np.array(_CROSS), 255)],
    "ring": [(_circle(), 255), (0.55 * _circle(), 0)],
    "heart": [(_heart(), 255)],
    "arrow": [(np.array(_ARROW), 255)],
    "crescent": [(_circle(), 255), (0.85 * _circle() + (0.5, 0.0), 0)],
    "semicircle": [(_semicircle(), 255)],
    "hourglass": [(np.array(_HOURGLASS), 255)],
}


def _normalise(parts: list) -> list:
    """Centre the filled parts' bounding box at 0 and scale its longer side to 2."""
    filled = np.concatenate([v for v, fill in parts if fill])  # (K, 2)
    lo, hi = filled.min(0), filled.max(0)
    centre, scale = (lo + hi) / 2, 2 / (hi - lo).max()
    return [((np.asarray(v, float) - centre) * scale, fill) for v, fill in parts]


_PARTS = tuple(_normalise(_RAW_PARTS[name]) for name in SHAPE_CLASSES)


# --- rendering one image ---


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(a) for a in load_sample_images().images)  # (427, 640, 3)


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (random scale, flips) of a shipped photo. (S, S, 3) float."""
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    side = rng.uniform(0.12, 0.9) * min(w, h)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    crop = photo.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side), reducing_gap=2.0)
    out = np.asarray(crop, dtype=np.float32)  # (S, S, 3)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    return out


def _upsampled_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    small = Image.fromarray(rng.integers(0, 256, (cells, cells), dtype=np.uint8))
    return np.asarray(small.resize((size, size), Image.BICUBIC), np.float32) / 255  # (S, S)


def _noise_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-octave value noise, sometimes with stripes, between two colours. (S, S, 3)."""
    field = sum(w * _upsampled_noise(rng, c, size) for c, w in ((3, 0.5), (7, 0.3), (16, 0.2)))
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size] / size  # (S, S) each
        theta, freq = rng.uniform(0, np.pi), rng.uniform(2, 8)
        stripes = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)))
        field = 0.6 * field + 0.2 * (stripes + 1)
    c1, c2 = rng.uniform(0, 255, (2, 3))
    grain = rng.normal(0, 6, (size, size, 3))
    return (c1 + (c2 - c1) * field[..., None] + grain).astype(np.float32)  # (S, S, 3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background with its contrast lowered so an object stands out. (S, S, 3)."""
    photo = rng.random() < _PHOTO_P
    bg = _photo_crop(rng, size) if photo else _noise_texture(rng, size)
    mean = bg.mean((0, 1))  # (3,)
    return mean + rng.uniform(0.35, 0.75) * (bg - mean)


def _add_distractors(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw 0-2 small elongated blobs or lines, which are none of the classes."""
    size = bg.shape[0]
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 3)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            rx, ry = size * rng.uniform(0.02, 0.06), size * rng.uniform(0.01, 0.03)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour)
        else:
            angle, length = rng.uniform(0, np.pi), size * rng.uniform(0.15, 0.35)
            dx, dy = length * np.cos(angle), length * np.sin(angle)
            width = max(1, round(size * rng.uniform(0.01, 0.025)))
            draw.line((x, y, x + dx, y + dy), fill=colour, width=width)
    return np.asarray(canvas, np.float32)  # (S, S, 3)


def _place(rng: np.random.Generator, label: int, size: int) -> list:
    """Scale, rotate and translate a class's parts into pixel coordinates."""
    half = rng.uniform(*_SIZE_RANGE) * size / 2
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    parts = [(v @ rot.T * half, fill) for v, fill in _PARTS[label]]
    filled = np.concatenate([v for v, fill in parts if fill])  # (K, 2)
    lo, hi = filled.min(0), filled.max(0)  # (2,) each
    low, high = -lo - _OUTSIDE * size, size - hi + _OUTSIDE * size
    centre = np.where(low < high, rng.uniform(np.minimum(low, high), np.maximum(low, high)), size / 2)
    return [(v + centre, fill) for v, fill in parts]


def _shape_alpha(parts: list, size: int) -> np.ndarray:
    """Draw at twice the size and box-downsample: anti-aliased coverage in [0, 1]. (S, S)."""
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    for vertices, fill in parts:
        draw.polygon([tuple(p) for p in 2 * vertices], fill=fill)
    return np.asarray(canvas.reduce(2), np.float32) / 255


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Of 16 random colours, the one farthest from the background under the object. (3,)."""
    local = (alpha[..., None] * bg).sum((0, 1)) / max(alpha.sum(), 1e-6)  # (3,)
    candidates = rng.uniform(0, 255, (16, 3))
    return candidates[np.linalg.norm(candidates - local, axis=1).argmax()]


def _shading(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gentle linear light gradient across the image, multiplied into the object. (S, S)."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5  # (S, S) each
    phi, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.35)
    return 1 + strength * (xx * np.cos(phi) + yy * np.sin(phi))


def _render(seed: int, index: int, label: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of the set drawn from ``seed``: image (S, S, 3) uint8, mask (S, S), colour (3,)."""
    rng = np.random.default_rng([seed, 0, index])
    bg = _add_distractors(_background(rng, size), rng)  # (S, S, 3)
    alpha = _shape_alpha(_place(rng, label, size), size)  # (S, S)
    colour = _contrasting_colour(rng, bg, alpha)  # (3,)
    obj = colour * _shading(rng, size)[..., None]  # (S, S, 3)
    image = bg + alpha[..., None] * (obj - bg)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), alpha >= 0.5, colour.astype(np.uint8)


def _labels(n: int, seed: int) -> np.ndarray:
    """Balanced labels: each block of len(SHAPE_CLASSES) images is a permutation. (n,)."""
    k = len(SHAPE_CLASSES)
    blocks = [np.random.default_rng([seed, 1, b]).permutation(k) for b in range(-(-n // k))]
    return np.concatenate(blocks or [np.zeros(0, np.int64)])[:n].astype(np.int64)


def _check(size: int, n: int, seed: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UsageError(f"shapes image size must be {MIN_SIZE} to {MAX_SIZE}, got {size}")
    if n < 0 or seed < 0:
        raise UsageError(f"shapes count and seed must be >= 0, got n={n}, seed={seed}")


def generate_shapes(n: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Generate ``n`` images of ``size`` x ``size`` deterministically from ``seed``.

    Returns:
        ``images`` (N, S, S, 3) uint8, ``masks`` (N, S, S) bool, ``labels`` (N,) int64,
        ``colors`` (N, 3) uint8 (each object's base colour), ``classes`` (C,) str.
    """
    _check(size, n, seed)
    labels = _labels(n, seed)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    colors = np.empty((n, 3), np.uint8)
    for i, label in enumerate(labels):
        images[i], masks[i], colors[i] = _render(seed, i, int(label), size)
    return {"images": images, "masks": masks, "labels": labels, "colors": colors, "classes": np.array(SHAPE_CLASSES)}


# --- splits and the on-disk cache ---


def split_seed(seed: int, split: str) -> int:
    """The generation seed of one split, derived from the run seed."""
    if split not in SPLITS:
        raise UsageError(f"unknown shapes split {split!r}; valid: {', '.join(SPLITS)}")
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def cache_path(split: str, size: int, count: int, seed: int, root: Path) -> Path:
    """Where one split lives: ``root/shapes/v<version>/<split>-<size>px-<count>-seed<seed>.npz``."""
    return Path(root) / "shapes" / f"v{GENERATOR_VERSION}" / f"{split}-{size}px-{count}-seed{seed}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    keys = ("images", "masks", "labels", "classes")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"missing arrays {missing}")
        if not len(arrays["images"]) == len(arrays["masks"]) == len(arrays["labels"]):
            raise ValueError("arrays of different lengths")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(
            f"shapes cache file {path} is corrupt or unreadable ({err}); delete it "
            "or run `syllabus data prepare shapes`"
        ) from err
    return arrays


def load_shapes_split(split: str, size: int, count: int, seed: int, root: Path) -> dict[str, np.ndarray]:
    """One split's arrays, read from the cache under ``root/shapes/`` or generated and cached.

    Args:
        split: ``train``, ``val`` or ``test``.
        size: image side in pixels (32 to 256).
        count: number of images.
        seed: the run seed; each split derives its own generation seed from it.
        root: the data directory (see ``syllabus.data.paths.data_dir``).
    """
    _check(size, count, seed)
    path = cache_path(split, size, count, seed, root)
    if path.exists():
        return _read_cache(path)
    arrays = generate_shapes(count, size, split_seed(seed, split))
    save_npz(path, arrays)
    return arrays


def prepare_default_shapes(root: Path) -> list[Path]:
    """Write the default quick cache, regenerating any file that is unreadable."""
    paths = []
    for split, count in DEFAULT_COUNTS.items():
        path = cache_path(split, DEFAULT_SIZE, count, DEFAULT_SEED, root)
        try:
            load_shapes_split(split, DEFAULT_SIZE, count, DEFAULT_SEED, root)
        except UsageError:
            path.unlink(missing_ok=True)
            load_shapes_split(split, DEFAULT_SIZE, count, DEFAULT_SEED, root)
        paths.append(path)
    return paths


class ShapesDataset(Dataset):
    """Images as (3, H, W) float tensors in [0, 1], with labels and optionally masks.

    Args:
        arrays: what ``generate_shapes`` / ``load_shapes_split`` return.
        transform: applied to the image tensor (e.g. torchvision.transforms.v2); the mask
            is not transformed, so use geometric augmentation only without ``with_mask``.
        with_mask: also return the object mask (H, W) float in {0, 1}.
    """

    def __init__(self, arrays: dict, transform=None, with_mask: bool = False):
        self.images = torch.from_numpy(np.ascontiguousarray(arrays["images"]))  # (N, H, W, 3) uint8
        self.masks = torch.from_numpy(np.ascontiguousarray(arrays["masks"]))  # (N, H, W)
        self.targets = [int(y) for y in arrays["labels"]]
        self.classes = [str(c) for c in arrays.get("classes", SHAPE_CLASSES)]
        self.transform = transform
        self.with_mask = with_mask

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.images[index].permute(2, 0, 1).float().div(255)  # (3, H, W)
        if self.transform is not None:
            image = self.transform(image)
        if self.with_mask:
            return image, self.targets[index], self.masks[index].float()  # mask (H, W)
        return image, self.targets[index]


def shapes_splits(size: int, n_train: int, n_val: int, n_test: int, seed: int, root: Path) -> dict[str, ShapesDataset]:
    """The three splits as datasets, each generated from its own derived seed and cached."""
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return {s: ShapesDataset(load_shapes_split(s, size, counts[s], seed, root)) for s in SPLITS}


def channel_mean_std(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the images in [0, 1]. Each (3,)."""
    x = arrays["images"].reshape(-1, 3).astype(np.float64) / 255  # (N*H*W, 3)
    return x.mean(0), x.std(0)


# --- catalogue hooks (syllabus data list / prepare) ---


def shapes_location(root_override: str | None = None) -> Path:
    """The cache folder: ``<data dir>/shapes``, the data dir given by ``data.dir``."""
    return data_dir(root_override) / "shapes"


def shapes_present(root_override: str | None = None) -> bool:
    """Whether the default quick cache has been written."""
    root = data_dir(root_override)
    return all(cache_path(s, DEFAULT_SIZE, n, DEFAULT_SEED, root).exists() for s, n in DEFAULT_COUNTS.items())


def prepare_shapes(root_override: str | None = None, download: bool = False) -> str:
    """Generate the default quick cache (nothing to download: the set is generated)."""
    paths = prepare_default_shapes(data_dir(root_override))
    counts = "/".join(str(n) for n in DEFAULT_COUNTS.values())
    return (
        f"shapes: {len(paths)} splits ({counts} images, {DEFAULT_SIZE}x{DEFAULT_SIZE}, "
        f"seed {DEFAULT_SEED}) ready in {paths[0].parent}"
    )
