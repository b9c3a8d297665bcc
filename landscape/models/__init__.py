"""Models by name: MLPs (the paper's synthetic and MNIST networks) and, for image sets, ResNets.

`build_model` initializes deterministically from a seed without touching the global RNG, on the
CPU first, so that a seed gives the same initial weights on every device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from landscape.config import ModelConfig, RunConfig
from landscape.device import dtype_of
from landscape.errors import BadInput
from landscape.models import resnet


class MLP(nn.Sequential):
    """Flatten, then `depth` hidden layers of `width` ReLU units, then a linear output layer.

    With `batch_norm`, each hidden layer is Linear (no bias) -> BatchNorm1d -> ReLU, as in the
    authors' demo code.
    """

    def __init__(self, in_features: int, out_features: int, *, depth: int, width: int,
                 batch_norm: bool = False) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            fan_in = width
        layers.append(nn.Linear(fan_in, out_features))
        super().__init__(*layers)


def output_units(num_classes: int, loss: str) -> int:
    """The logistic loss scores binary data with one output; softmax CE needs one per class."""
    return 1 if loss == "logistic" else num_classes


def build_model(config: ModelConfig, input_shape: tuple[int, ...], out_features: int, *,
                seed: int = 0) -> nn.Module:
    """A freshly initialized model on the CPU, the same for the same seed on every machine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.name in ("mlp", "mlp_bn"):
            return MLP(math.prod(input_shape), out_features, depth=config.depth,
                       width=config.width, batch_norm=config.name == "mlp_bn")
        if config.name in ("resnet18", "resnet44"):
            return resnet.build(config.name, input_shape, out_features)
    raise BadInput(f"unknown model {config.name!r}")


def run_model(config: RunConfig, input_shape: tuple[int, ...], num_classes: int, *,
              seed: int = 0, device: torch.device | str | None = None) -> nn.Module:
    """The freshly initialized model a run's config describes, for data of `input_shape` and
    `num_classes` (its outputs follow the run's loss), in the run's dtype, moved to `device`
    (default: where build_model made it; a seed gives the same weights anywhere)."""
    model = build_model(config.model, input_shape,
                        output_units(num_classes, config.objective.loss), seed=seed)
    return model.to(device=device, dtype=dtype_of(config.dtype))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
