"""Invariant Slot Attention: shapes, frames, and attention that moves with the slots' frames."""

import torch

from syllabus.nn.invariant_slots import InvariantSlotAttention
from syllabus.nn.slot_attention import SlotEncoder, slot_frames


def _isa(**kw) -> InvariantSlotAttention:
    torch.manual_seed(0)
    return InvariantSlotAttention(3, 16, (8, 8), iters=2, hidden_dim=32, **kw)


def test_forward_is_the_rounds_of_attention_update_and_frames_with_a_last_round_for_the_frames():
    isa = _isa()
    x, start = torch.randn(2, 64, 16), torch.randn(2, 3, 16)
    slots, attns = isa(x, slots=start)
    assert slots.shape == (2, 3, 20) and attns.shape == (2, 2, 3, 64)
    torch.testing.assert_close(attns.sum(2), torch.ones(2, 2, 64))
    inputs = isa.norm_inputs(x)
    k, v = isa.to_k(inputs), isa.to_v(inputs)
    s, frames = start, torch.tensor([0.0, 0.0, 0.1, 0.1]).expand(2, 3, 4)
    for t in range(2):  # each round: attend in the current frames, update with them, then move the frames
        attn = isa.attend(s, k, frames)
        torch.testing.assert_close(attns[t], attn)
        s, frames = isa.update(s, attn, v, frames), slot_frames(attn, (8, 8))
    frames = slot_frames(isa.attend(s, k, frames), (8, 8))
    torch.testing.assert_close(slots, torch.cat([s, frames], -1))


def test_attention_in_a_frame_moved_with_the_inputs_moves_with_them():
    isa = _isa()
    x = torch.zeros(1, 8, 8, 16)
    x[0, 2:6, 1:4] = torch.randn(4, 3, 16)  # a patch on a flat background
    moved = torch.zeros_like(x)
    moved[0, :, 2:] = x[0, :, :-2]  # the patch two columns to the right
    slots = torch.randn(1, 3, 16)
    frames = torch.tensor([[[0.1, -0.4, 0.3, 0.2], [-0.2, 0.0, 0.5, 0.5], [0.4, 0.3, 0.1, 0.2]]])
    step = torch.tensor([0.0, 2 * 2 / 7, 0.0, 0.0])  # two cells of the [-1, 1] grid
    k, k_moved = (isa.to_k(isa.norm_inputs(a.reshape(1, 64, 16))) for a in (x, moved))
    attn = isa.attend(slots, k, frames).reshape(1, 3, 8, 8)
    attn_moved = isa.attend(slots, k_moved, frames + step).reshape(1, 3, 8, 8)
    torch.testing.assert_close(attn_moved[..., 2:], attn[..., :-2], atol=1e-5, rtol=1e-4)


def test_implicit_gradient_keeps_the_forward_and_the_encoder_has_no_absolute_position():
    x = torch.randn(2, 64, 16)
    torch.manual_seed(1)
    full = _isa()(x)[0]
    torch.manual_seed(1)
    implicit = _isa(implicit_grad=True)(x)[0]
    torch.testing.assert_close(full, implicit)
    enc = SlotEncoder(3, slot_dim=16, iters=2, channels=8, resolution=(16, 16), strides=(2, 1), frames="invariant")
    assert isinstance(enc.pos, torch.nn.Identity)
    slots, attns = enc.forward_all(torch.randn(2, 3, 16, 16))
    assert slots.shape == (2, 3, 20) and attns.shape == (2, 2, 3, 64)



def test_every_parameter_in_use_gets_a_gradient_with_learned_starts_under_the_implicit_gradient():
    isa = _isa(implicit_grad=True, init="learned")
    slots, _ = isa(torch.randn(2, 64, 16))
    slots.square().sum().backward()
    unused = {"slots_mu", "slots_log_sigma"}  # the Gaussian start's, not used by learned starts
    for name, p in isa.named_parameters():
        if name not in unused:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
