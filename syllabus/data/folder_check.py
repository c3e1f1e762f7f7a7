"""Checks of an image-folder tree (``<split>/<class>/<image>``), made before any training starts.

- `scan_classes`: the class folders of one split and their image files. Symlinked folders are
  followed (as torchvision's ImageFolder does), except a link back into a folder that contains
  it (a loop, which would list the same images again and again), and a file reached twice
  through links counts once. A class folder without images is named.
- `refuse_shared_files`: one file (the same device and inode) in two class folders or two
  splits would leak test images into training; it is refused, naming both paths.
- `check_images`: PIL's header check (``verify()``, no pixel decoding) of every file, all bad
  ones named in one message; the files that passed are cached by path, size and mtime, so a
  second run over an unchanged tree opens nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from syllabus.errors import UsageError
from syllabus.runs import write_json

Sample = tuple[str, int]  # (image path, class index)


def scan_classes(split_dir: Path) -> tuple[list[str], list[Sample]]:
    """Sorted class-folder names of `split_dir` and its (path, class index) samples, sorted per class.

    Raises:
        UsageError: no class folders, or class folders without images (named).
    """
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise UsageError(f"no class folders in {split_dir}")
    samples: list[Sample] = []
    empty = []
    for index, name in enumerate(classes):
        files = image_files(split_dir / name)
        empty += [] if files else [name]
        samples += [(path, index) for path in files]
    if empty:
        raise UsageError(f"class folder(s) without images in {split_dir}: {', '.join(empty)} "
                         f"(images end in {', '.join(IMG_EXTENSIONS)}); add images or remove the folder(s)")
    return classes, samples


def image_files(folder: Path) -> list[str]:
    """Image files under `folder`, sorted, walking symlinked folders but not into a loop."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def walk(directory: str, stack: frozenset[str]) -> None:
        real = os.path.realpath(directory)
        stack = stack | {real}
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.is_dir():
                target = os.path.realpath(entry.path)
                if target not in stack and not real.startswith(target.rstrip(os.sep) + os.sep):  # not a loop
                    walk(entry.path, stack)
            elif entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS):
                identity = _identity(entry.path)
                if identity not in seen:
                    seen.add(identity)
                    found.append(entry.path)

    walk(str(folder), frozenset())
    return found


def _identity(path: str) -> tuple[int, int]:
    stat = os.stat(path)  # follows links: the file itself
    return stat.st_dev, stat.st_ino


def refuse_shared_files(splits: dict[str, Sequence[Sample]]) -> None:
    """Raise UsageError when one file appears under two splits or two classes, naming the pairs."""
    where: dict[tuple[int, int], str] = {}
    clashes = []
    for samples in splits.values():
        for path, _ in samples:
            first = where.setdefault(_identity(path), path)
            if first != path:
                clashes.append(f"{first} = {path}")
    if clashes:
        shown = "; ".join(clashes[:10]) + (f"; ... ({len(clashes)} in all)" if len(clashes) > 10 else "")
        raise UsageError(f"{len(clashes)} image file(s) appear in two places (two splits or two classes, "
                         f"through links): {shown}; keep each image in one class folder of one split")


def check_images(files: Iterable[str], cache: Path | None = None) -> int:
    """Header-check every file with PIL; cache the good ones in `cache` (JSON) by size and mtime.

    Returns:
        The number of files checked (opened or found in the cache).

    Raises:
        UsageError: naming every file that PIL cannot identify or verify.
    """
    known = _read_cache(cache)
    passed, bad, count = {}, [], 0
    for path in files:
        count += 1
        stat = os.stat(path)
        key = os.path.abspath(path)
        stamp = [stat.st_size, stat.st_mtime_ns]
        if known.get(key) == stamp or _verify(path):
            passed[key] = stamp
        else:
            bad.append(path)
    if cache is not None and passed != known:
        _write_cache(cache, {**known, **passed})
    if bad:
        raise UsageError(f"{len(bad)} corrupt image(s): {', '.join(bad)}; delete or replace them")
    return count


def _verify(path: str) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - PIL raises many types; any of them means corrupt
        return False
    return True


def cache_file(root: Path, cache_dir: Path) -> Path:
    """Where the checks of the tree at `root` are cached: one JSON file per tree under `cache_dir`."""
    digest = hashlib.sha1(os.path.realpath(root).encode()).hexdigest()[:16]
    return cache_dir / "image-checks" / f"{digest}.json"


def _read_cache(cache: Path | None) -> dict[str, list[int]]:
    try:
        data = json.loads(cache.read_text()) if cache is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: Path, data: dict[str, list[int]]) -> None:
    """Best effort (a read-only cache folder only costs the checks again), written atomically."""
    try:
        write_json(cache, data)
    except OSError:
        pass
