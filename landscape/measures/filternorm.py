"""Filter normalization (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", Sec. 4),
in one place for the gradient amplitude (paper Sec. 5.2) and the flatness slices (Sec. 5.3).

A filter is one output unit of a layer: row i of a linear weight (out, in), slice [i] of a conv
weight (out, in, kh, kw) (docs/measurements.md). For a tensor t aligned with the parameters theta:

    direction (5.3):  d_f <- d_f / ||d_f|| * ||theta_f||
    gradient  (5.2):  g_f <- g_f * ||theta_f||,  amplitude = || all scaled g_f ||_2

Modes: "filter" (the paper's text, the default) or "layer", where each tensor is one unit, as the
authors' leftover gradient-norm code scaled it. 1-D parameters (biases, BatchNorm weight and bias)
are not filters: by default, as Li et al.'s "ignore biasbn", their direction entries are zero and
they are left out of the amplitude; `include_biasbn` treats each as one filter instead. Only
parameters are ever perturbed: BatchNorm running statistics are buffers and stay as they are.

Every function accepts tensors with `batch` leading axes (e.g. [K, *shape] for K stacked models).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from landscape.measures.options import Normalization


def parameters_of(model: nn.Module, state: Mapping[str, torch.Tensor]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, buffers) of a state dict, split by the model's own parameter names; the
    parameters in the model's named_parameters() order, whatever the state dict's order (a run
    file's reads back sorted by name), since seeded draws go parameter by parameter in it."""
    names = [n for n, _ in model.named_parameters()]
    taken = set(names)
    return ({k: state[k] for k in names if k in state},
            {k: v for k, v in state.items() if k not in taken})


def unit_norms(t: torch.Tensor, mode: str, batch: int = 0) -> torch.Tensor:
    """||t_f|| for every unit f of t, shaped to broadcast against t: per output row/channel in
    "filter" mode, the whole tensor in "layer" mode and for 1-D tensors (one filter each)."""
    lead = t.shape[:batch]
    if mode == "filter" and t.dim() - batch > 1:
        rows = t.reshape(*lead, t.shape[batch], -1)             # [*B, out, rest]
        return rows.norm(dim=-1).reshape(*lead, t.shape[batch], *([1] * (t.dim() - batch - 1)))
    return t.reshape(*lead, -1).norm(dim=-1).reshape(*lead, *([1] * (t.dim() - batch)))


def normalize_direction(direction: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                        norm: Normalization, batch: int = 0) -> dict[str, torch.Tensor]:
    """d_f / ||d_f|| * ||theta_f|| per unit (Li et al. 2018, Eq. in Sec. 4); excluded ones zero."""
    out = {}
    for name, theta in params.items():
        d = direction[name]
        if not norm.includes(theta, batch):
            out[name] = torch.zeros_like(d)
            continue
        # A Gaussian unit is never exactly zero; the floor only keeps a degenerate input finite.
        scale = unit_norms(theta, norm.mode, batch) / unit_norms(d, norm.mode, batch).clamp_min(1e-30)
        out[name] = d * scale
    return out


def scaled_gradient(grads: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                    norm: Normalization, batch: int = 0) -> dict[str, torch.Tensor]:
    """g_f * ||theta_f|| per unit (paper Sec. 5.2), for the included parameters only."""
    return {name: grads[name] * unit_norms(theta, norm.mode, batch)
            for name, theta in params.items() if norm.includes(theta, batch)}


def amplitude(grads: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
              norm: Normalization, batch: int = 0) -> torch.Tensor:
    """The gradient amplitude of paper Sec. 5.2: the l2 norm of the filter-normalized gradient over
    all included parameters. Shape: the `batch` leading axes ([] for one model)."""
    scaled = scaled_gradient(grads, params, norm, batch)
    squares = [g.reshape(*g.shape[:batch], -1).square().sum(-1) for g in scaled.values()]
    return torch.stack(squares).sum(0).sqrt()


def gaussian_directions(params: Mapping[str, torch.Tensor], seed: int, norm: Normalization, *,
                        count: int = 1) -> list[dict[str, torch.Tensor]]:
    """`count` random directions N(0, I), filter-normalized against `params`.

    The raw draws depend only on the seed and the parameter shapes (drawn in float32 on the CPU, for
    every parameter in order, excluded ones too), so one seed gives the same direction on every
    device and under every bias/BN policy, before each model normalizes it to its own filters. The
    first of two directions (a surface's x axis) is the direction of a 1-D slice with that seed.
    """
    generator = torch.Generator().manual_seed(seed)
    raw = [{name: torch.randn(theta.shape, generator=generator) for name, theta in params.items()}
           for _ in range(count)]
    return [normalize_direction({n: d[n].to(theta) for n, theta in params.items()}, params, norm)
            for d in raw]
