"""GAN building blocks and the GAN trainer on the loop core: shapes, oracles, losses, data, exact resume."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from syllabus.errors import RunFailed
from syllabus.gan_step import GanTrainConfig, GanTrainer, Objective, d_loss, g_loss, real_loader
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


class _Ctx:
    """Just enough of the core's StepContext to run one update: backward, norm, step."""

    def __init__(self, optimizers, cfg=None):
        self.optimizers, self.cfg, self.device, self.fraction = optimizers, cfg or GanTrainConfig(), "cpu", 0.0

    def to_device(self, obj):
        return obj

    def update(self, name, loss, *, grad_norm=False):
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        opt.step()
        return norm


def _pair(width=8, **d_kwargs):
    torch.manual_seed(0)
    return GENERATORS.get("mlp")(4, 8, width=width), DISCRIMINATORS.get("mlp")(8, width=width, **d_kwargs)


def test_strong_discriminator_starves_the_generator_only_under_minimax():
    g, d = _pair()
    nn.init.constant_(d.head.bias, -30.0)  # D(G(z)) ~ 1e-13: every fake rejected
    norms = {}
    for ns in (False, True):
        trainer = GanTrainer(g, d, Objective(non_saturating=ns))
        ctx = _Ctx(trainer.make_optimizers(GanTrainConfig()))
        norms[ns] = trainer.g_update(16, 0.0, ctx)["g_grad_norm"]
    assert norms[False] < 1e-9 < 1e-2 < norms[True]


def test_optimizers_are_adam_with_each_network_its_own_rate():
    g, d = _pair()
    opts = GanTrainer(g, d, Objective()).make_optimizers(GanTrainConfig(lr_d=3e-4, lr_g=1e-3, beta1=0.5))
    assert set(opts) == {"d", "g"} and all(isinstance(o, torch.optim.Adam) for o in opts.values())
    assert opts["d"].param_groups[0]["lr"] == 3e-4 and opts["g"].param_groups[0]["lr"] == 1e-3
    assert opts["g"].param_groups[0]["betas"] == (0.5, 0.999)
    assert {id(p) for p in opts["d"].param_groups[0]["params"]} == {id(p) for p in d.parameters()}


def test_train_step_makes_d_steps_updates_on_their_own_batches_then_g_steps():
    g, d = _pair()
    trainer = GanTrainer(g, d, Objective())
    cfg = GanTrainConfig(batch_size=4, d_steps=3, g_steps=2)
    ctx = _Ctx(trainer.make_optimizers(cfg), cfg)
    seen = []
    real_update = trainer.d_update
    trainer.d_update = lambda real, noise, c: seen.append(real.clone()) or real_update(real, noise, c)
    out = trainer.train_step([torch.arange(12.0).view(12, 1, 1, 1).expand(12, 1, 8, 8)], ctx)
    assert [int(x[0, 0, 0, 0]) for x in seen] == [0, 4, 8] and all(len(x) == 4 for x in seen)
    assert ctx.optimizers["d"].state[next(d.parameters())]["step"] == 3
    assert ctx.optimizers["g"].state[next(g.parameters())]["step"] == 2
    assert set(out) == {"d_loss", "d_real", "d_fake", "d_grad_norm", "g_loss", "g_grad_norm"}


def test_real_loader_fills_every_batch_with_successive_permutations_even_from_few_images():
    images = torch.arange(5.0).view(5, 1, 1, 1)
    loader = real_loader(images, GanTrainConfig(steps_per_epoch=4, batch_size=3, d_steps=2))
    torch.manual_seed(0)
    batches = [b[0].flatten() for b in loader]
    assert len(loader) == 4 and [len(b) for b in batches] == [6] * 4  # d_steps x batch_size each
    drawn = torch.cat(batches).long()
    for start in range(0, 20, 5):  # 24 draws: four whole permutations of the five images, then a part
        assert sorted(drawn[start:start + 5].tolist()) == list(range(5))


# --------------------------------------------------------------------------- through the loop core


def _images(n=24, size=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1


def _fit(tmp_path, name, interrupt_after=None, images=None, epochs=3):
    from syllabus.train import core

    g, d = _pair(width=16, spectral_norm=True, minibatch_std=True)
    cfg = GanTrainConfig(epochs=epochs, steps_per_epoch=4, batch_size=8, lr_g=1e-3, lr_d=1e-3, d_steps=2,
                         monitor="val/d_fixed")
    obj = Objective(non_saturating=False, label_smoothing=0.1, instance_noise=0.2, diffaug=True)
    fixed = torch.randn(6, 4, generator=torch.Generator().manual_seed(9))

    def evaluate(gen, disc, ctx):
        return {"sample_mean": float(gen(fixed).mean()), "d_fixed": float(disc(gen(fixed)).mean()), "at": ctx.step}

    trainer = GanTrainer(g, d, obj, evaluate)
    run = Run(tmp_path / name, device="cpu")
    real_end = core._end_epoch

    def end(record, ctx, tr):
        real_end(record, ctx, tr)
        if ctx.epoch == interrupt_after:
            raise KeyboardInterrupt

    core._end_epoch = end
    try:
        core.fit(trainer, real_loader(_images() if images is None else images, cfg), cfg, run, seed=5)
    finally:
        core._end_epoch = real_end
    return trainer, run


def _rows(run):
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in run.read_metrics()]


def test_core_logs_every_step_and_every_period(tmp_path):
    _, run = _fit(tmp_path, "a")
    rows = _rows(run)
    steps = [r for r in rows if "step" in r]
    evals = [r for r in rows if "step" not in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm", "d_grad_norm"):
        assert all(math.isfinite(r[f"train/{key}"]) for r in steps), key
    assert [(r["epoch"], r["val/at"]) for r in evals] == [(1, 4), (2, 8), (3, 12)]
    state = run.load_checkpoint("last")
    assert set(state["modules"]) == {"generator", "discriminator"} and set(state["optimizers"]) == {"d", "g"}


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    full, full_run = _fit(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "resumed", interrupt_after=2)
    assert max(r["epoch"] for r in Run(tmp_path / "resumed").read_metrics()) == 2
    resumed, resumed_run = _fit(tmp_path, "resumed")
    assert _rows(resumed_run) == _rows(full_run)
    for name in ("generator", "discriminator"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_non_finite_loss_stops_naming_the_loss_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "nan", interrupt_after=1, epochs=2)
    before = (tmp_path / "nan" / "checkpoints" / "last.pt").read_bytes()
    bad = _images()
    bad[:] = float("nan")
    with pytest.raises(RunFailed, match=r"the 'd' loss became nan at epoch 2, step 5.*last\.pt"):
        _fit(tmp_path, "nan", images=bad, epochs=2)
    assert (tmp_path / "nan" / "checkpoints" / "last.pt").read_bytes() == before
