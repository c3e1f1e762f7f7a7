"""The latent VAE: the assignment's shapes, its loss, and loading a user's checkpoint."""

import pytest
import torch

from syllabus.errors import UsageError
from syllabus.nn.latent_vae import VAE, load_vae_checkpoint, vae_loss
from syllabus.nn.vae import gaussian_kl


@pytest.mark.parametrize("side,latent", ((128, 32), (64, 16)))
def test_assignment_interface_shapes(side, latent):
    vae = VAE().eval()
    x = torch.rand(2, 3, side, side) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (2, 3, latent, latent)
        assert vae.decode(z).shape == x.shape


def test_encode_is_the_posterior_mean_and_the_loss_adds_the_weighted_kl():
    torch.manual_seed(0)
    vae = VAE(channels=(8, 16))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, logvar = vae.posterior(x)
    torch.testing.assert_close(vae.encode(x), mean)
    torch.manual_seed(1)
    loss, parts = vae_loss(vae, x, kl_weight=0.5)
    torch.manual_seed(1)
    recon, _, _ = vae(x)
    expect = (recon - x).pow(2).mean() + 0.5 * gaussian_kl(mean, logvar).mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert parts["kl"] == pytest.approx(gaussian_kl(mean, logvar).mean().item(), rel=1e-5)


def test_checkpoint_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    src, dst = VAE(channels=(8, 16)), VAE(channels=(8, 16))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "vae.pt")
    load_vae_checkpoint(dst, tmp_path / "vae.pt")
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(dst.encode(x), src.encode(x))


def test_key_mismatch_is_one_message_naming_the_keys(tmp_path):
    state = VAE(channels=(8, 16)).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["decoder.0.weight"]
    state["encoder.0.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(UsageError) as err:
        load_vae_checkpoint(VAE(channels=(8, 16)), tmp_path / "other.pt", key="model.vae")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.vae=")
    assert "missing 1: decoder.0.weight" in msg
    assert "unexpected 1: extra.weight" in msg
    assert "encoder.0.bias (5,) vs (8,)" in msg


def test_missing_or_unsafe_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found; point model.vae"):
        load_vae_checkpoint(VAE(), tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="weights-only") as bad:
        load_vae_checkpoint(VAE(), tmp_path / "bad.pt")
    assert "\n" not in str(bad.value)  # the CLI prints one line; the file's name must be on it
    torch.save({"note": "no tensors"}, tmp_path / "empty.pt")
    with pytest.raises(UsageError, match="no state dict"):
        load_vae_checkpoint(VAE(), tmp_path / "empty.pt")
