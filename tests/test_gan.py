"""GAN building blocks and the GAN loop: shapes, oracles for the mitigations, losses, exact resume."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syllabus.errors import RunFailed, UsageError
from syllabus.gan_train import GanStep, GanTrainConfig, Objective, d_loss, fit_gan, g_loss, grad_norm, real_batches
from syllabus.nn.gan import (
    DISCRIMINATORS,
    GENERATORS,
    MinibatchStd,
    SpectralNorm,
    _cutout,
    _translate,
    diff_augment,
    spectral_normalized,
)
from syllabus.runs import Run

SIZES = {"mlp": (8, 12), "conv": (8, 28)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Networks this small run fastest on one CPU thread (and far faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("arch,size,sn,mbstd", [
    (arch, size, sn, mbstd) for arch in ("mlp", "conv") for size in SIZES[arch]
    for sn, mbstd in itertools.product([False, True], repeat=2)
])
def test_every_pair_has_the_right_shapes_and_every_parameter_a_gradient(arch, size, sn, mbstd):
    torch.manual_seed(0)
    g = GENERATORS.get(arch)(z_dim=6, image_size=size, channels=1, width=8)
    d = DISCRIMINATORS.get(arch)(size, 1, 8, spectral_norm=sn, minibatch_std=mbstd)
    fake = g(torch.randn(5, 6))
    assert fake.shape == (5, 1, size, size) and fake.abs().max() <= 1
    logits = d(fake)
    assert logits.shape == (5,)
    (logits.sum() + d(torch.rand(5, 1, size, size)).sum()).backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_conv_pair_rejects_sizes_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        GENERATORS.get("conv")(4, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        DISCRIMINATORS.get("conv")(10)


# --------------------------------------------------------------------------- spectral norm


@pytest.mark.parametrize("make", [lambda: nn.Linear(7, 5), lambda: nn.Conv2d(3, 4, 3)])
def test_spectral_norm_matches_torch_step_by_step(make):
    torch.manual_seed(0)
    ours, theirs = make(), make()
    theirs.load_state_dict(ours.state_dict())
    torch.nn.utils.parametrizations.spectral_norm(theirs)
    spectral_normalized(ours)
    param = theirs.parametrizations.weight[0]
    mine = ours.parametrizations.weight[0]
    mine.u.copy_(param._u), mine.v.copy_(param._v)  # same starting vectors
    x = torch.randn(2, 7) if isinstance(ours, nn.Linear) else torch.randn(2, 3, 6, 6)
    for _ in range(4):  # training mode: one power-iteration step per call in both
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    u = mine.u.clone()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(mine.u, u)  # no update in eval mode


def test_spectral_norm_converges_to_unit_largest_singular_value():
    torch.manual_seed(1)
    layer = spectral_normalized(nn.Linear(20, 10))
    for _ in range(100):
        w = layer.weight
    assert torch.linalg.matrix_norm(w.detach(), ord=2) == pytest.approx(1.0, abs=1e-4)
    assert isinstance(layer.parametrizations.weight[0], SpectralNorm)


# --------------------------------------------------------------------------- minibatch std, DiffAugment


def test_minibatch_std_appends_the_mean_batch_standard_deviation():
    x = torch.tensor([[0.0, 2.0, 5.0], [2.0, 2.0, 1.0]])  # per-feature std over the batch: 1, 0, 2
    out = MinibatchStd()(x)
    expected = (math.sqrt(1 + 1e-8) + math.sqrt(1e-8) + math.sqrt(4 + 1e-8)) / 3
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[:, 3], torch.full((2,), expected))
    maps = MinibatchStd()(torch.ones(4, 2, 3, 3))  # identical samples: nearly zero extra channel
    assert maps.shape == (4, 3, 3, 3) and maps[:, 2].max() < 1e-3


def _shift(x, dy, dx, k):
    padded = F.pad(x, (k, k, k, k), value=-1.0)
    s = x.shape[-1]
    return padded[..., k - dy: k - dy + s, k - dx: k - dx + s]


def test_translation_is_an_integer_shift_filled_with_background():
    torch.manual_seed(0)
    x = torch.rand(16, 2, 8, 8)
    out = _translate(x)
    for img, res in zip(x, out):
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if torch.equal(_shift(img, dy, dx, 1), res)]
        assert len(matches) == 1


def test_cutout_blanks_one_square_of_half_the_side():
    torch.manual_seed(0)
    x = torch.rand(10, 1, 8, 8) + 0.5  # never -1 before the cutout
    holes = _cutout(x)[:, 0] == -1.0
    for hole in holes:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert hole.sum() == 16 and len(rows) == 4 and len(cols) == 4
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3


def test_diff_augment_is_differentiable_and_keeps_the_shape():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8, requires_grad=True)
    out = diff_augment(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- losses and gradient norms


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    t = 0.9
    expected_d = -(t * torch.sigmoid(real).log() + (1 - t) * (1 - torch.sigmoid(real)).log()).mean() \
        - (1 - torch.sigmoid(fake)).log().mean()
    torch.testing.assert_close(d_loss(real, fake, t), expected_d)
    torch.testing.assert_close(g_loss(fake, True), -torch.sigmoid(fake).log().mean())
    torch.testing.assert_close(g_loss(fake, False), (1 - torch.sigmoid(fake)).log().mean())


def test_minimax_gradient_vanishes_where_non_saturating_does_not():
    logits = torch.tensor([-12.0, -8.0], requires_grad=True)  # D confidently rejects the fakes
    g_loss(logits, False).backward()
    torch.testing.assert_close(logits.grad, -torch.sigmoid(logits.detach()) / 2)
    assert logits.grad.abs().max() < 2e-4
    logits.grad = None
    g_loss(logits, True).backward()
    torch.testing.assert_close(logits.grad, -(1 - torch.sigmoid(logits.detach())) / 2)


def test_grad_norm_equals_torch_total_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    net(torch.randn(5, 4)).square().sum().backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()])
    assert grad_norm(net) == pytest.approx(float(expected), rel=1e-6)


def test_strong_discriminator_starves_the_generator_only_under_minimax():
    torch.manual_seed(0)
    g, d = GENERATORS.get("mlp")(4, 8, width=8), DISCRIMINATORS.get("mlp")(8, width=8)
    nn.init.constant_(d.head.bias, -30.0)  # D(G(z)) ~ 1e-13: every fake rejected
    norms = {}
    for ns in (False, True):
        step = GanStep(g, d, GanTrainConfig(), Objective(non_saturating=ns))
        norms[ns] = step.g_update(16, 0.0, torch.device("cpu"))["g_grad_norm"]
    assert norms[False] < 1e-9 < 1e-2 < norms[True]


def test_real_batches_are_successive_permutations():
    torch.manual_seed(0)
    idx = real_batches(5, 4, 3).flatten()  # 12 indices from 3 permutations of 5
    assert idx.shape == (12,)
    assert sorted(idx[:5].tolist()) == list(range(5)) and sorted(idx[5:10].tolist()) == list(range(5))


# --------------------------------------------------------------------------- the loop


def _images(n=24, size=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1


def _fit(tmp_path, name, interrupt_at=None, images=None, steps=12):
    torch.manual_seed(0)
    g = GENERATORS.get("mlp")(4, 8, width=16)
    d = DISCRIMINATORS.get("mlp")(8, width=16, spectral_norm=True, minibatch_std=True)
    cfg = GanTrainConfig(steps=steps, eval_every=4, batch_size=8, lr_g=1e-3, lr_d=1e-3, d_steps=2)
    obj = Objective(non_saturating=False, label_smoothing=0.1, instance_noise=0.2, diffaug=True)
    run = Run(tmp_path / name, device="cpu")
    fixed = torch.randn(6, 4, generator=torch.Generator().manual_seed(9))

    def evaluate(gen, disc, step):
        return {"sample_mean": float(gen(fixed).mean()), "d_fixed": float(disc(gen(fixed)).mean()), "at": step}

    def stop(period, record):
        if period == interrupt_at:
            raise KeyboardInterrupt

    step = fit_gan(g, d, _images() if images is None else images, cfg, obj, run, seed=5, evaluate=evaluate,
                   on_period_end=stop)
    return step, run


def _rows(run):
    return [{k: v for k, v in r.items() if k != "time/period"} for r in run.read_metrics()]


def test_loop_logs_every_step_and_every_period(tmp_path):
    _, run = _fit(tmp_path, "a")
    rows = _rows(run)
    steps = [r for r in rows if "g_loss" in r]
    evals = [r for r in rows if "sample_mean" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm", "d_grad_norm"):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert [(r["epoch"], r["step"], r["at"]) for r in evals] == [(1, 4, 4), (2, 8, 8), (3, 12, 12)]
    state = run.load_checkpoint("last")
    assert state["period"] == 3 and state["step"] == 12
    assert {"generator", "discriminator", "opt_g", "opt_d"} <= set(state)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, capsys):
    full, full_run = _fit(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "resumed", interrupt_at=2)
    assert max(r["step"] for r in Run(tmp_path / "resumed").read_metrics()) == 8
    resumed, resumed_run = _fit(tmp_path, "resumed")
    assert "resuming" in capsys.readouterr().out
    assert _rows(resumed_run) == _rows(full_run)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        for (ka, va), (kb, vb) in zip(sorted(a.items()), sorted(b.items())):
            assert ka == kb
            if isinstance(va, torch.Tensor):
                torch.testing.assert_close(va, vb, rtol=0, atol=0)


def test_resume_with_a_different_period_length_is_refused(tmp_path):
    _fit(tmp_path, "p", steps=8)
    run = Run(tmp_path / "p", device="cpu")
    g, d = GENERATORS.get("mlp")(4, 8, width=16), DISCRIMINATORS.get("mlp")(8, width=16)
    cfg = GanTrainConfig(steps=12, eval_every=3)
    with pytest.raises(UsageError, match="at step 8 with train.eval_every=3"):
        fit_gan(g, d, _images(), cfg, Objective(), run)


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path):
    _fit(tmp_path, "nan", steps=4)
    before = (tmp_path / "nan" / "checkpoints" / "last.pt").read_bytes()
    bad = _images()
    bad[:] = float("nan")
    with pytest.raises(RunFailed, match="non-finite at step 5.*last.pt"):
        _fit(tmp_path, "nan", images=bad, steps=8)
    assert (tmp_path / "nan" / "checkpoints" / "last.pt").read_bytes() == before
