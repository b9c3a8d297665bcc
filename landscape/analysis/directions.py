"""Which directions a slice or surface follows (`flatness --direction`):

- random (the paper's Fig. 5, Li et al. 2018): Gaussian draws from the direction seed,
  filter-normalized to each model (filternorm.gaussian_directions);
- hessian: the top eigenvector(s) of each model's training-loss Hessian (spectrum.eigenpairs,
  Lanczos from the direction seed), filter-normalized like random ones so that the span means the
  same; their eigenvalues are recorded;
- pca: the plane of the model's optimization path (trajectory.pca_directions, Li et al. Sec. 7),
  as it is (unit vectors in parameter space); the saved states' coordinates in that plane and the
  share of variance of each axis are recorded, and the grid's span covers the path unless given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from landscape.errors import BadInput
from landscape.measures.filternorm import gaussian_directions, normalize_direction, parameters_of
from landscape.measures.objective import Objective
from landscape.measures.operators import HessianOperator
from landscape.measures.spectrum import eigenpairs
from landscape.measures.trajectory import pca_directions

if TYPE_CHECKING:
    from landscape.analysis.sliced import SlicedModel
    from landscape.measures.options import SliceOptions

PATH_MARGIN = 1.2  # a pca grid's span: this times the path's largest coordinate
HESSIAN_PRODUCTS = 200  # Lanczos steps at most for a direction
HESSIAN_RESIDUAL = 1e-6  # relative: a vector's error is about residual / eigenvalue gap, so a
                         # direction needs a far smaller residual than an eigenvalue does


@dataclass
class Chosen:
    """The directions of one model, with what the result file records about them."""

    directions: list[dict[str, torch.Tensor]]
    span: float
    attrs: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def choose(model: SlicedModel, options: SliceOptions) -> Chosen:
    """The directions `options.direction` names for `model`, and the grid's span."""
    params, buffers = parameters_of(model.template, model.state)
    count = 2 if options.two_d else 1
    span = options.span
    if options.direction == "random":
        return Chosen(gaussian_directions(params, options.direction_seed, options.normalization,
                                          count=count), span or 1.0)
    if options.direction == "hessian":
        if "train" not in model.sources:
            raise BadInput(f"{model.name}: --direction hessian needs training data")
        hessian = HessianOperator.on(Objective(model.template, params, buffers,
                                               model.sources["train"], model.loss, tuple(params)))
        values, vectors, _ = eigenpairs(hessian, k=count, iterations=HESSIAN_PRODUCTS,
                                        tolerance=HESSIAN_RESIDUAL, seed=options.direction_seed,
                                        vectors=True)
        return Chosen([normalize_direction(v, params, options.normalization) for v in vectors],
                      span or 1.0, {"eigenvalues": [float(v) for v in values]})
    if model.trajectory is None:
        raise BadInput(f"{model.name}: --direction pca needs the saved states of its training "
                       "(a run's saved epochs, or several --weights files)")
    states = [load() for load in model.trajectory]
    path = pca_directions(states, list(params), norm=options.normalization)
    directions = path.directions if count == 2 else path.directions[:1]
    reach = float(np.abs(path.coordinates[:, :count]).max())
    return Chosen(directions, span or PATH_MARGIN * max(reach, 1e-12),
                  {"explained_variance": [float(v) for v in path.explained[:count]]},
                  {"path/x": path.coordinates[:, 0],
                   **({"path/y": path.coordinates[:, 1]} if count == 2 else {}),
                   "path/epoch": np.asarray(model.trajectory_epochs, dtype=np.int64)})
