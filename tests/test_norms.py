"""Our normalisation layers against torch's, forward and backward, to 1e-5."""

import os

import pytest
import torch
from torch import nn
from torch.func import functional_call

from syllabus.errors import UsageError
from syllabus.nn import norms
from syllabus.nn.norms import (
    NORM_LAYERS,
    BatchInstanceNorm2d,
    BatchNorm2d,
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    bin_rhos,
    constrain_norms_,
    get_norm_layer,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}
B, C, H, W = 4, 6, 5, 7


def _inputs(seed: int, dtype=torch.float64, offset: float = 0.5):
    """x, upstream gradient dy (B, C, H, W), gamma, beta (C,): all random, so that tests can fail."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype) * 2 + offset
    dy = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    gamma = torch.rand(C, generator=gen, dtype=dtype) + 0.5
    beta = torch.randn(C, generator=gen, dtype=dtype)
    return x, dy, gamma, beta


def _set_affine(module: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """Copy per-channel gamma/beta in, broadcast over (H, W) for nn.LayerNorm([C, H, W])."""
    with torch.no_grad():
        module.weight.copy_(gamma.view(-1, *[1] * (module.weight.dim() - 1)).expand_as(module.weight))
        module.bias.copy_(beta.view(-1, *[1] * (module.bias.dim() - 1)).expand_as(module.bias))


def _forward_backward(module: nn.Module, x: torch.Tensor, dy: torch.Tensor):
    """y and the gradients of <y, dy> w.r.t. x and every parameter, in `named_parameters` order."""
    x = x.clone().requires_grad_()
    y = module(x)
    return y.detach(), torch.autograd.grad(y, [x, *module.parameters()], dy)


def _assert_matches(ours: nn.Module, ref: nn.Module, x, dy, gamma, beta) -> None:
    """Same output, input gradient, gamma and beta gradients (ref's summed over (H, W) if per position)."""
    _set_affine(ours, gamma, beta)
    _set_affine(ref, gamma, beta)
    y, (dx, dgamma, dbeta, *_) = _forward_backward(ours, x, dy)  # BIN's rho comes last
    y_ref, (dx_ref, dw_ref, db_ref) = _forward_backward(ref, x, dy)
    per_channel = lambda g: g.reshape(len(g), -1).sum(1)  # (C, ...) -> (C,)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(dx, dx_ref, **TOL)
    torch.testing.assert_close(dgamma, per_channel(dw_ref), **TOL)
    torch.testing.assert_close(dbeta, per_channel(db_ref), **TOL)


PAIRS = {
    "bn": (lambda: BatchNorm2d(C), lambda: nn.BatchNorm2d(C)),
    "in": (lambda: InstanceNorm2d(C), lambda: nn.InstanceNorm2d(C, affine=True)),
    "ln": (lambda: LayerNorm2d(C), lambda: nn.LayerNorm([C, H, W])),
    "gn": (lambda: GroupNorm2d(C, num_groups=3), lambda: nn.GroupNorm(3, C)),
    "gn1": (lambda: GroupNorm2d(C, num_groups=1), lambda: nn.GroupNorm(1, C)),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_forward_and_backward_match_torch(name):
    ours, ref = (make().double() for make in PAIRS[name])
    _assert_matches(ours, ref, *_inputs(seed=1))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_float32_with_large_mean_matches_torch_in_float64(name):
    """The variance is taken after centring: an offset of 100 standard deviations costs no accuracy."""
    ours, ref = PAIRS[name][0](), PAIRS[name][1]().double()
    x, dy, gamma, beta = _inputs(seed=2, dtype=torch.float32, offset=200.0)
    _set_affine(ours, gamma, beta)
    _set_affine(ref, gamma.double(), beta.double())
    y, grads = _forward_backward(ours, x, dy)
    y_ref, grads_ref = _forward_backward(ref, x.double(), dy.double())
    torch.testing.assert_close(y.double(), y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[0].double(), grads_ref[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_channels_last_input_gives_the_same_result(name):
    layer = PAIRS[name][0]().double()
    x, dy, gamma, beta = _inputs(seed=3)
    _set_affine(layer, gamma, beta)
    y, grads = _forward_backward(layer, x, dy)
    y_cl, grads_cl = _forward_backward(layer, x.to(memory_format=torch.channels_last), dy)
    torch.testing.assert_close(y_cl, y, **TOL)
    for g_cl, g in zip(grads_cl, grads, strict=True):
        torch.testing.assert_close(g_cl, g, **TOL)


def _train_steps(module: nn.Module, steps: int = 3) -> None:
    for step in range(steps):
        module(_inputs(seed=10 + step)[0])


@pytest.mark.parametrize("make", [lambda: BatchNorm2d(C, momentum=0.3), lambda: BatchInstanceNorm2d(C, momentum=0.3)])
def test_running_stats_follow_torch(make):
    ours, ref = make().double(), nn.BatchNorm2d(C, momentum=0.3).double()
    _train_steps(ours)
    _train_steps(ref)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)  # unbiased, as torch
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 3


def test_batch_norm_eval_uses_running_stats_like_torch():
    ours, ref = BatchNorm2d(C).double(), nn.BatchNorm2d(C).double()
    _train_steps(ours)
    _train_steps(ref)
    ours.eval(), ref.eval()
    x, dy, gamma, beta = _inputs(seed=4)
    _assert_matches(ours, ref, x, dy, gamma, beta)
    before = ours.running_mean.clone()
    ours(x)
    assert torch.equal(ours.running_mean, before)


def test_batch_norm_rejects_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than one value"):
        BatchNorm2d(C)(torch.randn(1, C, 1, 1))


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects \(B, 6, H, W\)"):
        LayerNorm2d(C)(torch.randn(2, 5, 3, 3))


def _bin_with_rho(rho: float) -> BatchInstanceNorm2d:
    layer = BatchInstanceNorm2d(C).double()
    with torch.no_grad():
        layer.rho.fill_(rho)
    return layer


@pytest.mark.parametrize("ref", [lambda: BatchNorm2d(C), lambda: nn.BatchNorm2d(C)])
def test_bin_with_rho_one_is_batch_norm(ref):
    _assert_matches(_bin_with_rho(1.0), ref().double(), *_inputs(seed=5))


def test_bin_with_rho_one_is_batch_norm_in_eval():
    ours, ref = _bin_with_rho(1.0), nn.BatchNorm2d(C).double()
    _train_steps(ours)
    _train_steps(ref)
    ours.eval(), ref.eval()
    _assert_matches(ours, ref, *_inputs(seed=6))


@pytest.mark.parametrize("ref", [lambda: InstanceNorm2d(C), lambda: nn.InstanceNorm2d(C, affine=True)])
def test_bin_with_rho_zero_is_instance_norm(ref):
    _assert_matches(_bin_with_rho(0.0), ref().double(), *_inputs(seed=7))


def test_bin_mixes_torch_batch_and_instance_norm_with_rho_gradient():
    """y = (rho x_BN + (1 - rho) x_IN) gamma + beta for rho in (0, 1), gradients of rho included."""
    x, dy, gamma, beta = _inputs(seed=8)
    rho = torch.rand(C, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    layer = BatchInstanceNorm2d(C).double()
    _set_affine(layer, gamma, beta)
    params = {"weight": gamma.clone().requires_grad_(), "bias": beta.clone().requires_grad_(),
              "rho": rho.clone().requires_grad_()}
    xs = x.clone().requires_grad_()
    y = functional_call(layer, params, (xs,))
    grads = torch.autograd.grad(y, [xs, *params.values()], dy)

    ref_params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    xr = x.clone().requires_grad_()
    x_bn = nn.functional.batch_norm(xr, None, None, training=True)
    x_in = nn.functional.instance_norm(xr)
    r = ref_params["rho"].view(1, C, 1, 1)
    y_ref = (r * x_bn + (1 - r) * x_in) * ref_params["weight"].view(1, C, 1, 1) + ref_params["bias"].view(1, C, 1, 1)
    grads_ref = torch.autograd.grad(y_ref, [xr, *ref_params.values()], dy)
    torch.testing.assert_close(y, y_ref, **TOL)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, **TOL)


def test_constrain_clamps_rho_into_unit_interval():
    model = nn.Sequential(BatchInstanceNorm2d(3), nn.ReLU(), nn.Sequential(BatchInstanceNorm2d(3)), BatchNorm2d(3))
    with torch.no_grad():
        model[0].rho.copy_(torch.tensor([-0.5, 0.3, 1.7]))
        model[2][0].rho.copy_(torch.tensor([2.0, -1.0, 1.0]))
    constrain_norms_(model)
    assert model[0].rho.tolist() == pytest.approx([0.0, 0.3, 1.0])
    assert bin_rhos(model) == {"0": pytest.approx([0.0, 0.3, 1.0]), "2.0": [1.0, 0.0, 1.0]}


@pytest.mark.parametrize("name", ["bn", "in", "ln", "gn", "bin"])
def test_gradients_and_gradients_of_gradients_are_exact(name):
    """Numerical gradcheck (x and every parameter), and double backward for gradient penalties."""
    layer = get_norm_layer(name, num_groups=2)(4).double()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 4, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    params = {k: (torch.rand(p.shape, dtype=torch.float64, generator=gen) + 0.2).requires_grad_()
              for k, p in layer.named_parameters()}
    fn = lambda x, *p: functional_call(layer, dict(zip(params, p, strict=True)), (x,))
    assert torch.autograd.gradcheck(fn, (x, *params.values()))
    assert torch.autograd.gradgradcheck(fn, (x, *params.values()))


def test_every_registered_name_constructs_and_keeps_the_shape():
    assert {"bn", "in", "bin", "ln", "gn", "none", "torch-bn"} <= set(NORM_LAYERS)
    x = torch.randn(2, 8, 4, 4)
    for name in NORM_LAYERS:
        layer = get_norm_layer(name, num_groups=4)(8)
        assert layer(x).shape == x.shape, name


def test_get_norm_layer_binds_only_the_arguments_a_layer_takes():
    assert get_norm_layer("gn", num_groups=4)(8).groups == 4
    assert isinstance(get_norm_layer("bn", num_groups=8)(8), BatchNorm2d)
    assert get_norm_layer("in", eps=1e-3, num_groups=8)(8).eps == 1e-3
    assert isinstance(get_norm_layer("torch-bn", num_groups=8)(8), nn.BatchNorm2d)
    assert not list(get_norm_layer("none", num_groups=8)(8).parameters())


@pytest.mark.parametrize("name", ["gn", "bn", "none"])
def test_misspelt_keyword_is_an_error_naming_it_and_the_valid_ones(name):
    with pytest.raises(UsageError) as info:
        get_norm_layer(name, num_group=4, eps=1e-3)
    message = str(info.value)
    assert "'num_group'" in message and "num_groups" in message and "momentum" in message
    assert "'eps'" not in message and "\n" not in message


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UsageError) as info:
        get_norm_layer("batchnorm")
    message = str(info.value)
    assert "\n" not in message and "'batchnorm'" in message
    for name in NORM_LAYERS:
        assert name in message


def test_group_norm_needs_divisible_channels():
    with pytest.raises(ValueError, match="not divisible"):
        GroupNorm2d(10, num_groups=4)
    with pytest.raises(ValueError, match="not divisible"):
        get_norm_layer("gn", num_groups=3)(16)


# --- the compiled path (training on large inputs) ---


@pytest.fixture
def compiled_path(monkeypatch):
    """Every training input takes the compiled path, whatever its size; a fresh path object."""
    path = norms._CompiledPath()
    path.enabled = True
    monkeypatch.setattr(norms, "_COMPILED", path)
    monkeypatch.setattr(norms, "MIN_COMPILED_NUMEL", 0)
    return path


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SYLLABUS_TEST_COMPILE") != "1",
                    reason="compiles with inductor: 15-45 s with a warm inductor cache, 105 s from a fresh one "
                           "at load 20 on the 2-core CPU; SYLLABUS_TEST_COMPILE=1 runs it")
def test_compiled_path_matches_torch_in_float64(compiled_path):
    """The compiled formula (float32, mean 100 standard deviations from 0) against torch in float64.

    Group norm only: one forward and one backward compile.
    """
    ours, ref = PAIRS["gn"][0](), PAIRS["gn"][1]().double()
    x, dy, gamma, beta = _inputs(seed=11, dtype=torch.float32, offset=200.0)
    _set_affine(ours, gamma, beta)
    _set_affine(ref, gamma.double(), beta.double())
    y, grads = _forward_backward(ours, x, dy)
    y_ref, grads_ref = _forward_backward(ref, x.double(), dy.double())
    assert compiled_path.failure is None and len(compiled_path._fns) == 2  # forward and backward compiled
    torch.testing.assert_close(y.double(), y_ref, atol=1e-4, rtol=1e-4)
    per_channel = lambda g: g.reshape(len(g), -1).sum(1)  # (C, ...) -> (C,)
    for g, g_ref in zip(grads, (grads_ref[0], per_channel(grads_ref[1]), per_channel(grads_ref[2])), strict=True):
        torch.testing.assert_close(g.double(), g_ref, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_compiled_path_formulas_match_torch_without_compiling(compiled_path, monkeypatch, name):
    """The path's out-of-place formulas, run as written (torch.compile replaced by the identity)."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    ours, ref = (make().double() for make in PAIRS[name])
    _assert_matches(ours, ref, *_inputs(seed=14))
    assert set(compiled_path._fns) == {norms._plain_forward, norms._grads_from_stats}


def test_compile_failure_warns_once_and_runs_eagerly(compiled_path, monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    layer = GroupNorm2d(C, num_groups=3)
    x, dy, gamma, beta = _inputs(seed=12, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler\)"):
        y, grads = _forward_backward(layer, x, dy)
    assert compiled_path.failure == "RuntimeError: no C++ compiler"
    ref = nn.GroupNorm(3, C)
    y_ref, grads_ref = _forward_backward(ref, x, dy)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(grads[0], grads_ref[0], **TOL)


def test_evaluation_and_small_inputs_stay_eager(monkeypatch):
    path = norms._CompiledPath()
    monkeypatch.setattr(norms, "_COMPILED", path)
    layer = GroupNorm2d(C, num_groups=3)
    x, dy, _, _ = _inputs(seed=13, dtype=torch.float32)
    _forward_backward(layer, x, dy)  # below MIN_COMPILED_NUMEL
    monkeypatch.setattr(norms, "MIN_COMPILED_NUMEL", 0)
    with torch.no_grad():
        layer(x)  # no backward follows
    assert path._fns == {}
