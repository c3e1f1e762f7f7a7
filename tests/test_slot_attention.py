"""Slot Attention against the `slot-attention` package (PyPI) with shared weights; model invariants."""

import numpy as np
import pytest
import torch
from slot_attention import SlotAttention as ReferenceSlotAttention

from syllabus.nn.slot_attention import BroadcastDecoder, SlotAttention, SlotAttentionAutoEncoder, SlotEncoder


def _shared_weights(ours: SlotAttention, theirs: ReferenceSlotAttention) -> None:
    """Copy our parameters into the reference (its q/k/v biases set to zero, ours have none)."""
    with torch.no_grad():
        theirs.slots_mu.copy_(ours.slots_mu)
        theirs.slots_logsigma.copy_(ours.slots_log_sigma)
        for name in ("to_q", "to_k", "to_v"):
            getattr(theirs, name).weight.copy_(getattr(ours, name).weight)
            getattr(theirs, name).bias.zero_()
        theirs.gru.load_state_dict(ours.gru.state_dict())
        theirs.mlp.load_state_dict(ours.mlp.state_dict())
        theirs.norm_input.load_state_dict(ours.norm_inputs.state_dict())
        theirs.norm_slots.load_state_dict(ours.norm_slots.state_dict())
        theirs.norm_pre_ff.load_state_dict(ours.norm_mlp.state_dict())


@pytest.mark.parametrize("iters", [1, 3])
def test_matches_the_pypi_package_with_the_same_weights_and_noise(iters):
    torch.manual_seed(0)
    ours, theirs = SlotAttention(5, 16, iters, hidden_dim=32), ReferenceSlotAttention(5, 16, iters, hidden_dim=32)
    with torch.no_grad():
        ours.slots_log_sigma.normal_()  # not the default, so that sigma matters
    _shared_weights(ours, theirs)
    x = torch.randn(3, 40, 16)
    torch.manual_seed(7)
    slots, attn = ours(x)
    torch.manual_seed(7)
    expected = theirs(x)
    torch.testing.assert_close(slots, expected, rtol=1e-5, atol=1e-5)
    assert attn.shape == (iters, 3, 5, 40)


def test_attention_is_a_softmax_over_slots_and_slots_are_permutation_equivariant():
    torch.manual_seed(1)
    module = SlotAttention(4, 8, iters=2)
    x = torch.randn(2, 30, 8)
    init = module.init_slots(2)  # (B, K, D)
    perm = torch.tensor([2, 0, 3, 1])
    slots, attn = module(x, slots=init)
    slots_p, attn_p = module(x, slots=init[:, perm])
    torch.testing.assert_close(attn.sum(2), torch.ones(2, 2, 30))
    torch.testing.assert_close(slots_p, slots[:, perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn_p, attn[:, :, perm], rtol=1e-5, atol=1e-6)


def test_slots_are_sampled_from_the_learned_gaussian():
    module = SlotAttention(3, 4)
    with torch.no_grad():
        module.slots_mu.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        module.slots_log_sigma.copy_(torch.tensor([1.0, 0.5, 2.0, 0.1]).log())
    s = module.init_slots(20_000).reshape(-1, 4)  # (B K, D)
    torch.testing.assert_close(s.mean(0), module.slots_mu.flatten(), atol=0.03, rtol=0)
    torch.testing.assert_close(s.std(0), module.slots_log_sigma.exp().flatten(), atol=0.03, rtol=0.02)


def _model(k=4, size=32, out_res=None):
    enc = SlotEncoder(k, slot_dim=16, iters=2, channels=8, resolution=(size, size), strides=(2, 1, 1, 1))
    return SlotAttentionAutoEncoder(enc, BroadcastDecoder(16, (size, size), init_res=8, channels=8, out_res=out_res))


def test_encoder_shapes_and_decoder_masks_sum_to_one():
    torch.manual_seed(0)
    model = _model()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    slots, attn = model.encoder(x)
    assert slots.shape == (2, 4, 16) and attn.shape == (2, 4, 16 * 16) and model.encoder.feature_hw == (16, 16)
    out = model(x)
    assert out["recon"].shape == (2, 3, 32, 32) and out["masks"].shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 1, 32, 32))
    torch.testing.assert_close(out["recon"], (out["masks"] * out["contents"]).sum(1))
    assert out["attn"].shape == (2, 2, 4, 256)


def test_low_resolution_decoder_upsamples_image_and_masks():
    torch.manual_seed(0)
    out = _model(out_res=16)(torch.rand(2, 3, 32, 32))
    assert out["contents"].shape == (2, 4, 3, 16, 16) and out["masks"].shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 1, 32, 32))


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(0)
    model = _model()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    (model(x)["recon"] - x).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_implicit_gradient_keeps_the_forward_and_cuts_earlier_iterations():
    torch.manual_seed(0)
    plain = SlotAttention(3, 8, iters=3)
    implicit = SlotAttention(3, 8, iters=3, implicit_grad=True)
    implicit.load_state_dict(plain.state_dict())
    x = torch.randn(2, 10, 8)
    outs = []
    for module in (plain, implicit):
        torch.manual_seed(3)
        slots, _ = module(x)
        slots.sum().backward()
        outs.append(slots)
    torch.testing.assert_close(outs[0], outs[1])
    assert plain.slots_mu.grad.abs().sum() > 0
    assert implicit.slots_mu.grad is None  # the initial slots are reached only through cut iterations
    assert implicit.to_q.weight.grad.abs().sum() > 0


def test_learned_initial_slots_are_the_same_for_every_image_and_train_straight_through():
    torch.manual_seed(0)
    module = SlotAttention(3, 8, iters=3, implicit_grad=True, init="learned")
    start = module.init_slots(2)
    assert torch.equal(start[0], start[1]) and torch.equal(start[0], module.slots_init[0])
    x = torch.randn(2, 10, 8)
    slots, _ = module(x)
    torch.testing.assert_close(module(x)[0], slots)  # no sampling: the same slots twice
    slots.sum().backward()
    assert module.slots_init.grad.abs().sum() > 0  # reached through the straight-through term
    with pytest.raises(ValueError, match="3, not 4"):
        module.init_slots(2, num_slots=4)


def test_kmeans_centres_equal_scikit_learn_lloyd_from_the_same_seeds():
    from sklearn.cluster import KMeans

    from syllabus.nn.slot_attention import kmeans_centres

    torch.manual_seed(0)
    blobs = torch.randn(3, 4, 2) * 5  # (B, k, D): three images, four well-separated groups each
    x = (blobs.repeat_interleave(30, 1) + torch.randn(3, 120, 2) * 0.3).double()  # (B, N, D)
    torch.manual_seed(1)
    seeds = kmeans_centres(x, 4, iters=0)  # the k-means++ seeds alone
    torch.manual_seed(1)
    ours = kmeans_centres(x, 4, iters=5)
    for i in range(3):
        theirs = KMeans(4, init=seeds[i].numpy(), n_init=1, max_iter=5, tol=0.0, algorithm="lloyd").fit(x[i].numpy())
        np.testing.assert_allclose(ours[i].numpy(), theirs.cluster_centers_, atol=1e-8)
        assert len({tuple(c) for c in ours[i].round(decimals=0).tolist()}) == 4  # one centre per group


def test_kmeans_initialised_slots_start_on_the_inputs():
    torch.manual_seed(0)
    module = SlotAttention(4, 8, iters=2, init="kmeans")
    x = torch.randn(2, 30, 8)
    start = module.init_slots(2, inputs=module.norm_inputs(x))
    assert start.shape == (2, 4, 8) and not start.requires_grad
    slots, attn = module(x)
    assert slots.shape == (2, 4, 8) and attn.shape == (2, 2, 4, 30)


def test_decoder_depth_adds_convolutions_at_its_resolution():
    decoder = BroadcastDecoder(8, (32, 32), init_res=8, channels=4, out_res=16, depth=3)
    convs = [m for m in decoder.net if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and convs[-1].out_channels == 4
    contents, logits = decoder(torch.randn(2, 5, 8))
    assert contents.shape == (2, 5, 3, 16, 16) and logits.shape == (2, 5, 1, 16, 16)


def test_slot_frames_are_the_attention_weighted_mean_and_spread_of_the_grid():
    from syllabus.nn.slot_attention import slot_frames

    torch.manual_seed(0)
    attn = torch.rand(2, 3, 4 * 5)  # (B, K, N) on a 4 x 5 grid
    frames = slot_frames(attn, (4, 5), min_scale=0.0)
    ys, xs = np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 5), indexing="ij")
    w = attn.double().numpy() / attn.double().numpy().sum(-1, keepdims=True)
    for coord, mean_at, sd_at in ((ys.ravel(), 0, 2), (xs.ravel(), 1, 3)):
        mean = (w * coord).sum(-1)
        np.testing.assert_allclose(frames[..., mean_at].numpy(), mean, atol=1e-6)
        np.testing.assert_allclose(frames[..., sd_at].numpy(), np.sqrt((w * (coord - mean[..., None]) ** 2).sum(-1)),
                                   atol=1e-5)
    point = torch.zeros(1, 1, 20)
    point[0, 0, 7] = 1.0  # all attention on one cell: the spread is held at min_scale
    assert torch.allclose(slot_frames(point, (4, 5))[0, 0, 2:], torch.full((2,), 0.05))


def test_relative_decoder_draws_a_shifted_frame_as_the_same_picture_shifted():
    torch.manual_seed(0)
    decoder = BroadcastDecoder(8, (16, 16), init_res=16, channels=8, out_res=16, relative=True)
    content = torch.randn(1, 1, 8)
    frame = torch.tensor([[[0.0, -0.2, 0.3, 0.25]]])  # centre (y, x), spread (y, x)
    shifted = frame + torch.tensor([0.0, 2 * 2 / 15, 0.0, 0.0])  # two grid cells to the right
    a = torch.cat(decoder(torch.cat([content, frame], -1)), 2)  # (1, 1, 4, 16, 16)
    b = torch.cat(decoder(torch.cat([content, shifted], -1)), 2)
    # away from the borders (two 3 x 3 convolutions see 2 cells), b is a moved 2 cells right
    torch.testing.assert_close(b[..., 2:14, 4:14], a[..., 2:14, 2:12], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a, b, atol=1e-3)


def test_encoder_with_frames_appends_them_and_the_autoencoder_decodes_its_own_slots():
    torch.manual_seed(0)
    enc = SlotEncoder(4, slot_dim=16, iters=2, channels=8, resolution=(32, 32), strides=(2, 1), frames="attention")
    model = SlotAttentionAutoEncoder(enc, BroadcastDecoder(16, (32, 32), init_res=16, channels=8, out_res=16,
                                                           relative=True))
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out["slots"].shape == (2, 4, 20) and out["masks"].shape == (2, 4, 1, 32, 32)
    from syllabus.nn.slot_attention import slot_frames
    torch.testing.assert_close(out["slots"][..., -4:], slot_frames(out["attn"][-1], enc.feature_hw))
    torch.testing.assert_close(model.decode(out["slots"])["recon"], out["recon"])


@pytest.mark.parametrize("frames,width", [("none", 16), ("attention", 20), ("invariant", 20)])
def test_slot_width_is_the_width_of_the_slots_the_encoder_gives(frames, width):
    enc = SlotEncoder(3, slot_dim=16, iters=2, channels=8, resolution=(16, 16), strides=(2,), kernel_size=3,
                      hidden_dim=16, frames=frames)
    slots, _ = enc(torch.rand(2, 3, 16, 16))
    assert enc.slot_width == width and slots.shape == (2, 3, width)  # a decoder or UNet sizes itself by it


def test_relative_decoder_model_gives_every_parameter_a_gradient():
    torch.manual_seed(0)
    enc = SlotEncoder(4, slot_dim=16, iters=2, channels=8, resolution=(32, 32), strides=(2, 1), frames="attention",
                      implicit_grad=True, init="kmeans")
    model = SlotAttentionAutoEncoder(enc, BroadcastDecoder(16, (32, 32), init_res=16, channels=8, out_res=16,
                                                           relative=True))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    (model(x)["recon"] - x).square().mean().backward()
    unused = {"encoder.slot_attention.slots_mu", "encoder.slot_attention.slots_log_sigma"}  # k-means starts
    for name, p in model.named_parameters():
        if name not in unused:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
