"""The image data layer: generated `shapes`, the `birds` ImageFolder and the catalogue."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader

from syllabus.data import shapes
from syllabus.data.birds import birds_splits, verify_images
from syllabus.data.catalog import DATASETS, get_dataset_entry
from syllabus.data.paths import data_dir
from syllabus.data.shapes import (
    SHAPE_CLASSES,
    ShapesDataset,
    cache_path,
    generate_shapes,
    load_shapes_split,
    shapes_splits,
)
from syllabus.errors import UsageError

N = 5 * len(SHAPE_CLASSES)  # five full blocks of balanced labels


@pytest.fixture(scope="module")
def small():
    return generate_shapes(N, 32, seed=3)


# --- paths ---


def test_data_dir_override_then_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SYLLABUS_DATA", str(tmp_path / "env"))
    assert data_dir(str(tmp_path / "x")) == tmp_path / "x"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("SYLLABUS_DATA")
    assert data_dir().parts[-2:] == (".cache", "syllabus")


# --- shapes: generation ---


def test_shapes_arrays_have_documented_shapes_and_dtypes(small):
    assert small["images"].shape == (N, 32, 32, 3) and small["images"].dtype == np.uint8
    assert small["masks"].shape == (N, 32, 32) and small["masks"].dtype == bool
    assert small["labels"].shape == (N,) and small["labels"].dtype == np.int64
    assert list(small["classes"]) == list(SHAPE_CLASSES)
    assert len(SHAPE_CLASSES) >= 10


def test_same_seed_same_images_other_seed_other_images(small):
    again = generate_shapes(N, 32, seed=3)
    other = generate_shapes(N, 32, seed=4)
    for key in ("images", "masks", "labels"):
        np.testing.assert_array_equal(again[key], small[key])
    assert not np.array_equal(other["images"], small["images"])


def test_a_smaller_set_is_a_prefix_of_a_larger_one(small):
    prefix = generate_shapes(20, 32, seed=3)
    np.testing.assert_array_equal(prefix["images"], small["images"][:20])


def test_every_class_appears_equally(small):
    assert np.bincount(small["labels"], minlength=len(SHAPE_CLASSES)).tolist() == [5] * len(SHAPE_CLASSES)


def test_masks_are_objects_that_stand_out_from_the_background(small):
    images, masks = small["images"].astype(float), small["masks"]
    area = masks.mean((1, 2))  # (N,)
    assert (area > 0.02).all() and (area < 0.8).all()
    inside = (images * masks[..., None]).sum((1, 2)) / masks.sum((1, 2))[:, None]  # (N, 3)
    outside = (images * ~masks[..., None]).sum((1, 2)) / (~masks).sum((1, 2))[:, None]  # (N, 3)
    assert (np.linalg.norm(inside - outside, axis=1) > 40).all()


@pytest.mark.parametrize("size", [32, 256])
def test_supported_resolutions(size):
    arrays = generate_shapes(2, size, seed=0)
    assert arrays["images"].shape == (2, size, size, 3)
    assert arrays["masks"].any((1, 2)).all()


@pytest.mark.parametrize("size", [31, 257])
def test_unsupported_resolutions_are_refused(size):
    with pytest.raises(UsageError, match="32 to 256"):
        generate_shapes(2, size, seed=0)


# --- shapes: cache and splits ---


def test_cache_is_written_then_read_back(tmp_path, monkeypatch):
    first = load_shapes_split("val", 32, 12, 0, tmp_path)
    path = cache_path("val", 32, 12, 0, tmp_path)
    assert path.is_file() and path.parent.parent == tmp_path / "shapes"
    assert not list(path.parent.glob("*.tmp"))

    def fail(*args):
        raise AssertionError("regenerated instead of reading the cache")

    monkeypatch.setattr(shapes, "generate_shapes", fail)
    second = load_shapes_split("val", 32, 12, 0, tmp_path)
    for key in ("images", "masks", "labels"):
        np.testing.assert_array_equal(second[key], first[key])


def test_corrupt_cache_names_the_file(tmp_path):
    path = cache_path("train", 32, 12, 0, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    with pytest.raises(UsageError, match="syllabus data prepare shapes") as err:
        load_shapes_split("train", 32, 12, 0, tmp_path)
    assert str(path) in str(err.value)


def test_splits_are_distinct_datasets(tmp_path):
    splits = shapes_splits(32, 24, 12, 12, seed=0, root=tmp_path)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [24, 12, 12]
    train, val = splits["train"].images, splits["val"].images  # (N, H, W, 3)
    assert not any(torch.equal(v, t) for v in val for t in train)


def test_dataset_items_transform_and_masks(small):
    flip = ShapesDataset(small, transform=T.RandomHorizontalFlip(p=1.0), with_mask=True)
    image, label, mask = flip[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    plain = ShapesDataset(small)[0][0]
    torch.testing.assert_close(image, plain.flip(-1))
    assert isinstance(label, int) and label == flip.targets[0]
    assert mask.shape == (32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert flip.classes == list(SHAPE_CLASSES)
    images, labels = next(iter(DataLoader(ShapesDataset(small), batch_size=8)))
    assert images.shape == (8, 3, 32, 32) and labels.shape == (8,)


# --- birds ---

from conftest import BIRD_CLASSES, write_jpegs  # noqa: E402


def test_kaggle_layout_gives_three_splits_with_a_stratified_test(kaggle_birds):
    datasets, info = birds_splits(kaggle_birds.parent, image_size=32, test_fraction=0.2, seed=0)
    assert info["counts"] == {"train": 24, "val": 9, "test": 6}
    for ds in datasets.values():
        assert ds.classes == BIRD_CLASSES
    assert np.bincount(datasets["test"].targets).tolist() == [2, 2, 2]
    train_files = {p for p, _ in datasets["train"].samples}
    assert not train_files & {p for p, _ in datasets["test"].samples}
    assert len(info["test_files"]) == 6 and all(f.startswith("train/") for f in info["test_files"])
    image, label = datasets["test"][0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)


def test_test_split_is_deterministic_and_follows_the_seed(kaggle_birds):
    files = [birds_splits(kaggle_birds, 32, 0.2, seed)[1]["test_files"] for seed in (0, 0, 1)]
    assert files[0] == files[1]
    assert files[0] != files[2]


def test_train_val_test_layout_is_used_as_is(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for name in BIRD_CLASSES[:2]:
            write_jpegs(tmp_path / split / name, count, (10, 200, 30))
    datasets, info = birds_splits(tmp_path, image_size=40, augment=True)
    assert info["counts"] == {"train": 8, "val": 4, "test": 6}
    assert "test_files" not in info
    assert datasets["train"][0][0].shape == (3, 40, 40)


@pytest.mark.parametrize("where", [None, "missing", "empty"])
def test_missing_dataset_says_what_to_get_and_which_key(tmp_path, where):
    root = {None: None, "missing": tmp_path / "nope", "empty": tmp_path}[where]
    with pytest.raises(UsageError) as err:
        birds_splits(root)
    message = str(err.value)
    assert "data.root" in message and "Birds_25" in message and "Indian Birds" in message
    assert "\n" not in message


def test_class_folders_without_images_are_missing_data(tmp_path):
    (tmp_path / "train" / "Hoopoe").mkdir(parents=True)
    (tmp_path / "valid" / "Hoopoe").mkdir(parents=True)
    with pytest.raises(UsageError, match="data.root"):
        birds_splits(tmp_path)


def test_corrupt_image_is_named_when_loaded_and_when_verified(kaggle_birds):
    bad = kaggle_birds / "valid" / BIRD_CLASSES[1] / "garbage.jpg"
    bad.write_bytes(b"\x00not a jpeg at all" * 10)
    datasets, _ = birds_splits(kaggle_birds, image_size=32, verify=False)
    index = [p for p, _ in datasets["val"].samples].index(str(bad))
    datasets["val"][index - 1]  # a good image still loads
    with pytest.raises(UsageError, match="corrupt image") as err:
        datasets["val"][index]
    assert str(bad) in str(err.value)
    with pytest.raises(UsageError, match="garbage.jpg"):
        verify_images(kaggle_birds)


def test_verify_images_counts_good_files(kaggle_birds):
    assert verify_images(kaggle_birds) == 39


# --- catalogue ---


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UsageError) as err:
        get_dataset_entry("cifar-1000")
    assert "birds" in str(err.value) and "shapes" in str(err.value)


def test_catalogue_entries_are_complete():
    assert {"shapes", "birds"} <= set(DATASETS)
    assert DATASETS["shapes"].kind == "embedded" and DATASETS["birds"].kind == "real"


def test_prepare_shapes_writes_and_repairs_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "DEFAULT_COUNTS", {"train": 12, "val": 12, "test": 12})
    entry = get_dataset_entry("shapes")
    assert entry.location(str(tmp_path)) == tmp_path / "shapes"
    assert not entry.present(str(tmp_path))
    assert "ready" in entry.prepare(str(tmp_path), download=False)
    assert entry.present(str(tmp_path))
    broken = cache_path("val", shapes.DEFAULT_SIZE, 12, shapes.DEFAULT_SEED, tmp_path)
    broken.write_bytes(b"junk")
    entry.prepare(str(tmp_path))
    assert len(load_shapes_split("val", shapes.DEFAULT_SIZE, 12, shapes.DEFAULT_SEED, tmp_path)["labels"]) == 12


def test_prepare_birds_points_to_kaggle(tmp_path, kaggle_birds):
    entry = get_dataset_entry("birds")
    assert "data.root" in entry.prepare(str(tmp_path / "nowhere"))
    assert entry.present(str(kaggle_birds)) and not entry.present(str(tmp_path / "nowhere"))
    assert "found" in entry.prepare(str(kaggle_birds))
    with pytest.raises(UsageError, match="Kaggle"):
        entry.prepare(str(tmp_path), download=True)
