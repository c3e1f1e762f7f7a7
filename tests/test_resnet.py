import pytest
import torch

from syllabus.nn.norms import NORM_LAYERS, get_norm_layer
from syllabus.nn.resnet import ResNet, count_weighted_layers


@pytest.mark.parametrize("n", [1, 2, 3])
def test_depth_is_6n_plus_2(n):
    assert count_weighted_layers(ResNet(10, n=n)) == 6 * n + 2


def test_feature_maps_at_full_half_quarter_resolution():
    model = ResNet(5, n=1)
    x = torch.randn(2, 3, 64, 64)
    sizes = []
    h = model.stem(x)
    for stage in model.stages:
        h = stage(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(16, 64, 64), (32, 32, 32), (64, 16, 16)]
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, 64, 16, 16)


@pytest.mark.parametrize("norm", sorted(NORM_LAYERS))
def test_every_norm_trains_every_parameter(norm):
    torch.manual_seed(0)
    model = ResNet(4, n=1, norm_layer=get_norm_layer(norm, num_groups=4))
    out = model(torch.randn(4, 3, 32, 32))
    out.logsumexp(1).mean().backward()
    assert torch.isfinite(out).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_no_residual_drops_shortcuts():
    model = ResNet(3, n=1, residual=False)
    assert not any("shortcut.0" in name for name, _ in model.named_modules())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_our_bn_trains_like_torch_batchnorm():
    """The sanity reference: same init, same batches -> the same losses and weights."""
    torch.manual_seed(0)
    ours = ResNet(5, n=1, norm_layer=get_norm_layer("bn"))
    ref = ResNet(5, n=1, norm_layer=get_norm_layer("torch-bn"))
    ref.load_state_dict(ours.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ours, ref)]
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 5, (8,), generator=g)
        losses = []
        for model, opt in zip((ours, ref), opts):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) < 1e-4
    ours.eval(), ref.eval()
    x = torch.randn(4, 3, 32, 32, generator=g)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("residual", [True, False])
def test_no_layer_output_is_modified_in_place(residual):
    """Hooks (Grad-CAM's) see each layer's output as it was returned, even without normalisation."""
    torch.manual_seed(0)
    model = ResNet(3, n=1, norm_layer=get_norm_layer("none"), residual=residual)
    seen = []

    def keep(module, inputs, output):
        seen.append((module, output, output.clone()))

    for m in model.modules():
        if not list(m.children()):  # every leaf layer
            m.register_forward_hook(keep)
    model(torch.randn(2, 3, 16, 16))
    changed = [type(m).__name__ for m, out, copy in seen if not torch.equal(out, copy)]
    assert len(seen) > 10 and changed == []
