"""The networks of `resnet-transfer`: this package's small ResNet (quick) and torchvision's ResNets
(full), with skip connections cut in chosen blocks, per-layer gradient norms, and the forward pass
in pieces that the fine-tuning strategies need.

Both kinds expose the same pieces: `levels(model)` (stem, then one module per stage), a global
average pool and the linear head `model.fc`. A skip is cut by flag on our `BasicBlock` and, on a
torchvision block, by giving that one block a forward without the identity term (the weights and
the state dict are untouched, so a trained intact model can lose its skips at inference).
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models.resnet import BasicBlock as TvBasicBlock
from torchvision.models.resnet import Bottleneck as TvBottleneck

from syllabus.errors import UsageError
from syllabus.explain.features import stage_blocks
from syllabus.nn.norms import get_norm_layer
from syllabus.nn.resnet import ResNet
from syllabus.nn.weights import fit_weights, read_weights

INITS = ("kaiming", "xavier", "orthogonal")
TV_BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3],
             "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}  # residual blocks per stage
Where = set[tuple[int, int]]  # (stage index, block index), both 0-based


# --- which blocks: "all", "stage2", "stage1+stage3.0", "" ---


def parse_blocks(spec: str, blocks_per_stage: Sequence[int], key: str = "model.cut") -> Where:
    """Blocks named by `spec`: "" or "none", "all", or "+"-joined "stageK" / "stageK.J" (1-based K, 0-based J)."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return set()
    every = {(s, b) for s, n in enumerate(blocks_per_stage) for b in range(n)}
    if spec == "all":
        return every
    out: Where = set()
    for token in spec.split("+"):
        stage, _, block = token.strip().removeprefix("stage").partition(".")
        s = -1
        try:
            s = int(stage) - 1
            chosen = {(s, int(block))} if block else {(s, b) for b in range(blocks_per_stage[s])}
        except (ValueError, IndexError):
            chosen = set()
        if s < 0 or not chosen or not chosen <= every:
            raise UsageError(f"{key}={spec!r}: {token!r} names no block; use all, none or +-joined stageK / "
                             f"stageK.J (stages 1-{len(blocks_per_stage)}, blocks per stage {list(blocks_per_stage)})")
        out |= chosen
    return out


# --- skip connections ---


def _forward_without_skip(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision BasicBlock / Bottleneck with the `+ identity` left out."""
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if isinstance(self, TvBottleneck):
        out = self.bn3(self.conv3(self.relu(out)))
    return self.relu(out)


def has_skip(block: nn.Module) -> bool:
    if hasattr(block, "residual"):
        return bool(block.residual)
    return "forward" not in block.__dict__


def set_skip(block: nn.Module, on: bool) -> None:
    """Keep (`on`) or cut the skip connection of one residual block."""
    if hasattr(block, "residual"):  # syllabus.nn.resnet.BasicBlock
        block.residual = on
    elif isinstance(block, (TvBasicBlock, TvBottleneck)):
        if on:
            block.__dict__.pop("forward", None)
        else:
            block.forward = types.MethodType(_forward_without_skip, block)
    else:
        raise TypeError(f"{type(block).__name__} is not a residual block this module knows")


def cut_skips(model: nn.Module, where: Where) -> None:
    """Cut the skips of the blocks `where` for good (training without them)."""
    blocks = stage_blocks(model)
    for s, b in where:
        set_skip(blocks[s][b], False)


@contextmanager
def skips_cut(model: nn.Module, where: Where) -> Iterator[nn.Module]:
    """Within the block, the blocks `where` run without their skips; each block's state is restored after."""
    blocks = stage_blocks(model)
    before = {(s, b): has_skip(blocks[s][b]) for s, b in where}
    try:
        cut_skips(model, where)
        yield model
    finally:
        for (s, b), on in before.items():
            set_skip(blocks[s][b], on)


def blocks_per_stage(model: nn.Module) -> list[int]:
    return [len(blocks) for blocks in stage_blocks(model)]


# --- layers, gradients and the forward in pieces ---


def main_path_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Weights of the convolutions and the linear head on the main path, input to output (shortcuts excluded)."""
    return [(name, m.weight) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in name and "downsample" not in name]


def layer_grad_norms(model: nn.Module) -> list[float]:
    """L2 norm of the current gradient of each main-path weight (0 where it has none)."""
    norms = [p.grad.detach().norm() if p.grad is not None else torch.zeros(()) for _, p in main_path_layers(model)]
    return torch.stack([n.float().cpu() for n in norms]).tolist()


def levels(model: nn.Module) -> list[nn.Module]:
    """The stem, then each stage, as modules applied in turn."""
    if isinstance(model, ResNet):
        return [model.stem, *model.stages]
    return [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
            *(getattr(model, f"layer{i}") for i in range(1, 5))]


def forward_levels(model: nn.Module, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Apply levels[start:stop] to x: (B, C, H, W) -> (B, C', H', W')."""
    for level in levels(model)[start:stop]:
        x = level(x)
    return x


def classify_map(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The last stage's map (B, C, h, w) -> logits (B, K): global average pool and the linear head."""
    return model.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh linear head for a new label set (same input width)."""
    model.fc = nn.Linear(model.fc.in_features, num_classes).to(model.fc.weight.device)
    return model


# --- building them ---


def small_resnet(num_classes: int, n: int, widths: Sequence[int], norm: str, cut: str = "",
                 init: str = "kaiming") -> ResNet:
    """Our CIFAR-style ResNet (6n+2 layers for three stages) with skips removed in the blocks `cut` names."""
    where = parse_blocks(cut, [n] * len(widths))
    flags = [(s, b) not in where for s in range(len(widths)) for b in range(n)]
    model = ResNet(num_classes, n=n, norm_layer=get_norm_layer(norm), widths=widths, residual=flags)
    _initialise(model, init)
    return model


def _initialise(model: nn.Module, init: str) -> None:
    """Re-draw convolution weights with a named scheme (`kaiming` is the ResNet's own)."""
    if init not in INITS:
        raise UsageError(f"model.init={init!r}; valid: {', '.join(INITS)}")
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and init == "xavier":
            nn.init.xavier_normal_(m.weight)
        elif isinstance(m, nn.Conv2d) and init == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=nn.init.calculate_gain("relu"))


def torchvision_resnet(arch: str, weights: str, num_classes: int, download: bool = False) -> nn.Module:
    """torchvision's `arch` (e.g. "resnet152") with `weights` (a name such as "IMAGENET1K_V2", a .pth
    file, or "" / "none" for random initialisation) and a fresh `num_classes` head.

    Named weights are fetched only with `download`; otherwise they must already be in torch's cache.
    """
    weights_available(arch, weights, download)
    model = get_model(arch)
    if weights.lower() not in ("", "none"):
        fit_weights(model, _weights_state(arch, weights, download), "model.weights", weights, arch)
    return replace_head(model, num_classes)


def _weights_entry(arch: str, weights: str):
    try:
        return get_model_weights(arch)[weights]
    except KeyError:
        names = ", ".join(get_model_weights(arch).__members__)
        raise UsageError(f"model.weights={weights!r} is not a weight set of {arch}; valid: {names}, none") from None


def weights_available(arch: str, weights: str, download: bool) -> None:
    """Raise UsageError, before anything trains, when `weights` can be neither found nor (with `download`) fetched."""
    if arch not in TV_BLOCKS:
        raise UsageError(f"model.arch={arch!r}; valid: small, {', '.join(TV_BLOCKS)}")
    if weights.lower() in ("", "none"):
        return
    if weights.endswith((".pth", ".pt")):
        if not Path(weights).expanduser().is_file():
            raise UsageError(f"model.weights={weights}: no such file")
        return
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights_entry(arch, weights).url).name
    if not cached.is_file() and not download:
        raise UsageError(f"{arch} {weights} weights are not in {cached}; fetch them with --set data.download=true, "
                         "give a file with --set model.weights=PATH.pth, or --set model.weights=none")


def _weights_state(arch: str, weights: str, download: bool) -> dict:
    weights_available(arch, weights, download)
    if weights.endswith((".pth", ".pt")):
        return read_weights(weights, "model.weights")
    return _weights_entry(arch, weights).get_state_dict(progress=True, check_hash=True)
