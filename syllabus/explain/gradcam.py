"""Grad-CAM (Selvaraju et al. 2017): where in the image a CNN found the evidence for a class.

For a target class c with score y_c (the logit) and the output A of a chosen layer,
(B, K, h, w), each channel k gets the weight

    w_k = mean over (i, j) of d y_c / d A_k[i, j]          (eq. 1: global-average-pooled gradient)

and the map is ReLU(sum_k w_k A_k), (B, h, w) (eq. 2). With several layers, each layer's map is
min-max normalised per image and upsampled bilinearly to the input, the maps are averaged and the
mean is min-max normalised per image into [0, 1] again (pytorch-grad-cam's aggregation, so layers
of different scale count alike, and its maps to 1e-4 at any mix of resolutions). A map that is
zero everywhere (no positive evidence at all) stays zero. `layer_maps` is the same aggregation at
the finest of the layers' resolutions (the map before upsampling when they all share one).

    with GradCAM(model, ["stages.2.1.conv2"]) as cam:
        out = cam(x, targets=y)   # out.maps (B, H, W) in [0, 1]; out.logits (B, K)

The forward hooks live only inside the `with` block; so does eval mode (each module's own
train/eval flag is restored on exit). Gradients are switched on inside each call, so it works
under a caller's `torch.no_grad()`. One forward and one `torch.autograd.grad` per batch: the
target scores of different images do not interact (eval mode), so the gradient of their sum
gives every image its own gradient, and no parameter gradient is computed or accumulated.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from syllabus.errors import UsageError

EPS = 1e-7  # in the min-max normalisation, as pytorch-grad-cam
MAX_LISTED_LAYERS = 40


@dataclass
class CamOutput:
    """What one Grad-CAM call returns (all detached).

    maps: (B, H, W) in [0, 1], at the input's resolution.
    layer_maps: (B, h, w) in [0, 1], the aggregated map at the finest of the layers' resolutions.
    logits: (B, K) of the forward pass that was explained.
    targets: (B,) the class explained in each image.
    """

    maps: torch.Tensor
    layer_maps: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Name -> module for each of `names`, as `dict(model.named_modules())` spells them.

    Raises:
        UsageError: for an unknown or empty list of names, listing the model's layer names.
    """
    modules = dict(model.named_modules())
    if not names:
        raise UsageError("no layer given for Grad-CAM; " + _valid_names(modules, ""))
    for name in names:
        if name not in modules or not name:
            raise UsageError(f"unknown layer {name!r}; " + _valid_names(modules, name))
    return {name: modules[name] for name in names}


def _valid_names(modules: dict[str, nn.Module], wrong: str) -> str:
    """'did you mean ...; the model's layers: a, b, ... (and N more)'."""
    names = [n for n in modules if n]
    close = difflib.get_close_matches(wrong, names, n=3, cutoff=0.6) if wrong else []
    hint = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(names[:MAX_LISTED_LAYERS])
    more = f", ... (and {len(names) - MAX_LISTED_LAYERS} more)" if len(names) > MAX_LISTED_LAYERS else ""
    return f"{hint}the model's layers: {shown}{more}"


def last_stage_convs(model: nn.Module) -> list[str]:
    """The convolutions of a ResNet's last stage (conv1, conv2 of each of its n blocks): the
    2n layers at 1/4 of the input resolution, e.g. `stages.2.0.conv1` ... `stages.2.1.conv2`."""
    stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.Sequential) or len(stages) == 0:
        raise UsageError(f"{type(model).__name__} has no `stages`; name the Grad-CAM layers explicitly")
    last = str(len(stages) - 1)
    return [f"stages.{last}.{name}" for name, m in stages[-1].named_modules()
            if isinstance(m, nn.Conv2d) and "shortcut" not in name]


def resolve_targets(targets: torch.Tensor | int | None, logits: torch.Tensor) -> torch.Tensor:
    """The class to explain per image: None -> the predicted class; an int -> that class for
    every image; a (B,) tensor -> one class per image (e.g. the true labels). Returns (B,) long."""
    batch, num_classes = logits.shape
    if targets is None:
        return logits.argmax(1)
    t = torch.as_tensor(targets, device=logits.device).long()
    t = t.expand(batch) if t.ndim == 0 else t
    if t.shape != (batch,):
        raise ValueError(f"targets must be an int or of shape ({batch},), got {tuple(t.shape)}")
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(f"target classes must be in [0, {num_classes}), got {t.tolist()}")
    return t


def cam_from_gradients(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k A_k) with w_k the spatial mean of the gradient. (B, K, h, w) x2 -> (B, h, w)."""
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    return (weights * acts).sum(1).clamp_min(0)  # (B, h, w)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1]: (m - min) / (max - min + eps). (B, h, w) -> (B, h, w)."""
    flat = maps.flatten(1)  # (B, h*w)
    low = flat.min(1).values[:, None, None]  # (B, 1, 1)
    shifted = maps - low
    return shifted / (shifted.flatten(1).max(1).values[:, None, None] + EPS)


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, as OpenCV's INTER_LINEAR). (B, h, w) -> (B, *size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def aggregate(layer_maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's aggregation: normalise each layer's (B, h_l, w_l) map, resize it to `size`,
    average over layers, normalise. -> (B, *size).

    Resizing is linear, so the normalised maps of layers that share a resolution are summed first
    and resized once: one resize per resolution, not per layer.
    """
    sums: dict[tuple[int, int], torch.Tensor] = {}
    for m in layer_maps:
        key = (m.shape[-2], m.shape[-1])
        sums[key] = sums[key] + normalise(m) if key in sums else normalise(m)  # (B, h_l, w_l)
    total = sum(resize(s, size) for s in sums.values())  # (B, *size)
    return normalise(total / len(layer_maps))


class GradCAM:
    """Grad-CAM on one or several named layers of a classifier; use it as a context manager.

    Args:
        model: maps (B, C, H, W) images to (B, K) logits.
        layers: module names as in `model.named_modules()`, each returning a (B, K, h, w)
            feature map once per forward pass (e.g. `stages.2.1.conv2`; not a module that
            is called twice, like a shared activation).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model = model
        self.layers = resolve_layers(model, list(layers))
        self._acts: dict[str, list[torch.Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modes: dict[nn.Module, bool] = {}

    def __enter__(self) -> GradCAM:
        self._modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._saver(name)))
        return self

    def __exit__(self, *exc) -> None:  # never swallows an exception
        self.release()

    def release(self) -> None:
        """Remove the hooks, drop saved activations and restore every module's train/eval mode."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._acts.clear()
        for module, training in self._modes.items():
            module.training = training
        self._modes.clear()

    def _saver(self, name: str):
        def save(module: nn.Module, inputs, output) -> None:
            self._acts.setdefault(name, []).append(output)

        return save

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | int | None = None) -> CamOutput:
        """Explain `targets` (None: the predicted class; an int; or (B,) classes) for x (B, C, H, W)."""
        if not self._handles:
            raise RuntimeError("call GradCAM inside `with GradCAM(model, layers) as cam:`")
        if torch.is_inference_mode_enabled():
            raise RuntimeError("Grad-CAM needs gradients; call it outside torch.inference_mode()")
        self._acts.clear()
        try:
            with torch.enable_grad():
                logits = self.model(x.detach().requires_grad_(True))  # (B, K); input grad makes acts differentiable
                acts = self._layer_outputs()
                t = resolve_targets(targets, logits.detach())
                score = logits.gather(1, t[:, None]).sum()  # sum_b y_{t_b}(x_b)
                grads = torch.autograd.grad(score, acts)
        finally:
            self._acts.clear()
        cams = [cam_from_gradients(a.detach(), g) for a, g in zip(acts, grads)]  # (B, h_l, w_l) each
        finest = max((tuple(c.shape[-2:]) for c in cams), key=lambda hw: hw[0] * hw[1])
        layer_maps = aggregate(cams, finest)  # (B, h, w)
        maps = aggregate(cams, tuple(x.shape[-2:]))  # (B, H, W)
        return CamOutput(maps, layer_maps, logits.detach(), t)

    def _layer_outputs(self) -> list[torch.Tensor]:
        outs = []
        for name in self.layers:
            seen = self._acts.get(name, [])
            if len(seen) != 1:
                raise UsageError(f"layer {name!r} ran {len(seen)} times in one forward pass; Grad-CAM needs "
                                 "a layer that runs once (e.g. a convolution, not a shared activation)")
            if seen[0].ndim != 4:
                raise UsageError(f"layer {name!r} outputs shape {tuple(seen[0].shape)}; Grad-CAM needs a "
                                 "(B, K, h, w) feature map")
            outs.append(seen[0])
        return outs


def heatmap_rgb(maps: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Colour maps in [0, 1]: (..., H, W) -> (..., H, W, 3) in [0, 1]."""
    from matplotlib import colormaps

    return colormaps[cmap](np.clip(maps, 0, 1))[..., :3]


def overlay(images: np.ndarray, maps: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The heat map over the image: (1 - alpha) * image + alpha * colour(map).

    Args:
        images: (..., H, W, 3) in [0, 1].
        maps: (..., H, W) in [0, 1].
        alpha: weight of the heat map.
        cmap: a matplotlib colormap name.

    Returns:
        (..., H, W, 3) in [0, 1].
    """
    return (1 - alpha) * np.clip(images, 0, 1) + alpha * heatmap_rgb(maps, cmap)
