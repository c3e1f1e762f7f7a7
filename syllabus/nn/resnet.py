"""ResNet with 6n+2 layers (He et al. 2016, section 4.2), normalisation as a layer argument.

Stem: one 3x3 convolution (16 filters). Three stages of n basic blocks with 16, 32 and
64 filters at full, 1/2 and 1/4 of the input resolution (256/128/64 for a 256x256
image); the first block of stages 2 and 3 halves the resolution with stride 2 and a
1x1 projection shortcut. Global average pool and one linear layer. Weighted layers:
1 + 2n * 3 + 1 = 6n + 2 (projection shortcuts are not counted, as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    """conv3x3-norm-relu-conv3x3-norm, plus the shortcut, then relu.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: 2 to halve the resolution, else 1.
        norm_layer: constructor taking a channel count.
        residual: False drops the shortcut (the residual-connection ablation).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer,
                 residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = norm_layer(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = norm_layer(out_channels)
        self.act = nn.ReLU()  # not in place: with norm "none" it would overwrite conv1's output, which hooks see
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or in_channels != out_channels):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), norm_layer(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H/s, W/s)
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act(out)


class ResNet(nn.Module):
    """The CIFAR-style ResNet of 6n+2 layers.

    Args:
        num_classes: size of the linear head.
        n: basic blocks per stage (depth 6n+2).
        norm_layer: constructor taking a channel count (see `syllabus.nn.norms.get_norm_layer`).
        widths: filters of the three stages.
        in_channels: image channels.
        residual: False builds the same network without shortcuts; a sequence of n * len(widths)
            flags, block by block and stage by stage, removes them only where False.
    """

    def __init__(self, num_classes: int, n: int = 2, norm_layer: NormLayer = nn.BatchNorm2d,
                 widths: Sequence[int] = (16, 32, 64), in_channels: int = 3, residual: bool | Sequence[bool] = True):
        super().__init__()
        flags = [residual] * (n * len(widths)) if isinstance(residual, bool) else [bool(r) for r in residual]
        if len(flags) != n * len(widths):
            raise ValueError(f"residual: {len(flags)} flags for {n * len(widths)} blocks")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), norm_layer(widths[0]), nn.ReLU()
        )
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [BasicBlock(c if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, norm_layer,
                                 flags[i * n + j])
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 64, H/4, W/4): the last stage's feature map."""
        return self.stages(self.stem(x))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 64, h, w) -> (B, num_classes)."""
        return self.fc(self.pool(feats).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def count_weighted_layers(model: nn.Module) -> int:
    """Convolutions and linear layers on the main path (1x1 projection shortcuts excluded)."""
    count = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in name:
            count += 1
    return count
