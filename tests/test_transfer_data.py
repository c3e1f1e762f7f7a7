"""The finer shapes task, label budgets, and the CIFAR loaders (FakeData in CIFAR's place)."""

import numpy as np
import pytest
import torch
from torchvision.datasets import FakeData

from syllabus.data import transfer
from syllabus.data.shapes import SHAPE_CLASSES, ShapesDataset, generate_shapes
from syllabus.data.transfer import (
    COLOUR_GROUPS,
    cifar_task,
    colour_group,
    fine_class_names,
    fine_labels,
    per_class_subset,
    source_target_views,
)
from syllabus.errors import UsageError


def test_fine_label_is_shape_times_dominant_channel():
    colors = np.array([[200, 10, 30], [5, 90, 20], [0, 0, 1], [255, 254, 0]], np.uint8)
    assert colour_group(colors).tolist() == [0, 1, 2, 0]
    assert fine_labels(np.array([0, 3, 11, 2]), colors).tolist() == [0, 10, 35, 6]
    names = fine_class_names(SHAPE_CLASSES)
    assert len(names) == 36 and names[10] == f"{SHAPE_CLASSES[3]}/{COLOUR_GROUPS[1]}"


def test_colour_group_is_what_the_pixels_show():
    arrays = generate_shapes(60, 32, seed=3)
    pix = arrays["images"].astype(float)  # (N, S, S, 3)
    masks = arrays["masks"][..., None]  # (N, S, S, 1)
    seen = (pix * masks).sum((1, 2)) / masks.sum((1, 2))  # (N, 3) mean colour on the object
    agree = (seen.argmax(1) == colour_group(arrays["colors"])).mean()
    assert agree > 0.9
    counts = np.bincount(colour_group(arrays["colors"]), minlength=3)
    assert counts.min() >= 10  # all three groups occur


def test_source_and_target_split_one_set_without_sharing_images():
    arrays = generate_shapes(30, 32, seed=1)
    base = ShapesDataset(arrays)
    source, target = source_target_views(base, arrays["colors"], source_share=0.4)
    assert len(source) == 12 and len(target) == 18
    assert set(source.indices).isdisjoint(target.indices)
    assert source.classes == list(SHAPE_CLASSES) and len(target.classes) == 36
    x, y = target[0]
    torch.testing.assert_close(x, base[12][0])
    assert y // 3 == arrays["labels"][12] and y % 3 == arrays["colors"][12].argmax()


def test_per_class_subset():
    targets = np.array([0] * 10 + [1] * 3 + [2] * 7)
    idx = per_class_subset(targets, 5, seed=0)
    assert np.bincount(targets[idx]).tolist() == [5, 3, 5]
    assert (np.diff(idx) > 0).all()
    assert idx.tolist() == per_class_subset(targets, 5, seed=0).tolist()
    assert idx.tolist() != per_class_subset(targets, 5, seed=1).tolist()
    assert per_class_subset(targets, 0, seed=0).tolist() == list(range(20))


def _fake(num_classes):
    def make(root, train, transform, download):
        return FakeData(40 if train else 12, (3, 32, 32), num_classes, transform, random_offset=0 if train else 99)

    return make


def test_cifar_splits_with_a_stand_in(monkeypatch, tmp_path):
    monkeypatch.setitem(transfer.CIFAR_SETS, "cifar100", (_fake(100), "CIFAR-100", 100))
    task = cifar_task("cifar100", str(tmp_path), image_size=48, val_size=10, seed=0)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 30, "val": 10, "test": 12}
    assert set(task.splits["train"].indices).isdisjoint(task.splits["val"].indices)
    assert task.eval_splits["train"].indices == task.splits["train"].indices
    assert len(task.classes) == 100
    x, y = task.splits["val"][0]
    assert x.shape == (3, 48, 48) and y == FakeData(40, (3, 32, 32), 100)[task.splits["val"].indices[0]][1]
    x_aug, _ = task.splits["train"][0]
    x_eval, _ = task.eval_splits["train"][0]
    assert x_aug.shape == x_eval.shape == (3, 48, 48) and not torch.equal(x_aug, x_eval)  # random resized crop


def test_missing_cifar_names_the_setting(tmp_path):
    with pytest.raises(UsageError, match="CIFAR-10 not found.*data.download=true"):
        cifar_task("cifar10", str(tmp_path), image_size=32, val_size=10, seed=0)
