"""The birds ImageFolder tree is checked before training: corrupt files, small splits, empty
classes, symlink loops and files shared between splits each give one clear UsageError."""

from __future__ import annotations

import os

import pytest
from conftest import BIRD_CLASSES, write_jpegs

from syllabus.data import folder_check
from syllabus.data.birds import birds_splits, verify_images
from syllabus.errors import UsageError


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_every_corrupt_file_is_named_in_one_message_before_any_dataset_is_built(kaggle_birds):
    bad = [kaggle_birds / "train" / BIRD_CLASSES[0] / "garbage.jpg", kaggle_birds / "valid" / BIRD_CLASSES[2] / "3.jpg",
           kaggle_birds / "train" / BIRD_CLASSES[1] / "0.jpg"]
    bad[0].write_bytes(b"\x00not a jpeg at all" * 10)
    bad[1].write_bytes(b"")
    bad[2].write_bytes(bad[2].read_bytes()[:40])  # a header cut short
    with pytest.raises(UsageError) as err:
        birds_splits(kaggle_birds, image_size=32)
    message = _one_line(err)
    assert message.startswith("3 corrupt image(s): ")
    for path in bad:
        assert str(path) in message


def test_checks_are_cached_by_size_and_mtime(kaggle_birds, monkeypatch):
    opened = []
    real_verify = folder_check._verify
    monkeypatch.setattr(folder_check, "_verify", lambda path: opened.append(path) or real_verify(path))
    birds_splits(kaggle_birds, image_size=32)
    assert len(opened) == 39
    opened.clear()
    birds_splits(kaggle_birds, image_size=32)
    assert opened == []  # nothing changed, nothing opened
    changed = kaggle_birds / "valid" / BIRD_CLASSES[1] / "2.jpg"
    changed.write_bytes(b"garbage")
    with pytest.raises(UsageError, match="2.jpg"):
        birds_splits(kaggle_birds, image_size=32)
    assert opened == [str(changed)]


def test_verify_images_names_all_bad_files_not_the_first_five(kaggle_birds):
    for i in range(7):
        (kaggle_birds / "train" / BIRD_CLASSES[0] / f"{i}.jpg").write_bytes(b"junk")
    with pytest.raises(UsageError) as err:
        verify_images(kaggle_birds)
    message = _one_line(err)
    assert message.startswith("7 corrupt image(s)") and all(f"{i}.jpg" in message for i in range(7))


def test_a_class_with_one_image_cannot_be_stratified_and_says_so(tmp_path):
    for name, count in zip(BIRD_CLASSES, (6, 1, 6), strict=True):
        write_jpegs(tmp_path / "train" / name, count, (90, 90, 90))
        write_jpegs(tmp_path / "valid" / name, 2, (90, 90, 90))
    with pytest.raises(UsageError) as err:
        birds_splits(tmp_path, image_size=32, test_fraction=0.2)
    message = _one_line(err)
    assert "data.test_fraction=0.2 (3 of 13 train images)" in message
    assert f"class '{BIRD_CLASSES[1]}' has 1 image(s) in train and each class needs at least 2" in message


@pytest.mark.parametrize("fraction, bounds", [(0.05, "between 0.1 and 0.9"), (0.95, "between 0.1 and 0.9")])
def test_a_fraction_too_small_or_large_for_one_image_per_class_says_which_fractions_work(kaggle_birds, fraction,
                                                                                          bounds):
    with pytest.raises(UsageError) as err:
        birds_splits(kaggle_birds, image_size=32, test_fraction=fraction)
    message = _one_line(err)
    assert f"data.test_fraction={fraction:g}" in message and "3 classes" in message and bounds in message


def test_an_empty_class_folder_is_named(kaggle_birds):
    (kaggle_birds / "train" / "Hoopoe").mkdir()
    (kaggle_birds / "valid" / "Hoopoe").mkdir()
    with pytest.raises(UsageError) as err:
        birds_splits(kaggle_birds, image_size=32)
    message = _one_line(err)
    assert f"class folder(s) without images in {kaggle_birds / 'train'}: Hoopoe" in message and "data.root" in message


def test_symlink_loops_do_not_multiply_images(kaggle_birds):
    klass = kaggle_birds / "train" / BIRD_CLASSES[0]
    os.symlink("..", klass / "up")  # the train folder, which holds this class folder
    os.symlink(".", klass / "self")
    os.symlink(str(klass / "0.jpg"), klass / "again.jpg")  # one file reached twice
    datasets, info = birds_splits(kaggle_birds, image_size=32, test_fraction=0.2)
    assert info["counts"] == {"train": 24, "val": 9, "test": 6}
    assert verify_images(kaggle_birds) == 39


def test_a_file_in_two_splits_is_refused(kaggle_birds):
    shared = kaggle_birds / "train" / BIRD_CLASSES[2] / "4.jpg"
    link = kaggle_birds / "valid" / BIRD_CLASSES[2] / "extra.jpg"
    os.symlink(shared, link)
    with pytest.raises(UsageError) as err:
        birds_splits(kaggle_birds, image_size=32)
    message = _one_line(err)
    assert f"{shared} = {link}" in message and message.startswith("1 image file(s) appear in two places")
