"""Convexity maps (Li et al. 2018, Sec. 6, loss-landscape's plot_hessian_eigen): the largest and
the smallest eigenvalue of the training loss's Hessian at points theta + sum_j c_j d_j of a slice
or surface. Where lambda_min >= 0 the loss is locally convex; |lambda_min / lambda_max| small
says the non-convexity there is mild beside the dominant positive curvature (Li et al. Fig. 7;
figures/convexity.py draws it).

Each point's Hessian is operators.HessianOperator on the perturbed parameters (the model in eval
mode, BatchNorm with the buffers given: the checkpoint's, or re-estimated at the point as its
losses were, bnstats.bn_statistics), and its two ends are spectrum.eigenpairs(k=1), one Lanczos
run each from the same seeded start.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.flooding import Loss
from landscape.measures.bnstats import bn_statistics, statistics_model
from landscape.measures.filternorm import parameters_of
from landscape.measures.objective import Objective
from landscape.measures.operators import HessianOperator
from landscape.measures.options import EIGEN_METRICS, SliceOptions
from landscape.measures.sources import Source
from landscape.measures.spectrum import spectrum_ends
from landscape.memory import rows_of


def extreme_eigenvalues(template: nn.Module, state: Mapping[str, torch.Tensor],
                        directions: Sequence[Mapping[str, torch.Tensor]], coords: np.ndarray,
                        source: Source, loss: Loss, options: SliceOptions
                        ) -> dict[str, np.ndarray]:
    """{"train_max_eigenvalue": [P], "train_min_eigenvalue": [P]}: the Hessian of the mean loss
    over `source` at theta + sum_j coords[p, j] directions[j] for every point p (coords [P, D]),
    its algebraically largest and smallest eigenvalue from one Lanczos run that stops when both
    have converged (spectrum.spectrum_ends: options.eigen_iterations and eigen_tolerance; the
    start drawn from options.direction_seed)."""
    coords = np.asarray(coords, dtype=float).reshape(len(coords), -1)
    theta, buffers = parameters_of(template, state)
    if options.bn_stats == "recompute":
        stat_model = statistics_model(template)
        rows = rows_of(template, source, 1, next(iter(theta.values())).device)
    out = {k: np.full(len(coords), np.nan) for k in EIGEN_METRICS}
    for p, point in enumerate(coords):
        params = _point(theta, directions, point)
        used = (bn_statistics(stat_model, params, buffers, source, rows)
                if options.bn_stats == "recompute" else buffers)
        hessian = HessianOperator.on(Objective(template, params, used, source, loss,
                                               tuple(params)))
        ends = spectrum_ends(hessian, iterations=options.eigen_iterations,
                             tolerance=options.eigen_tolerance, seed=options.direction_seed)
        for key, (value,) in zip(EIGEN_METRICS, ends):
            out[key][p] = value
    return out


def _point(theta: Mapping[str, torch.Tensor], directions: Sequence[Mapping[str, torch.Tensor]],
           coords: np.ndarray) -> dict[str, torch.Tensor]:
    """theta + sum_j coords[j] directions[j], added in that order as slices.evaluate_points
    writes its points (so both see the same parameters, to the last bit)."""
    point = {}
    with torch.no_grad():
        for k, t in theta.items():
            point[k] = t.clone()
            for c, d in zip(coords, directions):
                point[k].add_(d[k].to(t), alpha=float(c))
    return point
