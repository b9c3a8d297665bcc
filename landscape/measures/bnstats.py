"""BatchNorm running statistics re-estimated at perturbed parameters (`bn_stats="recompute"`):
what a slice's losses (slices.py) and its Hessians (convexity.py) see at each point.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from landscape.measures.sources import Source


def bn_statistics(stat_model: nn.Module, params: dict[str, torch.Tensor],
                  buffers: dict[str, torch.Tensor], source: Source, rows: int
                  ) -> dict[str, torch.Tensor]:
    """BatchNorm running statistics re-estimated at `params` from the source's inputs:
    `stat_model` is in train mode with momentum None (a cumulative average over batches; exact
    with one batch), and functional_call updates the fresh buffers we pass in place."""
    fresh = {k: (torch.ones_like(v) if k.endswith("running_var") else torch.zeros_like(v))
             for k, v in buffers.items()}
    with torch.no_grad():
        for x, _ in source.batches(rows):
            functional_call(stat_model, {**params, **fresh}, (x,))
    return fresh


def statistics_model(template: nn.Module) -> nn.Module:
    """A copy of the model that re-estimates BatchNorm statistics when called (see bn_statistics)."""
    model = copy.deepcopy(template).train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    return model
