"""Normalisation layers written from scratch, and the registry that resolves them by name.

Every layer here normalises a (B, C, H, W) input over some set of elements and then applies a
per-channel affine map y = x_hat * gamma + beta. They differ only in the set:

    BatchNorm2d     per channel, over (B, H, W)           (Ioffe & Szegedy 2015)
    InstanceNorm2d  per sample and channel, over (H, W)   (Ulyanov et al. 2016)
    LayerNorm2d     per sample, over (C, H, W)            (Ba et al. 2016)
    GroupNorm2d     per sample and group, over (C/G, H, W) (Wu & He 2018)

so one autograd function, `_AffineNorm`, does all four: the input is viewed as
(B, G, C/G, H*W) and the statistics reduce over dims (2, 3), plus dim 0 for batch
normalisation (BN: G = C; IN: G = C; LN: G = 1; GN: G = num_groups).
`BatchInstanceNorm2d` (Nam & Kim 2018) mixes the BN and IN outputs with a learned rho.

The backward pass is written by hand (the autograd of the plain formula costs 3-6x torch's
fused kernels on CPU). The formulas exist twice: out of place (`_plain_forward`,
`_grads_from_stats`), which training on large inputs runs `torch.compile`d (fused into about
two passes over memory, see `_CompiledPath`) and which runs when the graph of the backward is
needed (gradient penalties, `create_graph=True`); and eagerly in place with few passes
(`_eager_forward`, `_fast_grads`), for everything else and wherever compiling is unavailable.

Layers are chosen as arguments (timm's habit): `get_norm_layer("gn", num_groups=8)` returns a
constructor taking the channel count, and a model only ever calls `norm_layer(channels)`.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from syllabus.errors import UsageError
from syllabus.registry import Registry

NORM_LAYERS: Registry[Callable[..., nn.Module]] = Registry("normalisation")
register_norm = NORM_LAYERS.register  # class decorator: constructible as `get_norm_layer(name)`


# ----------------------------------------------------------------------------------------------
# The math: statistics over a grouped view, normalisation, hand-written backward.
# ----------------------------------------------------------------------------------------------


def _grouped(t: Tensor, groups: int) -> Tensor:
    """(B, C, H, W) -> (B, G, C/G, H*W); a view when `t` is contiguous."""
    return t.reshape(t.shape[0], groups, t.shape[1] // groups, -1)


def _stat_dims(over_batch: bool) -> tuple[int, ...]:
    """Dims of the (B, G, C/G, H*W) view that one statistic reduces over."""
    return (0, 2, 3) if over_batch else (2, 3)


def _count(xv: Tensor, over_batch: bool) -> int:
    """Elements behind one statistic of the (B, G, C/G, H*W) view."""
    return xv.shape[2] * xv.shape[3] * (xv.shape[0] if over_batch else 1)


def _sum(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Sum over `dims` (always ending in 3), keepdim; the contiguous dim first, as it is fastest."""
    return t.sum(-1, keepdim=True).sum(dims[:-1], keepdim=True)


def _sum_sq(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Sum of squares over `dims`, keepdim, without materialising t * t."""
    return torch.linalg.vector_norm(t, dim=-1, keepdim=True).square_().sum(dims[:-1], keepdim=True)


def _channel_view(param: Tensor, groups: int) -> Tensor:
    """(C,) -> (1, G, C/G, 1), to broadcast against the grouped view."""
    return param.view(1, groups, -1, 1)


class _CompiledPath:
    """`torch.compile`d `_plain_forward` and `_grads_from_stats`, for training on large inputs.

    Compiling fuses each formula's reductions and elementwise work into about two passes over
    memory, as torch's own fused kernels do (the eager path needs 5 forward and 7 backward). Each
    new input shape costs a compile of seconds (less when inductor's on-disk cache holds it), paid
    back only over many training steps, so only a forward whose backward will follow, on an input
    of `MIN_COMPILED_NUMEL` elements or more, takes this path, for at most `MAX_COMPILED_SHAPES`
    shapes per formula; evaluation, small inputs and further shapes run eagerly. When compilation
    is unavailable (no C++ compiler, an unsupported device) the first failure is warned about once
    and every later call runs eagerly. `SYLLABUS_COMPILE_NORMS=0` turns the path off.
    """

    def __init__(self) -> None:
        self.enabled = os.environ.get("SYLLABUS_COMPILE_NORMS", "1") != "0"
        self.failure: str | None = None
        self._fns: dict[Callable, Callable] = {}
        self._shapes: dict[Callable, set[tuple]] = {}

    def wanted(self, x: Tensor) -> bool:
        return self.enabled and self.failure is None and x.numel() >= MIN_COMPILED_NUMEL

    def run(self, fn: Callable, x: Tensor, *args):
        """fn(x, *args) compiled, or None when the eager path should run instead."""
        key = tuple((t.shape, t.stride(), t.dtype, t.device) if isinstance(t, Tensor) else t for t in (x, *args))
        shapes = self._shapes.setdefault(fn, set())
        if not self.wanted(x) or (key not in shapes and len(shapes) >= MAX_COMPILED_SHAPES):
            return None
        shapes.add(key)
        if fn not in self._fns:
            self._fns[fn] = torch.compile(fn, dynamic=False)  # dynamic shapes: 10x slower kernels here
        try:
            return self._fns[fn](x, *args)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: use the eager path
            self.failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(f"syllabus.nn.norms: torch.compile failed ({self.failure}); using the eager path",
                          RuntimeWarning, stacklevel=2)
            return None


MIN_COMPILED_NUMEL = 1 << 23  # input elements from which training compiles: the 256 px full profile, no quick one
MAX_COMPILED_SHAPES = 8  # per formula, as torch._dynamo's recompile limit
_COMPILED = _CompiledPath()


class _AffineNorm(torch.autograd.Function):
    """y = (x - mean) * rstd * weight + bias, statistics over `_stat_dims(over_batch)`.

    Returns (y, mean, var): y (B, C, H, W), and the statistics, var biased, flattened: (G,) when
    `over_batch` (batch norm's running averages need them), (B * G,) otherwise.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, over_batch: bool,
                eps: float, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        compiled = _COMPILED.run(_plain_forward, x, weight, bias, groups, over_batch, eps) if training else None
        y, mean, var, rstd = compiled if compiled is not None else _eager_forward(x, weight, bias, groups,
                                                                                  over_batch, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.over_batch, ctx.eps, ctx.has_bias = groups, over_batch, eps, bias is not None
        ctx.compiled = compiled is not None
        mean, var = mean.flatten(), var.flatten()
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy: Tensor, _dmean: Tensor, _dvar: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: return grads autograd can differentiate
            dx, dw, db = _reference_grads(x, weight, dy, ctx.groups, ctx.over_batch, ctx.eps)
        else:
            compiled = _COMPILED.run(_grads_from_stats, x, weight, mean, rstd, dy, ctx.groups, ctx.over_batch) \
                if ctx.compiled else None
            dx, dw, db = compiled if compiled is not None else _fast_grads(x, weight, mean, rstd, dy, ctx.groups,
                                                                           ctx.over_batch, need_x)
        return (dx if need_x else None, dw if need_w else None, db if need_b and ctx.has_bias else None,
                None, None, None, None)


def _affine_norm(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, over_batch: bool,
                 eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """`_AffineNorm.apply`, told whether a backward may follow (only then is compiling worth it)."""
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    return _AffineNorm.apply(x, weight, bias, groups, over_batch, eps, training)


def _fast_grads(x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, dy: Tensor, groups: int,
                over_batch: bool, need_x: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    """Gradients of `_AffineNorm` in few passes over memory; the formula is `_reference_grads`'s.

    With g = dy * weight and x_hat = (x - mean) * rstd, each statistic's group gets
        dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),
    evaluated as dx = k * dy + c1 * x + c0 with per-channel / per-group coefficients, from the
    two sums per (sample, channel) S1 = sum_hw dy and S2 = sum_hw dy * (x - mean).
    """
    xv = _grouped(x, groups)  # (B, G, Cg, HW)
    dyv = dy.reshape(xv.shape)  # (B, G, Cg, HW)
    dims = _stat_dims(over_batch)
    n = _count(xv, over_batch)
    s1 = dyv.sum(-1, keepdim=True)  # (B, G, Cg, 1)
    buf = xv - mean  # (B, G, Cg, HW), reused below for dx
    s2 = buf.mul_(dyv).sum(-1, keepdim=True)  # (B, G, Cg, 1)
    dw = (s2 * rstd).sum(0).flatten()  # (C,): sum of dy * x_hat
    db = s1.sum(0).flatten()  # (C,)
    if not need_x:
        return None, dw, db
    w = _channel_view(weight, groups)  # (1, G, Cg, 1)
    s1, s2 = s1 * w, s2 * w  # the same sums of g = dy * w
    g_mean = s1.sum(dims, keepdim=True).div_(n)  # (B|1, G, 1, 1): mean(g)
    c1 = s2.sum(dims, keepdim=True).mul_(rstd.pow(3)).div_(-n)  # -rstd^3 * mean(g * (x - mean))
    c0 = -(rstd * g_mean + c1 * mean)  # (B|1, G, 1, 1)
    torch.mul(xv, c1, out=buf)  # (B, G, Cg, HW)
    buf.add_(c0).addcmul_(dyv, rstd * w)
    return buf.view(x.shape), dw, db


def _eager_forward(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, over_batch: bool,
                   eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_plain_forward` in few passes over memory, in place where it can: y, mean, var, rstd."""
    xv = _grouped(x, groups)  # (B, G, Cg, HW)
    dims = _stat_dims(over_batch)
    n = _count(xv, over_batch)
    mean = _sum(xv, dims).div_(n)  # (B|1, G, 1, 1)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (B, C, H, W), not a view: BIN adds to it in place
    yv = torch.sub(xv, mean, out=_grouped(y, groups))  # centred first: no cancellation in the variance
    var = _sum_sq(yv, dims).div_(n)  # (B|1, G, 1, 1), biased
    rstd = (var + eps).rsqrt_()
    yv.mul_(rstd * _channel_view(weight, groups))  # (B, G, Cg, HW) * (B|1, G, Cg, 1)
    if bias is not None:
        yv.add_(_channel_view(bias, groups))
    return y, mean, var, rstd


def _plain_stats(xv: Tensor, over_batch: bool, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """mean, biased var and rstd = 1 / sqrt(var + eps) of the grouped view, each (B|1, G, 1, 1)."""
    var, mean = torch.var_mean(xv, _stat_dims(over_batch), correction=0, keepdim=True)  # one pass, no cancellation
    return mean, var, torch.rsqrt(var + eps)


def _plain_forward(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, over_batch: bool,
                   eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward formula out of place: y (B, C, H, W), then mean, var, rstd (B|1, G, 1, 1)."""
    xv = _grouped(x, groups)  # (B, G, Cg, HW)
    mean, var, rstd = _plain_stats(xv, over_batch, eps)
    y = (xv - mean) * (rstd * _channel_view(weight, groups))  # (B, G, Cg, HW)
    if bias is not None:
        y = y + _channel_view(bias, groups)
    return y.reshape(x.shape).contiguous(), mean, var, rstd


def _grads_from_stats(x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, dy: Tensor, groups: int,
                      over_batch: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of `_AffineNorm` by the textbook formula, out of place, given the forward's statistics.

    With g = dy * weight and x_hat = (x - mean) * rstd, each statistic's group gets
        dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)) = a * dy + c1 * x + c0,
    the means taken from the per-(sample, channel) sums of dy and dy * x_hat, which are also
    dbias and dweight summed over the batch. The statistics are laid out per (sample, channel)
    first, so that both sums, and then dx, are one pass each over memory once compiled.
    """
    xv, dyv = _grouped(x, groups), _grouped(dy, groups)  # (B, G, Cg, HW)
    dims = _stat_dims(over_batch)
    n = _count(xv, over_batch)
    rows = (xv.shape[0], groups, xv.shape[2], 1)  # (B, G, Cg, 1): one entry per (sample, channel)
    mean_c, rstd_c = mean.expand(rows).contiguous(), rstd.expand(rows).contiguous()
    s1 = dyv.sum(-1, keepdim=True)  # (B, G, Cg, 1)
    s2 = (dyv * ((xv - mean_c) * rstd_c)).sum(-1, keepdim=True)  # (B, G, Cg, 1)
    w = _channel_view(weight, groups)  # (1, G, Cg, 1)
    g_mean = (s1 * w).sum(dims, keepdim=True) / n  # (B|1, G, 1, 1): mean(g)
    gx_mean = (s2 * w).sum(dims, keepdim=True) / n  # (B|1, G, 1, 1): mean(g * x_hat)
    c1 = (-rstd * rstd * gx_mean).expand(rows)  # (B, G, Cg, 1)
    c0 = (-rstd * g_mean).expand(rows) - c1 * mean_c  # (B, G, Cg, 1)
    dx = dyv * (rstd_c * w) + xv * c1 + c0  # (B, G, Cg, HW)
    return dx.reshape(x.shape), s2.sum(0).flatten(), s1.sum(0).flatten()


def _reference_grads(x: Tensor, weight: Tensor, dy: Tensor, groups: int, over_batch: bool,
                     eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """`_grads_from_stats` with the statistics recomputed from x, so that all of it is differentiable again."""
    mean, _, rstd = _plain_stats(_grouped(x, groups), over_batch, eps)
    return _grads_from_stats(x, weight, mean, rstd, dy, groups, over_batch)


def _check_input(x: Tensor, channels: int, layer: nn.Module) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{type(layer).__name__}({channels}) expects (B, {channels}, H, W), got {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------------
# Layers.
# ----------------------------------------------------------------------------------------------


class _PerChannelAffine(nn.Module):
    """Holds gamma (ones) and beta (zeros), one per channel, and eps."""

    def __init__(self, num_channels: int, eps: float):
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))  # gamma, (C,)
        self.bias = nn.Parameter(torch.zeros(num_channels))  # beta, (C,)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class _PerSampleNorm(_PerChannelAffine):
    """Statistics per sample over `groups` groups of channels; the same in train and eval."""

    def __init__(self, num_channels: int, groups: int, eps: float):
        super().__init__(num_channels, eps)
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.num_channels, self)
        return _affine_norm(x, self.weight, self.bias, self.groups, False, self.eps)[0]


class _BatchStatsNorm(_PerChannelAffine):
    """Batch normalisation's statistics: per channel over (B, H, W), with running averages."""

    def __init__(self, num_features: int, eps: float, momentum: float):
        super().__init__(num_features, eps)
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_features))  # (C,)
        self.register_buffer("running_var", torch.ones(num_features))  # (C,), unbiased
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _batch_norm(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """BN of x with the given affine: batch statistics in training, running ones in eval."""
        _check_input(x, self.num_channels, self)
        if not self.training:
            scale = torch.rsqrt(self.running_var + self.eps) * weight  # (C,)
            shift = bias - self.running_mean * scale  # (C,)
            return (x * scale[:, None, None]).add_(shift[:, None, None])  # (B, C, H, W)
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(f"{type(self).__name__} needs more than one value per channel in training, "
                             f"got input of shape {tuple(x.shape)}")
        y, mean, var = _affine_norm(x, weight, bias, self.num_channels, True, self.eps)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
            self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"


@register_norm("bn")
class BatchNorm2d(_BatchStatsNorm):
    """Batch normalisation (Ioffe & Szegedy 2015), as torch.nn.BatchNorm2d with affine and running stats."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        """
        Args:
            num_features: channels C of the (B, C, H, W) input.
            eps: added to the variance before the square root.
            momentum: weight of the new batch in the running averages (torch's convention).
        """
        super().__init__(num_features, eps, momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self._batch_norm(x, self.weight, self.bias)


@register_norm("in")
class InstanceNorm2d(_PerSampleNorm):
    """Instance normalisation (Ulyanov et al. 2016), as torch.nn.InstanceNorm2d(affine=True)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        """
        Args:
            num_features: channels C of the (B, C, H, W) input.
            eps: added to the variance before the square root.
        """
        super().__init__(num_features, groups=num_features, eps=eps)


@register_norm("bin")
class BatchInstanceNorm2d(_BatchStatsNorm):
    """Batch-instance normalisation (Nam & Kim 2018): y = (rho x_BN + (1 - rho) x_IN) gamma + beta.

    rho (one per channel, starting at 1, i.e. pure BN) is learned; call `constrain_()` after each
    optimizer step to keep it in [0, 1]. Computed as BN with gamma * rho plus IN with
    gamma * (1 - rho), the BN part keeping running statistics exactly like `BatchNorm2d`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        """
        Args:
            num_features: channels C of the (B, C, H, W) input.
            eps: added to the variances before the square root.
            momentum: weight of the new batch in the BN part's running averages.
        """
        super().__init__(num_features, eps, momentum)
        self.rho = nn.Parameter(torch.ones(num_features))  # (C,)

    def forward(self, x: Tensor) -> Tensor:
        gamma_bn = self.rho * self.weight  # (C,)
        gamma_in = self.weight - gamma_bn  # (C,): (1 - rho) * gamma
        y_in = _affine_norm(x, gamma_in, None, self.num_channels, False, self.eps)[0]
        return self._batch_norm(x, gamma_bn, self.bias).add_(y_in)  # (B, C, H, W)

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clamp rho into [0, 1] in place."""
        self.rho.clamp_(0.0, 1.0)


@register_norm("ln")
class LayerNorm2d(_PerSampleNorm):
    """Layer normalisation (Ba et al. 2016) over (C, H, W) per sample, with a per-channel affine.

    The affine is per channel (not per position as in nn.LayerNorm([C, H, W])), so the layer
    works at any resolution.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        """
        Args:
            num_channels: channels C of the (B, C, H, W) input.
            eps: added to the variance before the square root.
        """
        super().__init__(num_channels, groups=1, eps=eps)


@register_norm("gn")
class GroupNorm2d(_PerSampleNorm):
    """Group normalisation (Wu & He 2018), as torch.nn.GroupNorm."""

    def __init__(self, num_channels: int, num_groups: int = 8, eps: float = 1e-5):
        """
        Args:
            num_channels: channels C of the (B, C, H, W) input; a multiple of `num_groups`.
            num_groups: groups G of C / G channels sharing one mean and variance per sample.
            eps: added to the variance before the square root.
        """
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm2d: num_channels={num_channels} is not divisible by num_groups={num_groups}")
        super().__init__(num_channels, groups=num_groups, eps=eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_groups={self.groups}"


@register_norm("none")
class NoNorm(nn.Identity):
    """No normalisation: the identity, constructible like the other layers."""

    def __init__(self, num_channels: int):
        """
        Args:
            num_channels: ignored, so that `norm_layer(channels)` works for every name.
        """
        super().__init__()
        self.num_channels = num_channels


register_norm("torch-bn")(nn.BatchNorm2d)  # torch's own, the sanity reference for "bn"


# ----------------------------------------------------------------------------------------------
# Entry points.
# ----------------------------------------------------------------------------------------------


def get_norm_layer(name: str, **kwargs) -> Callable[[int], nn.Module]:
    """The constructor registered under `name`, taking the channel count.

    Keyword arguments the layer accepts (e.g. `num_groups` for "gn", `eps`) are bound with
    functools.partial. One that another registered layer accepts is ignored, so one call site
    serves every name (`get_norm_layer(name, num_groups=g)` for "bn" too); one that no layer
    accepts is an error, so that a misspelt argument is not silently dropped.

    Raises:
        UsageError: `name` is not registered, or a keyword argument no layer accepts.
    """
    layer = NORM_LAYERS.get(name)
    params = _keywords(layer)
    known = set().union(*(k for k in (_keywords(c) for _, c in NORM_LAYERS.items()) if k is not None))
    unknown = sorted(set(kwargs) - known)
    if unknown and params is not None:
        raise UsageError(f"get_norm_layer({name!r}): unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                         f"normalisation layers take {', '.join(sorted(known))} "
                         f"({name!r} takes {', '.join(sorted(params)) or 'none'})")
    accepted = {k: v for k, v in kwargs.items() if params is None or k in params}
    return functools.partial(layer, **accepted) if accepted else layer


def _keywords(layer: Callable) -> set[str] | None:
    """Names `layer` accepts after the channel count; None when it takes any (**kwargs)."""
    params = list(inspect.signature(layer).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def constrain_norms_(model: nn.Module) -> None:
    """Call `constrain_()` on every submodule that has one (BIN's rho clamp); after each optimizer step."""
    for module in model.modules():
        constrain = getattr(module, "constrain_", None)
        if callable(constrain):
            constrain()


def bin_rhos(model: nn.Module) -> dict[str, list[float]]:
    """Module name -> rho per channel, for every BatchInstanceNorm2d in `model` (network order)."""
    return {name: m.rho.detach().cpu().tolist() for name, m in model.named_modules()
            if isinstance(m, BatchInstanceNorm2d)}
