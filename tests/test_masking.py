"""Patch masks, replacing and dropping patches; masking everything gives chance."""

import pytest
import torch

from syllabus.explain.masking import (
    PATTERNS,
    kept_indices,
    masked_logits,
    pattern_mask,
    random_mask,
    ranked_mask,
    replace_patches,
)
from syllabus.nn.vit import ViT


def test_patterns_on_an_8x8_grid():
    masks = {name: pattern_mask(name, (8, 8)) for name in PATTERNS}
    counts = {name: int(m.sum()) for name, m in masks.items()}
    assert counts == {"centre": 36, "border": 28, "left": 32, "right": 32, "top": 32, "bottom": 32,
                      "checkerboard": 32}
    assert masks["centre"][1:7, 1:7].all() and not masks["centre"][0].any()
    assert torch.equal(masks["border"], ~masks["centre"]) and torch.equal(masks["left"], ~masks["right"])
    assert masks["top"][:4].all() and not masks["top"][4:].any()
    assert masks["checkerboard"][0, 0] and not masks["checkerboard"][0, 1] and masks["checkerboard"][1, 1]
    with pytest.raises(ValueError, match="unknown pattern"):
        pattern_mask("diagonal", (8, 8))


def test_random_and_ranked_masks():
    a = random_mask(4, 16, 0.25, torch.Generator().manual_seed(0))
    b = random_mask(4, 16, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.sum(1).eq(4).all() and len({tuple(r.tolist()) for r in a}) > 1
    assert random_mask(2, 16, 1.0, torch.Generator()).all() and not random_mask(2, 16, 0.0, torch.Generator()).any()
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    assert ranked_mask(scores, 0.5).tolist() == [[False, True, True, False], [True, True, False, False]]
    assert ranked_mask(scores, 0.5, most=False).tolist() == [[True, False, False, True], [False, False, True, True]]
    with pytest.raises(ValueError, match="ratio"):
        random_mask(1, 4, 1.5, torch.Generator())


def test_replace_patches_against_a_loop():
    x = torch.randn(2, 3, 8, 8)
    masked = torch.tensor([[True, False, False, True], [False, True, False, False]])  # 2x2 grid of 4x4 patches
    value = torch.tensor([-2.0, 0.5, 1.0])
    expected = x.clone()
    for b in range(2):
        for p in range(4):
            if masked[b, p]:
                r, c = divmod(p, 2)
                expected[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = value[:, None, None]
    torch.testing.assert_close(replace_patches(x, masked, 4, value), expected)


def test_kept_indices():
    masked = torch.tensor([[True, False, False, True], [False, True, False, False]])
    with pytest.raises(ValueError, match="same number"):
        kept_indices(masked)
    masked[1, 0] = True
    assert kept_indices(masked).tolist() == [[1, 2], [2, 3]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ViT(12, image_size=16, patch_size=4, dim=16, depth=2, heads=2).eval()


def test_masking_nothing_changes_nothing(model):
    x = torch.randn(4, 3, 16, 16)
    none = torch.zeros(4, 16, dtype=torch.bool)
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(masked_logits(model, x, none, None), full, atol=0, rtol=0)
        torch.testing.assert_close(masked_logits(model, x, none, torch.zeros(3)), full, atol=0, rtol=0)


@pytest.mark.parametrize("fill", [None, torch.zeros(3), torch.tensor([-2.0, 0.3, 1.0])])
def test_masking_every_patch_gives_chance(model, fill):
    labels = torch.arange(12).repeat(2)  # balanced: chance is 1/12
    x = torch.randn(24, 3, 16, 16) * 3
    with torch.no_grad():
        intact = model(x).argmax(1)
        pred = masked_logits(model, x, torch.ones(24, 16, dtype=torch.bool), fill).argmax(1)
    assert len(intact.unique()) > 1  # the images themselves do get different predictions
    assert len(pred.unique()) == 1
    assert (pred == labels).float().mean().item() == pytest.approx(1 / 12)


def test_ratio_zero_points_take_the_clean_accuracy_of_the_inspecting_pass(model):
    """The curves' ratio-0 points are the accuracy of `inspect`'s unmasked pass (computed once by
    the caller), which equals an unmasked `masked_accuracy` pass; only masked points run the model."""
    from syllabus.experiments.vit_analysis_study import (
        Images,
        accuracy_of,
        clean_accuracy,
        inspect,
        random_curves,
        ranked_curves,
    )

    torch.manual_seed(1)
    images = Images(torch.randn(20, 3, 16, 16) * 3, torch.arange(12).repeat(2)[:20])
    fills = {"zero": torch.zeros(3), "drop": None}
    seen = inspect(model, images.x, 8, torch.device("cpu"))
    assert accuracy_of(seen["logits"], images.y) == clean_accuracy(model, images, 8, torch.device("cpu"))
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        curves = random_curves(model, images, [0.0, 0.5], [0, 1], fills, 8, torch.device("cpu"), clean=0.125)
        ranked = ranked_curves(model, images, torch.rand(20, 16).numpy(), [0.0, 0.5], fills, 8, torch.device("cpu"),
                               clean=0.125)
    finally:
        hook.remove()
    assert all(row[0] == 0.125 for rows in curves.values() for row in rows)
    assert all(r[k][0] == 0.125 for r in ranked.values() for k in ("most", "least"))
    batches = 3  # 20 images in batches of 8
    assert len(calls) == batches * (2 * 2 + 2 * 2)  # every masked point, no clean pass
