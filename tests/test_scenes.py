"""The embedded `scenes` set: deterministic, cached by version, masks that match the pixels."""

import numpy as np
import pytest
import torch

from syllabus.data import scenes
from syllabus.data.scenes import SceneDataConfig, ScenesDataset, generate_scenes, load_scenes_split, scene_splits
from syllabus.errors import UsageError


@pytest.fixture(scope="module")
def sample():
    return generate_scenes(12, 48, seed=5)


def test_deterministic_and_a_prefix_of_a_larger_set(sample):
    again = generate_scenes(8, 48, seed=5)
    for key in ("images", "masks", "counts"):
        assert np.array_equal(sample[key][:8], again[key])
    other = generate_scenes(8, 48, seed=6)
    assert not np.array_equal(sample["images"][:8], other["images"])


def test_masks_hold_every_object_and_the_background(sample):
    for mask, count in zip(sample["masks"], sample["counts"], strict=True):
        assert 2 <= count <= 6
        assert set(np.unique(mask)) == set(range(count + 1))  # each object keeps visible pixels
        areas = np.bincount(mask.ravel(), minlength=count + 1)
        assert areas[1:].min() >= 8


def test_objects_differ_from_the_background_they_cover(sample):
    """Pixels of an object are closer to that object's mean colour than the background's mean is."""
    for image, mask in zip(sample["images"].astype(float), sample["masks"], strict=True):
        bg = image[mask == 0].mean(0)
        for k in range(1, mask.max() + 1):
            obj = image[mask == k]
            assert np.linalg.norm(obj.mean(0) - bg) > 10 or obj.std(0).mean() > 20


def test_object_counts_follow_the_settings():
    arrays = generate_scenes(10, 32, seed=1, min_objects=3, max_objects=3)
    assert (arrays["counts"] == 3).all()
    with pytest.raises(UsageError, match="max_objects"):
        generate_scenes(1, 32, seed=1, min_objects=4, max_objects=2)
    with pytest.raises(UsageError, match="32 to 256"):
        generate_scenes(1, 16, seed=1)


def test_cache_is_versioned_and_reused(tmp_path, monkeypatch):
    first = load_scenes_split("val", 32, 4, 0, tmp_path, 2, 4)
    path = scenes.cache_path("val", 32, 4, 0, (2, 4), tmp_path)
    assert path.exists() and f"v{scenes.GENERATOR_VERSION}" in path.parts
    monkeypatch.setattr(scenes, "generate_scenes", lambda *a, **k: pytest.fail("regenerated instead of read"))
    assert np.array_equal(load_scenes_split("val", 32, 4, 0, tmp_path, 2, 4)["masks"], first["masks"])
    path.write_bytes(b"not an npz")
    with pytest.raises(UsageError, match="corrupt"):
        load_scenes_split("val", 32, 4, 0, tmp_path, 2, 4)


def test_splits_differ_and_items_are_float_images_with_long_masks(tmp_path):
    cfg = SceneDataConfig(dir=str(tmp_path), image_size=32, n_train=4, n_val=3, n_test=3)
    splits, info = scene_splits(cfg)
    assert info["sizes"] == {"train": 4, "val": 3, "test": 3}
    image, mask = splits["train"][0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert mask.dtype == torch.int64 and int(mask.max()) >= 2
    assert not torch.equal(splits["train"][0][0], splits["val"][0][0])
    assert isinstance(splits["test"], ScenesDataset)


def test_catalogue_hooks_prepare_the_quick_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(scenes, "DEFAULT_COUNTS", {"train": 2, "val": 1, "test": 1})
    assert not scenes.scenes_present(str(tmp_path))
    message = scenes.prepare_scenes(str(tmp_path))
    assert scenes.scenes_present(str(tmp_path)) and "2/1/1 scenes" in message
    assert scenes.scenes_location(str(tmp_path)) == tmp_path / "scenes"
