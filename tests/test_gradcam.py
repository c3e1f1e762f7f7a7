"""Grad-CAM against pytorch-grad-cam and a closed form; hooks, modes, errors; localisation scores."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from syllabus.errors import UsageError
from syllabus.explain.gradcam import GradCAM, cam_from_gradients, last_stage_convs, overlay, resolve_targets
from syllabus.metrics.localization import (
    baseline_scores,
    centre_gaussian,
    difference_interval,
    energy_in_mask,
    mean_and_halfwidth,
    pointing_game,
    uniform_map,
)
from syllabus.nn.norms import get_norm_layer
from syllabus.nn.resnet import ResNet


def small_resnet(seed: int = 0, n: int = 1) -> ResNet:
    torch.manual_seed(seed)
    model = ResNet(5, n=n, widths=(4, 8, 16), norm_layer=get_norm_layer("bn"))
    with torch.no_grad():  # running statistics away from (0, 1), so eval mode matters
        for m in model.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def reference(model, layers, x, targets, size):
    """pytorch-grad-cam's aggregated map, resized by it (OpenCV) to `size` (w, h)."""
    modules = dict(model.named_modules())
    cam = ReferenceGradCAM(model, [modules[n] for n in layers])
    cam.get_target_width_height = lambda _: size
    with cam:
        return cam(x, None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets])


@pytest.mark.parametrize("layers", [["stages.2.0.conv2"], ["stages.2.0.conv1", "stages.2.0.conv2"],
                                    ["stages.2.0"]])
@pytest.mark.parametrize("targets", [torch.tensor([0, 1, 2, 3, 4, 0, 2, 4]), None])
def test_matches_pytorch_grad_cam(layers, targets):
    model = small_resnet()
    x = torch.randn(8, 3, 32, 32)
    with GradCAM(model, layers) as cam:
        ours = cam(x, targets)
    assert ours.layer_maps.shape == (8, 8, 8) and ours.maps.shape == (8, 32, 32)
    assert (ours.layer_maps.amax((1, 2)) > 0.999).sum() >= 6  # not a test of empty maps
    at_layer = reference(model, layers, x, targets, (8, 8))  # identity resize: compared before resizing
    np.testing.assert_allclose(ours.layer_maps.numpy(), at_layer, atol=1e-4)
    at_input = reference(model, layers, x, targets, (32, 32))  # both bilinear, half-pixel centres
    np.testing.assert_allclose(ours.maps.numpy(), at_input, atol=1e-4)
    expected_targets = ours.logits.argmax(1) if targets is None else targets
    assert torch.equal(ours.targets, expected_targets)


@pytest.mark.parametrize("layers", [["stages.1.0.conv2", "stages.2.0.conv2"],
                                    ["stages.1.0.conv1", "stages.2.0.conv1", "stages.1.0.conv2", "stages.2.0.conv2"]])
def test_matches_pytorch_grad_cam_at_mixed_resolutions(layers):
    """Layers at 16x16 and 8x8 of a 32x32 input: each map is resized to the input before averaging,
    as the library does (resizing to 16x16 first, then to the input, differs by up to about 0.2)."""
    model = small_resnet(4)
    x, targets = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 1])
    with GradCAM(model, layers) as cam:
        ours = cam(x, targets)
    assert ours.maps.shape == (6, 32, 32) and ours.layer_maps.shape == (6, 16, 16)
    np.testing.assert_allclose(ours.maps.numpy(), reference(model, layers, x, targets, (32, 32)), atol=1e-4)


@pytest.mark.parametrize("residual", [True, False])
def test_matches_pytorch_grad_cam_without_normalisation(residual):
    """With model.norm=none a ReLU follows each convolution directly: it must not overwrite the
    convolution's saved output (an in-place ReLU made the conv1 maps those of ReLU(A))."""
    torch.manual_seed(3)
    model = ResNet(5, n=1, widths=(4, 8, 16), norm_layer=get_norm_layer("none"), residual=residual)
    layers = ["stages.2.0.conv1", "stages.2.0.conv2"]
    x, targets = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    for layer in layers:
        with GradCAM(model, [layer]) as cam:
            ours = cam(x, targets)
        assert (ours.layer_maps.amax((1, 2)) > 0.999).sum() >= 6  # not a test of empty maps
        np.testing.assert_allclose(ours.layer_maps.numpy(), reference(model, [layer], x, targets, (8, 8)),
                                   atol=1e-4)


def test_equals_cam_for_a_global_average_pool_and_linear_head():
    """With logits = W mean_ij(A), dy_c/dA_k = W_ck / hw, so the map is ReLU(sum_k W_ck A_k) / hw."""
    torch.manual_seed(1)
    features = nn.Conv2d(3, 6, 3, padding=1)
    head = nn.Linear(6, 4)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    x = torch.randn(3, 3, 5, 7)
    acts = features(x).detach()  # (3, 6, 5, 7)
    expected = torch.einsum("bkhw,bk->bhw", acts, head.weight[[2, 0, 3]].detach()).clamp_min(0) / 35
    grads = head.weight[[2, 0, 3]].detach()[:, :, None, None].expand_as(acts) / 35
    torch.testing.assert_close(cam_from_gradients(acts, grads), expected)
    with GradCAM(model, ["0"]) as cam:
        out = cam(x, torch.tensor([2, 0, 3]))
    peak = expected.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close(out.layer_maps, expected / (peak + 1e-7), atol=1e-5, rtol=0)


def test_batched_equals_one_image_at_a_time():
    model = small_resnet(2, n=2)
    x, t = torch.randn(5, 3, 32, 32), torch.tensor([4, 3, 2, 1, 0])
    with GradCAM(model, last_stage_convs(model)) as cam:
        batched = cam(x, t).maps
        single = torch.cat([cam(x[i:i + 1], t[i:i + 1]).maps for i in range(5)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_hooks_removed_modes_restored_no_grad_caller_and_no_parameter_grads():
    model = small_resnet()
    model.train()
    model.stages[0].eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    with torch.no_grad(), GradCAM(model, ["stages.2.0.conv1", "stages.2.0.conv2"]) as cam:
        assert _hook_count(model) == 2 and not model.training and not model.stages[2].training
        out = cam(torch.randn(2, 3, 32, 32), 1)
        assert torch.equal(out.targets, torch.tensor([1, 1]))
    assert _hook_count(model) == 0
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_when_the_block_raises():
    model = small_resnet()
    with pytest.raises(ZeroDivisionError), GradCAM(model, ["stages.2.0.conv1"]):
        assert _hook_count(model) == 1
        _ = 1 / 0
    assert _hook_count(model) == 0 and model.training


def test_call_outside_the_context_is_an_error():
    model = small_resnet()
    cam = GradCAM(model, ["stages.2.0.conv1"])
    with pytest.raises(RuntimeError, match="inside `with GradCAM"):
        cam(torch.randn(1, 3, 32, 32))


def test_bad_layer_name_lists_the_model_layers():
    model = small_resnet()
    with pytest.raises(UsageError) as err:
        GradCAM(model, ["stages.2.0.conv3"])
    message = str(err.value)
    assert message.startswith("unknown layer 'stages.2.0.conv3'; did you mean stages.2.0.conv")
    assert "the model's layers: stem, stem.0, stem.1" in message and "stages.2.0.conv1" in message
    assert "\n" not in message


def test_layers_that_are_not_a_single_feature_map_are_rejected():
    model = small_resnet()
    with pytest.raises(UsageError, match=r"'stages.2.0.act' ran 2 times"), GradCAM(model, ["stages.2.0.act"]) as cam:
        cam(torch.randn(1, 3, 32, 32))
    with pytest.raises(UsageError, match=r"'fc' outputs shape \(1, 5\)"), GradCAM(model, ["fc"]) as cam:
        cam(torch.randn(1, 3, 32, 32))
    assert _hook_count(model) == 0


def test_last_stage_convs_are_the_2n_convolutions_at_a_quarter_resolution():
    assert last_stage_convs(small_resnet(n=2)) == ["stages.2.0.conv1", "stages.2.0.conv2",
                                                   "stages.2.1.conv1", "stages.2.1.conv2"]


def test_resolve_targets():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert resolve_targets(None, logits).tolist() == [1, 0]
    assert resolve_targets(2, logits).tolist() == [2, 2]
    assert resolve_targets(torch.tensor([0, 2]), logits).tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        resolve_targets(3, logits)
    with pytest.raises(ValueError, match="shape"):
        resolve_targets(torch.tensor([0, 1, 2]), logits)


def test_overlay_blends_image_and_colour_map():
    image = np.full((2, 4, 4, 3), 0.25)
    maps = np.linspace(0, 1, 32).reshape(2, 4, 4)
    np.testing.assert_allclose(overlay(image, maps, alpha=0.0), image)
    full = overlay(image, maps, alpha=1.0)
    assert full.shape == (2, 4, 4, 3) and full.min() >= 0 and full.max() <= 1
    np.testing.assert_allclose(full[0, 0, 0], [0, 0, 0.5], atol=1e-6)  # jet at 0 is dark blue
    np.testing.assert_allclose(full[1, 3, 3], [0.5, 0, 0], atol=1e-6)  # jet at 1 is dark red


# --- localisation scores -------------------------------------------------------------------------------

MASK = np.zeros((1, 4, 4), bool)
MASK[0, :2, :2] = True  # the top-left quarter


def test_energy_in_mask_exact():
    maps = MASK * 3.0 + 1.0  # 4 pixels of 4 inside, 12 pixels of 1 outside
    np.testing.assert_allclose(energy_in_mask(maps, MASK), [16 / 28])
    np.testing.assert_allclose(energy_in_mask(np.zeros((1, 4, 4)), MASK), [0.25])  # empty map = flat map


def test_pointing_game_exact_with_ties():
    inside, outside, tie = np.zeros((3, 4, 4))
    inside[1, 0], outside[3, 3], tie[0, 0], tie[3, 3] = 1.0, 1.0, 1.0, 1.0
    masks = np.repeat(MASK, 3, 0)
    np.testing.assert_allclose(pointing_game(np.stack([inside, outside, tie]), masks), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(pointing_game(np.zeros((1, 4, 4)), MASK), [0.25])


def test_baselines():
    np.testing.assert_allclose(energy_in_mask(uniform_map(4, 4), MASK), [0.25])
    g = centre_gaussian(4, 6, sigma=0.25)
    assert g.shape == (4, 6) and np.allclose(g, g[::-1]) and np.allclose(g, g[:, ::-1])
    np.testing.assert_allclose(g[1, 2], np.exp(-0.5 * ((0.5 / 1) ** 2 + (0.5 / 1.5) ** 2)))
    centre = np.zeros((1, 4, 4), bool)
    centre[0, 1:3, 1:3] = True
    scores = baseline_scores(np.concatenate([MASK, centre]))
    np.testing.assert_allclose(scores["uniform"]["pointing"], [0.25, 0.25])
    np.testing.assert_allclose(scores["gaussian"]["pointing"], [0.25, 1.0])  # four tied central pixels


def test_intervals():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 2.0])
    mean, half = mean_and_halfwidth(a)
    assert mean == 2.5 and half == pytest.approx(1.96 * np.std(a, ddof=1) / 2)
    diff, low, high = difference_interval(a, b)
    half = 1.96 * np.sqrt(np.var(a, ddof=1) / 4 + np.var(b, ddof=1) / 3)
    assert diff == 1.5 and low == pytest.approx(1.5 - half) and high == pytest.approx(1.5 + half)
    assert np.isnan(difference_interval(a, b[:1])[0])
