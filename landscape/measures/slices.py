"""Slices and surfaces of the loss (Li et al. 2018, paper Sec. 5.3) on any model: loss and accuracy
at points theta + a d1 (+ b d2) along filter-normalized directions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.errors import BadInput
from landscape.flooding import Loss, check_loss
from landscape.measures.evaluation import mean_loss
from landscape.measures.filternorm import gaussian_directions, normalize_direction, parameters_of
from landscape.measures.model import Tensors, _dtype, _norm, _prepared, check_data
from landscape.measures.options import BN_STATS, Normalization
from landscape.measures.sources import Source, as_sources
from landscape.measures.stack import Ensemble
from landscape.memory import rows_of


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


def evaluate_points(template: nn.Module, state: Mapping[str, torch.Tensor],
                    directions: Sequence[Mapping[str, torch.Tensor]], coords: np.ndarray,
                    sources: Mapping[str, Source], loss: Loss, *, members: int = 1,
                    bn_stats: str = "checkpoint") -> dict[str, np.ndarray]:
    """Loss and accuracy on every source (`<name>_loss`, `<name>_acc`) at theta + sum_j
    coords[p, j] * directions[j] for every point p (coords [P, D]): `members` points stacked as one
    vmapped Ensemble, or one at a time (members = 1, the fast choice on a CPU). Each perturbed
    parameter set is written once into the ensemble's own stacked tensors (allocated once per
    call, not per point) and evaluated on every source; buffers (BN running statistics) are never
    perturbed, or, with bn_stats "recompute", re-estimated at each point from the "train" source."""
    params, buffers = parameters_of(template, state)
    first = next(iter(params.values()))
    if bn_stats == "recompute":
        members, stat_model = 1, statistics_model(template)
    members = max(1, min(members, len(coords)))
    rows = {name: rows_of(template, source, members, first.device)
            for name, source in sources.items()}
    slots: dict[int, Ensemble] = {}  # by size: the last chunk may be smaller
    out = {f"{name}_{m}": np.full(len(coords), np.nan) for name in sources for m in ("loss", "acc")}
    for start in range(0, len(coords), members):
        chunk = coords[start:start + members].tolist()
        if len(chunk) not in slots:
            slots[len(chunk)] = Ensemble(template, [dict(state)] * len(chunk),
                                         device=first.device, dtype=first.dtype)
        ensemble = slots[len(chunk)]
        with torch.no_grad():
            for k, c in enumerate(chunk):
                for n, theta in params.items():  # theta + sum_j c_j d_j
                    slot = ensemble.params[n][k].copy_(theta)
                    for a, d in zip(c, directions):
                        slot.add_(d[n], alpha=a)
                if bn_stats == "recompute":
                    point = {n: p[k] for n, p in ensemble.params.items()}
                    fresh = bn_statistics(stat_model, point, buffers, sources["train"],
                                          rows["train"])
                    for n, value in fresh.items():
                        ensemble.buffers[n][k].copy_(value)
        for name, source in sources.items():
            split_loss, split_acc, _ = mean_loss(ensemble, source, loss, rows[name])
            out[f"{name}_loss"][start:start + len(chunk)] = split_loss.numpy()
            out[f"{name}_acc"][start:start + len(chunk)] = split_acc.numpy()
    return out


@dataclass(frozen=True)
class Slice:
    """Loss and accuracy along one direction (a slice) or two (a surface, arrays [ny, nx]).

    `metrics` has loss-landscape's names: "<split>_loss", "<split>_acc" for each data split
    ("train" when one data source was given). `directions` are the filter-normalized directions
    used ({parameter name: tensor}), which `direction=` / `directions=` take back."""

    x: np.ndarray
    y: np.ndarray | None
    metrics: dict[str, np.ndarray]
    directions: list[Tensors] = field(repr=False)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.metrics[key]


def _directions(params: Tensors, given: Sequence[Mapping[str, torch.Tensor]] | None, count: int,
                seed: int, norm: Normalization, normalize: bool) -> list[Tensors]:
    if given is None:
        return gaussian_directions(params, seed, norm, count=count)
    if len(given) != count:
        raise BadInput(f"expected {count} direction(s), got {len(given)}")
    out = []
    for d in given:
        absent = [k for k in params if k not in d]
        if absent:
            raise BadInput(f"the direction has no entry for parameter {absent[0]!r}")
        d = {k: torch.as_tensor(d[k]).to(p) for k, p in params.items()}
        bad = [k for k, p in params.items() if d[k].shape != p.shape]
        if bad:
            raise BadInput(f"direction entry {bad[0]!r} has shape {list(d[bad[0]].shape)}, the "
                           f"parameter {list(params[bad[0]].shape)}")
        out.append(normalize_direction(d, params, norm) if normalize else d)
    return out


def _surface(model, data, loss, params, coordinates, count, seed, directions, normalization,
             include_biasbn, normalize, bn_stats, device, stack):
    loss = check_loss(loss)
    if bn_stats not in BN_STATS:
        raise BadInput(f"unknown bn_stats {bn_stats!r}; choose checkpoint or recompute")
    with _prepared(model, params, device) as (template, state):
        first = next(iter(state.values()))
        sources = as_sources(data, device=first.device, dtype=_dtype(state))
        check_data(template, state, sources, loss)
        if bn_stats == "recompute" and "train" not in sources:
            raise BadInput("bn_stats='recompute' needs a 'train' data split to estimate from")
        theta, _ = parameters_of(template, state)
        used = _directions(theta, directions, count, seed, _norm(normalization, include_biasbn),
                           normalize)
        values = evaluate_points(template, state, used, coordinates, sources, loss,
                                 members=stack, bn_stats=bn_stats)
    return values, used


def loss_slice(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
               params: Mapping[str, torch.Tensor] | None = None, points: int = 51,
               span: float = 1.0, seed: int = 0, direction: Mapping[str, torch.Tensor] | None = None,
               normalization: str = "filter", include_biasbn: bool = False,
               normalize: bool = True, bn_stats: str = "checkpoint",
               device: torch.device | str | None = None, stack: int = 1) -> Slice:
    """Loss and accuracy at theta + alpha d for `points` alphas in [-span, span] (paper Sec. 5.3,
    Li et al. 2018). d: a Gaussian direction drawn from `seed` (torch.Generator seeded with it;
    torch.randn of each parameter's shape, in float32 on the CPU, in named_parameters order),
    or `direction`; filter-normalized to the model unless `normalize=False` (normalizing is
    idempotent, so a returned direction can be passed back). `data` may also be a mapping of split
    name to data ({"train": ..., "test": ...}). `stack`: points evaluated at once under vmap
    (pays on GPUs; 1 on CPUs)."""
    x = _grid(points, span)
    values, used = _surface(model, data, loss, params, x[:, None], 1, seed,
                            None if direction is None else [direction], normalization,
                            include_biasbn, normalize, bn_stats, device, stack)
    return Slice(x, None, values, used)


def loss_surface(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                 params: Mapping[str, torch.Tensor] | None = None, points: int = 21,
                 y_points: int | None = None, span: float = 1.0, seed: int = 0,
                 directions: Sequence[Mapping[str, torch.Tensor]] | None = None,
                 normalization: str = "filter", include_biasbn: bool = False,
                 normalize: bool = True, bn_stats: str = "checkpoint",
                 device: torch.device | str | None = None, stack: int = 1) -> Slice:
    """Loss and accuracy at theta + alpha dx + beta dy on a grid (arrays [ny, nx]); dx is the
    direction loss_slice draws from the same seed. Otherwise as loss_slice."""
    x, y = _grid(points, span), _grid(y_points or points, span)
    grid = np.stack(np.meshgrid(x, y), -1).reshape(-1, 2)
    values, used = _surface(model, data, loss, params, grid, 2, seed, directions, normalization,
                            include_biasbn, normalize, bn_stats, device, stack)
    return Slice(x, y, {k: v.reshape(len(y), len(x)) for k, v in values.items()}, used)


def _grid(points: int, span: float) -> np.ndarray:
    if points < 2:
        raise BadInput(f"points must be >= 2, got {points}")
    if not (np.isfinite(span) and span > 0):
        raise BadInput(f"span must be a finite number > 0, got {span}")
    return np.linspace(-span, span, points)
