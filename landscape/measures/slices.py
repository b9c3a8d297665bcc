"""Slices and surfaces of the loss (Li et al. 2018, paper Sec. 5.3) on any model: loss and accuracy
at points theta + a d1 (+ b d2) along filter-normalized directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.flooding import Loss, check_loss
from landscape.measures.bnstats import bn_statistics, statistics_model
from landscape.measures.convexity import extreme_eigenvalues
from landscape.measures.evaluation import mean_loss
from landscape.measures.filternorm import gaussian_directions, normalize_direction, parameters_of
from landscape.measures.model import Tensors, _dtype, _norm, _prepared, check_data
from landscape.measures.options import BN_STATS, Normalization, SliceOptions
from landscape.measures.sources import LoaderSource, Source, as_sources
from landscape.measures.stack import Ensemble
from landscape.memory import rows_of


def evaluate_points(template: nn.Module, state: Mapping[str, torch.Tensor],
                    directions: Sequence[Mapping[str, torch.Tensor]], coords: np.ndarray,
                    sources: Mapping[str, Source], loss: Loss, *, members: int = 1,
                    bn_stats: str = "checkpoint") -> dict[str, np.ndarray]:
    """Loss and accuracy on every source (`<name>_loss`, `<name>_acc`) at theta + sum_j
    coords[p, j] * directions[j] for every point p (coords [P, D]), as evaluate_combinations
    evaluates them; buffers (BN running statistics) are never perturbed, or, with bn_stats
    "recompute", re-estimated at each point from the "train" source."""
    coords = np.asarray(coords, dtype=float).reshape(len(coords), -1)
    weights = np.hstack([np.ones((len(coords), 1)), coords])  # 1 theta + sum_j c_j d_j
    return evaluate_combinations(template, [state, *directions], weights, sources, loss,
                                 members=members, bn_stats=bn_stats)


def evaluate_combinations(template: nn.Module, anchors: Sequence[Mapping[str, torch.Tensor]],
                          weights: np.ndarray, sources: Mapping[str, Source], loss: Loss, *,
                          members: int = 1, bn_stats: str = "checkpoint"
                          ) -> dict[str, np.ndarray]:
    """Loss and accuracy on every source (`<name>_loss`, `<name>_acc`) at the parameters
    sum_j weights[p, j] * anchors[j] of every point p (weights [P, J]; anchors[0] a whole state
    dict, the others at least its parameters): a slice's theta + sum_j c_j d_j, or a path between
    models ((1 - t) a + t b, a Bezier curve). `members` points are stacked as one vmapped Ensemble,
    or evaluated one at a time (members = 1, the fast choice on a CPU). Each parameter set is
    written once into the ensemble's own stacked tensors (allocated once per call, not per point)
    as w_0 anchor_0 + w_1 anchor_1 + ..., so that a weight of 1 on one anchor and 0 on the others
    gives that anchor exactly, and evaluated on every source. Buffers (BN running statistics):
    anchors[0]'s ("checkpoint"), re-estimated at each point from the "train" source
    ("recompute"), or combined with the same weights ("combine": floating buffers; integer ones,
    BatchNorm's num_batches_tracked, from the anchor of the largest weight)."""
    weights = np.asarray(weights, dtype=float)
    params, buffers = parameters_of(template, anchors[0])
    first = next(iter(params.values()))
    if bn_stats == "recompute":
        members, stat_model = 1, statistics_model(template)
    members = max(1, min(members, len(weights)))
    rows = {name: rows_of(template, source, members, first.device)
            for name, source in sources.items()}
    if bn_stats == "recompute" and isinstance(sources["train"], LoaderSource):
        # a DataLoader's first pass gives its own batches, later ones its kept rows in chunks:
        # that pass now, so that every point re-estimates its statistics from the same batches
        for _ in sources["train"].batches(rows["train"]):
            pass
    slots: dict[int, Ensemble] = {}  # by size: the last chunk may be smaller
    out = {f"{name}_{m}": np.full(len(weights), np.nan) for name in sources
           for m in ("loss", "acc")}
    for start in range(0, len(weights), members):
        chunk = weights[start:start + members].tolist()
        if len(chunk) not in slots:
            slots[len(chunk)] = Ensemble(template, [dict(anchors[0])] * len(chunk),
                                         device=first.device, dtype=first.dtype)
        ensemble = slots[len(chunk)]
        with torch.no_grad():
            for k, w in enumerate(chunk):
                for n in params:
                    _combine(ensemble.params[n][k], w, [a[n] for a in anchors])
                if bn_stats == "recompute":
                    point = {n: p[k] for n, p in ensemble.params.items()}
                    fresh = bn_statistics(stat_model, point, buffers, sources["train"],
                                          rows["train"])
                    for n, value in fresh.items():
                        ensemble.buffers[n][k].copy_(value)
                elif bn_stats == "combine":
                    for n, value in buffers.items():
                        if value.is_floating_point():
                            _combine(ensemble.buffers[n][k], w, [a[n] for a in anchors])
                        else:
                            ensemble.buffers[n][k].copy_(anchors[int(np.argmax(w))][n])
        for name, source in sources.items():
            split_loss, split_acc, _ = mean_loss(ensemble, source, loss, rows[name])
            out[f"{name}_loss"][start:start + len(chunk)] = split_loss.numpy()
            out[f"{name}_acc"][start:start + len(chunk)] = split_acc.numpy()
    return out


def _combine(slot: torch.Tensor, weights: Sequence[float], tensors: Sequence[torch.Tensor]
             ) -> None:
    """slot <- sum_j weights[j] tensors[j], in place, in that order."""
    slot.copy_(tensors[0])
    if weights[0] != 1:
        slot.mul_(weights[0])
    for w, t in zip(weights[1:], tensors[1:]):
        slot.add_(t, alpha=w)


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
             include_biasbn, normalize, bn_stats, device, stack, eigen):
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
        if eigen is not None:
            if "train" not in sources:
                raise BadInput("eigen needs a 'train' data split (the Hessian of its loss)")
            values.update(extreme_eigenvalues(template, state, used, coordinates,
                                              sources["train"], loss, eigen))
    return values, used


def _eigen(eigen: bool, iterations: int, tolerance: float, seed: int, bn_stats: str
           ) -> SliceOptions | None:
    """The options of the Hessian eigenvalues at each point (None: not asked), validated."""
    if not eigen:
        return None
    return SliceOptions(eigen=True, eigen_iterations=iterations, eigen_tolerance=tolerance,
                        direction_seed=seed, bn_stats=bn_stats)


def loss_slice(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
               params: Mapping[str, torch.Tensor] | None = None, points: int = 51,
               span: float = 1.0, seed: int = 0, direction: Mapping[str, torch.Tensor] | None = None,
               normalization: str = "filter", include_biasbn: bool = False,
               normalize: bool = True, bn_stats: str = "checkpoint",
               device: torch.device | str | None = None, stack: int = 1, eigen: bool = False,
               eigen_iterations: int = SliceOptions.eigen_iterations,
               eigen_tolerance: float = SliceOptions.eigen_tolerance) -> Slice:
    """Loss and accuracy at theta + alpha d for `points` alphas in [-span, span] (paper Sec. 5.3,
    Li et al. 2018). d: a Gaussian direction drawn from `seed` (torch.Generator seeded with it;
    torch.randn of each parameter's shape, in float32 on the CPU, in named_parameters order),
    or `direction`; filter-normalized to the model unless `normalize=False` (normalizing is
    idempotent, so a returned direction can be passed back). `data` may also be a mapping of split
    name to data ({"train": ..., "test": ...}). `stack`: points evaluated at once under vmap
    (pays on GPUs; 1 on CPUs). `eigen`: also the largest and the smallest eigenvalue of the
    "train" loss's Hessian at each point ("train_max_eigenvalue", "train_min_eigenvalue"; Li et
    al. 2018, Sec. 6), by Lanczos (spectrum.eigenpairs, at most `eigen_iterations` products per
    end, relative residual `eigen_tolerance`, started from `seed`), the model in eval mode."""
    x = _grid(points, span)
    values, used = _surface(model, data, loss, params, x[:, None], 1, seed,
                            None if direction is None else [direction], normalization,
                            include_biasbn, normalize, bn_stats, device, stack,
                            _eigen(eigen, eigen_iterations, eigen_tolerance, seed, bn_stats))
    return Slice(x, None, values, used)


def loss_surface(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                 params: Mapping[str, torch.Tensor] | None = None, points: int = 21,
                 y_points: int | None = None, span: float = 1.0, seed: int = 0,
                 directions: Sequence[Mapping[str, torch.Tensor]] | None = None,
                 normalization: str = "filter", include_biasbn: bool = False,
                 normalize: bool = True, bn_stats: str = "checkpoint",
                 device: torch.device | str | None = None, stack: int = 1, eigen: bool = False,
                 eigen_iterations: int = SliceOptions.eigen_iterations,
                 eigen_tolerance: float = SliceOptions.eigen_tolerance) -> Slice:
    """Loss and accuracy at theta + alpha dx + beta dy on a grid (arrays [ny, nx]); dx is the
    direction loss_slice draws from the same seed. Otherwise as loss_slice; with `eigen`, the
    ratio |min / max| of the two eigenvalue arrays is loss-landscape's convexity map."""
    x, y = _grid(points, span), _grid(y_points or points, span)
    grid = np.stack(np.meshgrid(x, y), -1).reshape(-1, 2)
    values, used = _surface(model, data, loss, params, grid, 2, seed, directions, normalization,
                            include_biasbn, normalize, bn_stats, device, stack,
                            _eigen(eigen, eigen_iterations, eigen_tolerance, seed, bn_stats))
    return Slice(x, y, {k: v.reshape(len(y), len(x)) for k, v in values.items()}, used)


def _grid(points: int, span: float) -> np.ndarray:
    if points < 2:
        raise BadInput(f"points must be >= 2, got {points}")
    if not (np.isfinite(span) and span > 0):
        raise BadInput(f"span must be a finite number > 0, got {span}")
    return np.linspace(-span, span, points)
