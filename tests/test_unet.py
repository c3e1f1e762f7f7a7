"""The slot-conditioned UNet: shapes, the timestep features, attention against torch's, slot masks."""

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from syllabus.nn.unet import Attention, ResBlock, UNet, timestep_embedding


def _unet(**kw) -> UNet:
    torch.manual_seed(0)
    net = UNet(in_channels=3, channels=(16, 32), context_dim=24, heads=2, **kw)
    for m in net.modules():  # undo the zero init of the output layers, so every path shows
        if isinstance(m, nn.Conv2d) and not m.weight.abs().sum():
            nn.init.normal_(m.weight, std=0.05)
    return net.eval()


@pytest.mark.parametrize("side", (16, 32))
def test_output_shape_follows_the_latent(side):
    net = _unet(blocks=2)
    x = torch.randn(2, 3, side, side)
    out = net(x, torch.tensor([0, 999]), torch.randn(2, 5, 24))
    assert out.shape == (2, 3, side, side) and torch.isfinite(out).all()


def test_three_levels_and_no_attention_at_the_top():
    torch.manual_seed(0)
    net = UNet(channels=(8, 16, 16), context_dim=4, heads=2, attention=(False, True, True))
    assert net(torch.randn(1, 3, 16, 16), torch.tensor([3]), torch.randn(1, 2, 4)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="must divide by 4"):
        net(torch.randn(1, 3, 18, 18), torch.tensor([3]), torch.randn(1, 2, 4))


def test_timestep_embedding_matches_diffusers():
    t = torch.tensor([0, 1, 17, 500, 999])
    ref = get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 32), ref)


def test_attention_matches_torch_multihead_attention_with_a_padding_mask():
    torch.manual_seed(1)
    ours = Attention(dim=16, context_dim=12, heads=4)
    ref = nn.MultiheadAttention(16, 4, kdim=12, vdim=12, batch_first=True)
    with torch.no_grad():
        ref.q_proj_weight.copy_(ours.q.weight)
        ref.k_proj_weight.copy_(ours.kv.weight[:16])
        ref.v_proj_weight.copy_(ours.kv.weight[16:])
        ref.in_proj_bias.zero_()
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    x, ctx = torch.randn(3, 10, 16), torch.randn(3, 6, 12)
    mask = torch.rand(3, 6) > 0.4
    mask[:, 0] = True
    expect, _ = ref(x, ctx, ctx, key_padding_mask=~mask)
    torch.testing.assert_close(ours(x, ctx, mask), expect, rtol=1e-5, atol=1e-5)


def test_masked_slots_do_not_reach_the_output_and_kept_ones_do():
    net = _unet()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 600])
    slots = torch.randn(2, 5, 24)
    mask = torch.tensor([[True, False, True, False, False], [False, True, True, True, False]])
    out = net(x, t, slots, mask)
    hidden = slots.clone()
    hidden[~mask] = torch.randn(int((~mask).sum()), 24) * 3  # change only the masked-out slots
    torch.testing.assert_close(net(x, t, hidden, mask), out)
    kept = slots.clone()
    kept[0, 2] += 1.0  # change one kept slot of image 0
    moved = (net(x, t, kept, mask) - out).abs().flatten(1).amax(1)
    assert moved[0] > 1e-3 and moved[1] == 0
    # masking equals dropping: image 0 with slots {0, 2} only
    torch.testing.assert_close(net(x[:1], t[:1], slots[:1, [0, 2]]), out[:1], rtol=1e-4, atol=1e-5)


def test_resblock_resamples_before_its_first_convolution():
    blk = ResBlock(4, 6, 8, resample="down")
    assert blk(torch.randn(2, 4, 8, 8), torch.randn(2, 8)).shape == (2, 6, 4, 4)
    blk = ResBlock(4, 6, 8, resample="up")
    assert blk(torch.randn(2, 4, 8, 8), torch.randn(2, 8)).shape == (2, 6, 16, 16)


def test_every_parameter_gets_a_gradient_after_the_output_layer_moves():
    net = _unet().train()
    loss = net(torch.randn(2, 3, 16, 16), torch.tensor([5, 50]), torch.randn(2, 3, 24)).pow(2).mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing
