"""Residual networks for small images (He et al. 2016): ResNet-18 for SVHN, ResNet-44 for CIFAR.

Both are the CIFAR form of the ResNet: a 3x3 convolution at full resolution (no 7x7 stride-2 stem,
no max-pool), then stages of basic blocks (two 3x3 convolutions, each followed by BatchNorm, ReLU
after the sum with the shortcut); each stage after the first halves the resolution in its first
block; global average pooling and one linear layer. They differ in depth, width and shortcut:

- resnet44 (He et al. 2016, Sec. 4.2; the paper used Idelbayev's implementation of it): 3 stages of
  7 blocks with 16, 32, 64 channels; "option A" shortcuts, parameter-free: where a block changes
  shape the input is subsampled by 2 and the new channels are zeros. 0.66M parameters.
- resnet18: 4 stages of 2 blocks with 64, 128, 256, 512 channels; projection shortcuts (1x1
  convolution and BatchNorm, "option B") where a block changes shape. 11.17M parameters for 10
  classes. The paper used torchvision's ResNet-18, the ImageNet form with a 7x7 stride-2 stem and a
  max-pool, which on 32 x 32 inputs works on 8 x 8 maps from the start; ours keeps full resolution.

The modules hold no state beyond parameters and BatchNorm buffers, so they run under
torch.func.functional_call (and vmap) with the trainer's stacked tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import BadInput

# name -> (channels, blocks) of each stage, and the shortcut of blocks that change shape
ARCHITECTURES = {
    "resnet18": (((64, 2), (128, 2), (256, 2), (512, 2)), "projection"),
    "resnet44": (((16, 7), (32, 7), (64, 7)), "pad"),
}


class PadShortcut(nn.Module):
    """Option A: subsample by `stride` and append zero channels up to `channels`; no parameters."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # pads (W, H, C): zeros after the channels


def shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(out_channels - in_channels, stride)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, kind: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, stages: Sequence[tuple[int, int]], out_features: int, *,
                 kind: str) -> None:
        super().__init__()
        width = stages[0][0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks = []
        for stage, (channels, count) in enumerate(stages):
            for i in range(count):
                blocks.append(BasicBlock(width, channels, 2 if stage and not i else 1, kind))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, out_features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 initialization for ReLU networks
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))               # [N, C, h, w]
        return self.head(features.mean(dim=(-2, -1)))      # global average pooling -> [N, classes]


def build(name: str, input_shape: tuple[int, ...], out_features: int) -> ResNet:
    """resnet18 or resnet44 for inputs [channels, height, width]."""
    if name not in ARCHITECTURES:
        raise BadInput(f"unknown ResNet {name!r}; choose from {', '.join(ARCHITECTURES)}")
    if len(input_shape) != 3:
        raise BadInput(f"{name} needs image inputs [channels, height, width], got {input_shape}")
    stages, kind = ARCHITECTURES[name]
    return ResNet(input_shape[0], stages, out_features, kind=kind)
