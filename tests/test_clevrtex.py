"""The CLEVRTex loader on a tiny tree of the official layout, built here around three real renders."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from syllabus.data.clevrtex import ClevrTexDataset, clevrtex_splits, crop_box, index_clevrtex, load_image, split_items
from syllabus.data.scenes import SceneDataConfig, check_scene_data, scene_splits
from syllabus.errors import UsageError

RENDERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clevrtex-images"
W, H = 320, 240


def _mask(index: int) -> Image.Image:
    """A palette mask whose object k is the band of columns [64 + 32 (k - 1), 64 + 32 k) of row band index % 3."""
    ids = np.zeros((H, W), np.uint8)
    for k in range(1, 5):
        ids[24 + 40 * (index % 3): 64 + 40 * (index % 3), 64 + 32 * (k - 1): 64 + 32 * k] = k
    image = Image.fromarray(ids, mode="P")
    image.putpalette([0, 0, 0] + [60 * k for k in range(1, 5) for _ in range(3)])
    return image


def build_tree(root: Path, n: int = 20, variant: str = "full") -> Path:
    renders = sorted(RENDERS.glob("*.png"))
    for i in range(n):
        folder = root / f"clevrtex_{variant}" / str(i // 1000)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"CLEVRTEX_{variant}_{i:06d}"
        if renders:
            shutil.copy(renders[i % len(renders)], folder / f"{stem}.png")
        else:
            Image.new("RGBA", (W, H), (i, 2 * i, 3 * i, 255)).save(folder / f"{stem}.png")
        _mask(i).save(folder / f"{stem}_flat.png")
        (folder / f"{stem}.json").write_text("{}")
    return root


def test_index_fraction_splits_and_limit(tmp_path):
    items = index_clevrtex(build_tree(tmp_path))
    assert [i for i, _, _ in items] == list(range(20))
    assert [i for i, _, _ in split_items(items, "test")] == [0, 1]
    assert [i for i, _, _ in split_items(items, "val")] == [2, 3]
    assert [i for i, _, _ in split_items(items, "train")] == list(range(4, 20))
    assert [i for i, _, _ in split_items(items, "train", limit=3)] == [4, 5, 6]
    assert index_clevrtex(tmp_path / "clevrtex_full") == items  # the variant folder itself is accepted


def test_crop_and_resize_of_masks_keep_object_ids(tmp_path):
    items = index_clevrtex(build_tree(tmp_path))
    assert crop_box(W, H) == (64, 24, 256, 216)  # 192 = 0.8 x 240, centred
    image, mask = ClevrTexDataset(items, size=96)[0]
    assert image.shape == (3, 96, 96) and mask.shape == (96, 96) and mask.dtype == torch.int64
    # index 0: objects fill rows [24, 64) = crop rows [0, 40), columns [64, 192) = crop columns [0, 128)
    expected = torch.zeros(96, 96, dtype=torch.int64)
    for k in range(1, 5):
        expected[:20, 16 * (k - 1): 16 * k] = k
    assert torch.equal(mask, expected)  # nearest: ids stay ids, no blends such as 1.5


@pytest.mark.skipif(not RENDERS.is_dir(), reason="the shared real renders are not here")
def test_real_renders_load_as_rgb_centre_crops():
    path = sorted(RENDERS.glob("*.png"))[0]
    image = load_image(path, 128)  # (3, 128, 128)
    raw = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)
    def resized(x):
        return torch.nn.functional.interpolate(x[None], size=(128, 128), mode="bilinear", antialias=True)[0]
    crop = resized(raw[:, 24:216, 64:256])  # the centre 192 x 192, by torch instead of PIL
    assert image.shape == (3, 128, 128) and float(image.std()) > 0.05
    assert float((image - crop).abs().mean()) < 0.01
    assert float((image - resized(raw)).abs().mean()) > 0.03  # the whole frame would differ


def test_missing_set_and_missing_mask_are_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="data.root") as err:
        index_clevrtex(tmp_path)
    assert "\n" not in str(err.value)
    build_tree(tmp_path, n=5)
    (tmp_path / "clevrtex_full" / "0" / "CLEVRTEX_full_000003_flat.png").unlink()
    with pytest.raises(UsageError, match="CLEVRTEX_full_000003.png has no mask") as err:
        clevrtex_splits(tmp_path)
    assert "\n" not in str(err.value)


def test_scene_config_dispatches_to_clevrtex(tmp_path):
    cfg = SceneDataConfig(name="clevrtex", root=str(build_tree(tmp_path)), image_size=64, limit=5)
    check_scene_data(cfg)
    splits, info = scene_splits(cfg)
    assert info["sizes"] == {"train": 5, "val": 2, "test": 2} and info["dataset"] == "clevrtex_full"
    assert splits["val"][0][0].shape == (3, 64, 64)
    with pytest.raises(UsageError, match="clevrtex_camo"):
        check_scene_data(SceneDataConfig(name="clevrtex", root=str(tmp_path), variant="camo"))
