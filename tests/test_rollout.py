"""Attention rollout on hand-computed cases; CLS maps, grids and pixels."""

import numpy as np
import pytest
import torch

from syllabus.explain.attention import attention_maps, cls_attention, rollout, rollout_cls, to_grid, to_pixels
from syllabus.metrics.localization import energy_in_mask
from syllabus.nn.vit import ViT

# Two blocks, two heads, two tokens (rows sum to 1).
LAYER1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])[None]  # (1, 2, 2, 2)
LAYER2 = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])[None]


def test_rollout_two_layers_equals_the_hand_computed_product():
    # head means: [[.5, .5], [.5, .5]] and [[1, 0], [.5, .5]]; with 0.5 A + 0.5 I:
    # Â1 = [[.75, .25], [.25, .75]], Â2 = [[1, 0], [.25, .75]];
    # Â2 Â1 = [[.75, .25], [.25*.75 + .75*.25, .25*.25 + .75*.75]] = [[.75, .25], [.375, .625]].
    expected = torch.tensor([[[0.75, 0.25], [0.375, 0.625]]])
    torch.testing.assert_close(rollout([LAYER1, LAYER2]), expected)
    # without the residual identity: mean2 @ mean1 = [[.5, .5], [.5, .5]]
    torch.testing.assert_close(rollout([LAYER1, LAYER2], residual=False), torch.full((1, 2, 2), 0.5))
    # the order matters: Â1 Â2 = [[.8125, .1875], [.4375, .5625]]
    torch.testing.assert_close(rollout([LAYER2, LAYER1]), torch.tensor([[[0.8125, 0.1875], [0.4375, 0.5625]]]))
    torch.testing.assert_close(rollout_cls([LAYER1, LAYER2]), torch.tensor([[0.25]]))


def test_rollout_renormalises_rows_after_max_fusion():
    # max over heads of LAYER1 = all ones; 0.5 * ones + 0.5 I = [[1, .5], [.5, 1]] -> rows / 1.5
    expected = torch.tensor([[[2 / 3, 1 / 3], [1 / 3, 2 / 3]]])
    torch.testing.assert_close(rollout([LAYER1], head_fusion="max"), expected)
    with pytest.raises(ValueError, match="head_fusion"):
        rollout([LAYER1], head_fusion="median")


def test_rollout_rows_stay_distributions():
    weights = [torch.randn(3, 4, 6, 6).softmax(-1) for _ in range(5)]
    r = rollout(weights)
    torch.testing.assert_close(r.sum(-1), torch.ones(3, 6))
    assert (r > 0).all()


def test_to_grid_scatters_kept_tokens_and_to_pixels_repeats():
    values = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # (B=2, h=1, K=2)
    keep = torch.tensor([[3, 0], [1, 2]])
    grid = to_grid(values, (2, 2), keep)
    assert grid.shape == (2, 1, 2, 2)
    torch.testing.assert_close(grid[0, 0], torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(grid[1, 0], torch.tensor([[0.0, 3.0], [4.0, 0.0]]))
    pixels = to_pixels(grid[:, 0], 3)
    assert pixels.shape == (2, 6, 6) and pixels[0, :3, :3].eq(2).all() and pixels[0, 3:, 3:].eq(1).all()
    with pytest.raises(ValueError, match="grid"):
        to_grid(torch.ones(1, 5), (2, 2))


def test_mass_in_mask_of_pixel_maps_is_the_patch_weighted_share():
    maps = torch.tensor([[[0.75, 0.25], [0.0, 0.0]]])  # (1, 2, 2) patch grid
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :1] = True  # half of patch 0
    mask[0, 2:, 2:] = True  # all of patch 3, which has no attention
    assert energy_in_mask(to_pixels(maps, 2).numpy(), mask)[0] == pytest.approx(0.75 * 0.5)


def test_attention_maps_of_a_vit():
    torch.manual_seed(0)
    model = ViT(3, image_size=16, patch_size=4, dim=16, depth=3, heads=2).eval()
    x = torch.randn(2, 3, 16, 16)
    out = attention_maps(model, x)
    feats = model.forward_features(x, attentions=True)
    assert out["heads"].shape == (2, 2, 4, 4) and out["rollout"].shape == (2, 4, 4)
    torch.testing.assert_close(out["heads"].flatten(2), cls_attention(feats.attentions[-1]))
    torch.testing.assert_close(out["rollout"].flatten(1), rollout(feats.attentions)[:, 0, 1:])
    torch.testing.assert_close(out["logits"], model(x))
