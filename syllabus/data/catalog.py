"""The catalogue of datasets behind ``syllabus data list`` and ``syllabus data prepare``.

Adding a dataset is one ``register(DatasetEntry(...))`` line naming its three hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from syllabus.data.birds import birds_location, birds_present, prepare_birds
from syllabus.data.clevrtex import clevrtex_location, clevrtex_present, prepare_clevrtex
from syllabus.data.digits import mnist_location, mnist_present, prepare_digits, prepare_mnist
from syllabus.data.paths import data_dir
from syllabus.data.scenes import prepare_scenes, scenes_location, scenes_present
from syllabus.data.shapes import prepare_shapes, shapes_location, shapes_present
from syllabus.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset the CLI can list and prepare.

    Each hook takes ``root_override``: for a real set the folder the user pointed at with
    ``--set data.root=...``; for an embedded set the data directory (``--set data.dir=...``).

    Args:
        name: the name users type.
        kind: ``"embedded"`` (generated or shipped with a dependency) or ``"real"``.
        description: one line for ``syllabus data list``.
        locate: root_override → where the data lives (or would live).
        check: root_override → whether it is there and usable.
        make: (root_override, download) → a message; raises UsageError if it cannot.
    """

    name: str
    kind: str
    description: str
    locate: Callable[[str | None], Path]
    check: Callable[[str | None], bool]
    make: Callable[[str | None, bool], str]

    def location(self, root_override: str | None = None) -> Path:
        return self.locate(root_override)

    def present(self, root_override: str | None = None) -> bool:
        return self.check(root_override)

    def prepare(self, root_override: str | None = None, download: bool = False) -> str:
        return self.make(root_override, download)


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(entry: DatasetEntry) -> DatasetEntry:
    if entry.kind not in ("embedded", "real"):
        raise ValueError(f"dataset kind must be 'embedded' or 'real', got {entry.kind!r}")
    return DATASETS.add(entry.name, entry)


def get_dataset_entry(name: str) -> DatasetEntry:
    return DATASETS.get(name)


_SHAPES = "procedural shapes on textured backgrounds, with object masks"
_BIRDS = "Indian Birds, 25 species (Kaggle Birds_25), ImageFolder"
register(DatasetEntry("shapes", "embedded", _SHAPES, shapes_location, shapes_present, prepare_shapes))
register(DatasetEntry("birds", "real", _BIRDS, birds_location, birds_present, prepare_birds))
register(DatasetEntry("digits", "embedded", "scikit-learn's 1,797 real handwritten 8x8 digits",
                      lambda _: Path("sklearn.datasets.load_digits"), lambda _: True, prepare_digits))
register(DatasetEntry("mnist", "real", "MNIST handwritten digits (torchvision)",
                      mnist_location, mnist_present, prepare_mnist))

register(DatasetEntry("scenes", "embedded", "procedural multi-object scenes with instance masks",
                      scenes_location, scenes_present, prepare_scenes))
register(DatasetEntry("clevrtex", "real", "CLEVRTex (official layout), --set data.root=...",
                      clevrtex_location, clevrtex_present, prepare_clevrtex))

__all__ = ["DATASETS", "DatasetEntry", "data_dir", "get_dataset_entry", "register"]
