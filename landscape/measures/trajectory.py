"""Trajectory directions (Li et al. 2018, Sec. 7): the plane in which an optimization path moved
most, for a surface with the path drawn on it.

For saved states theta_0 .. theta_T (the last one the final model), the rows theta_e - theta_T
(e < T) over the parameters taken part (weights; biases and BatchNorm weights only with
`include_biasbn`, as for filter normalization) are centered and decomposed by SVD; the first two
right singular vectors are the directions, and s_i^2 / sum s^2 the share of the variance each
explains (PCA, as Li et al. computed it). A state's coordinates are its difference to theta_T
projected on the directions, so the final model sits at (0, 0); each direction's sign is chosen so
that the path starts at positive coordinates. With `normalize`, the directions are then
filter-normalized to theta_T like random ones, and the coordinates are the least-squares fit of
each difference in their span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.measures.filternorm import normalize_direction
from landscape.measures.model import _norm
from landscape.measures.options import Normalization

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Trajectory:
    directions: list[Tensors]       # two {parameter name: tensor}, zero where not taken part
    explained: np.ndarray           # [2] share of the variance of the centered differences
    coordinates: np.ndarray         # [E, 2] of every state, the last at (0, 0)


def pca_directions(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str], *,
                   norm: Normalization = Normalization(), normalize: bool = False) -> Trajectory:
    """PCA directions of a path of state dicts (see the module's text); `names` are the
    parameters (not buffers) in order."""
    if len(states) < 3:
        raise BadInput(f"trajectory directions need at least 3 saved states, got {len(states)}")
    final = {k: states[-1][k] for k in names}
    taken = [k for k in names if norm.includes(final[k])]

    def flat(state) -> torch.Tensor:
        return torch.cat([(state[k] - final[k]).reshape(-1).double().cpu() for k in taken])

    diffs = torch.stack([flat(s) for s in states])                    # [E, N], last row 0
    centered = diffs[:-1] - diffs[:-1].mean(0)
    _, s, vt = torch.linalg.svd(centered, full_matrices=False)
    if len(s) < 2 or float(s[1]) == 0:
        raise BadInput("the saved states span fewer than two directions")
    start = diffs[0] @ vt[:2].T                                        # [2]
    axes = vt[:2] * torch.where(start < 0, -1.0, 1.0).double()[:, None]  # [2, N], orthonormal
    explained = (s[:2] ** 2 / (s ** 2).sum()).numpy()
    directions = [_unflat(a, final, taken, names) for a in axes]
    if not normalize:
        return Trajectory(directions, explained, (diffs @ axes.T).numpy())
    directions = [normalize_direction(d, final, norm) for d in directions]
    basis = torch.stack([torch.cat([d[k].reshape(-1).double().cpu() for k in taken])
                         for d in directions])                        # [2, N]
    fit = torch.linalg.lstsq(basis.T, diffs.T).solution.T             # [E, 2]
    return Trajectory(directions, explained, fit.numpy())


def _unflat(vector: torch.Tensor, like: Mapping[str, torch.Tensor], taken: Sequence[str],
            names: Sequence[str]) -> Tensors:
    out, start = {}, 0
    for k in names:
        p = like[k]
        if k in taken:
            out[k] = vector[start:start + p.numel()].reshape(p.shape).to(p)
            start += p.numel()
        else:
            out[k] = torch.zeros_like(p)
    return out


def trajectory_directions(model: nn.Module, states: Sequence[Mapping[str, torch.Tensor]], *,
                          include_biasbn: bool = False, normalize: bool = False) -> Trajectory:
    """The PCA plane of an optimization path (Li et al. 2018, Sec. 7): `states` are the saved
    state dicts in order, the last the final model. Returns `.directions` (two, to pass to
    loss_surface(params=states[-1], directions=..., normalize=False)), `.explained` (the share of
    variance of each) and `.coordinates` [len(states), 2] of every state in that plane."""
    names = [n for n, _ in model.named_parameters()]
    absent = [n for n in names if any(n not in s for s in states)]
    if absent:
        raise BadInput(f"a state has no entry for parameter {absent[0]!r}")
    return pca_directions([{k: torch.as_tensor(s[k]).detach() for k in names} for s in states],
                          names, norm=_norm("filter", include_biasbn), normalize=normalize)
