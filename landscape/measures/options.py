"""What determines a measurement's result: the option dataclasses of filter normalization
(filternorm.py), slices and surfaces (slices.py, analysis/flatness.py), sharpness (hessian.py,
analysis/sharpness.py) and Theorem 1 (theorem1.py, analysis/mse.py), recorded in their result
files.

They live here, free of torch, so that the command line builds and checks them before it imports
torch: a mistyped value is answered at once instead of after seconds of import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from landscape.errors import BadInput

if TYPE_CHECKING:  # numpy too: the command line imports this module at its start
    import numpy as np
    import torch

MODES = ("filter", "layer")                 # filter normalization (filternorm.py)
DIRECTIONS = ("random", "hessian", "pca")   # a slice's directions (directions.py)
BN_STATS = ("checkpoint", "recompute")      # BatchNorm statistics at perturbed points
EIGEN_METRICS = ("train_max_eigenvalue", "train_min_eigenvalue")  # SliceOptions.eigen
EIGEN_ATTRS = ("eigen_iterations", "eigen_tolerance")               # ... and its settings
TRACES = ("hutchinson", "split")            # the Hessian's trace estimators (hessian.py)


@dataclass(frozen=True)
class Normalization:
    """How directions and gradients are scaled; recorded in every result that depends on it."""

    mode: str = "filter"
    include_biasbn: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"unknown normalization {self.mode!r}; choose filter or layer")

    def attrs(self) -> dict[str, str]:
        return {"normalization": self.mode,
                "biasbn": "included" if self.include_biasbn else "excluded"}

    def includes(self, t: torch.Tensor, batch: int = 0) -> bool:
        """Whether a parameter takes part: weights always, 1-D parameters only on request."""
        return t.dim() - batch > 1 or self.include_biasbn


@dataclass(frozen=True)
class SliceOptions:
    """What determines a slice or surface; recorded in its result file."""

    points: int = 51
    span: float | None = None          # alpha (and beta) in [-span, span]; None: 1, or for pca
                                       # directions the path's reach (directions.choose)
    direction_seed: int = 0
    direction: str = "random"          # random | hessian | pca (directions.py)
    two_d: bool = False
    y_points: int | None = None        # surfaces: grid rows (default: points)
    bn_stats: str = "checkpoint"
    normalization: Normalization = field(default_factory=Normalization)
    eigen: bool = False                # the training-loss Hessian's largest and smallest
                                       # eigenvalue at each point (Li et al. 2018, Sec. 6)
    eigen_iterations: int = 100        # ... Lanczos products at most (one run, both ends)
    eigen_tolerance: float = 1e-4      # ... stopped at this residual (relative: spectrum.py)

    def __post_init__(self) -> None:
        if self.eigen_iterations < 1:
            raise BadInput(f"--eigen-iterations must be at least 1, got {self.eigen_iterations}")
        if not 0 <= self.eigen_tolerance < 1:
            raise BadInput(f"--eigen-tolerance must be in [0, 1), got {self.eigen_tolerance}")
        if self.points < 2 or (self.y_points is not None and self.y_points < 2):  # [-span, span]
            raise BadInput(f"--points must be >= 2, got {self.points}")
        if self.span is not None and not (math.isfinite(self.span) and self.span > 0):
            raise BadInput(f"--span must be a finite number > 0, got {self.span}")
        if self.direction not in DIRECTIONS:
            raise BadInput(f"unknown --direction {self.direction!r}; choose "
                           f"{', '.join(DIRECTIONS)}")
        if self.direction_seed < 0:
            raise BadInput(f"--direction-seed must be >= 0, got {self.direction_seed}")
        if self.bn_stats not in BN_STATS:
            raise BadInput(f"unknown --bn-stats {self.bn_stats!r}; choose checkpoint or recompute")

    def coordinates(self, span: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        span = span or self.span or 1.0
        x = np.linspace(-span, span, self.points)
        if not self.two_d:
            return x, None
        return x, np.linspace(-span, span, self.y_points or self.points)

    def attrs(self, span: float | None = None) -> dict:
        return {"direction_seed": self.direction_seed, "directions": 2 if self.two_d else 1,
                "points": self.points, "y_points": (self.y_points or self.points) if self.two_d
                else 1, "span": span or self.span or 1.0, "bn_stats": self.bn_stats,
                **self.normalization.attrs(), "draw_order": "parameters",
                **({} if self.direction == "random" else {"direction": self.direction}),
                **({"eigen_iterations": self.eigen_iterations,
                    "eigen_tolerance": self.eigen_tolerance}
                   if self.eigen else {})}

    def metrics(self, splits: Sequence[str]) -> list[str]:
        """The result file's arrays over the grid: loss and accuracy of each split, and with
        `eigen` the training loss's extreme Hessian eigenvalues."""
        return [f"{split}_{m}" for split in splits for m in ("loss", "acc")] + (
            list(EIGEN_METRICS) if self.eigen else [])


@dataclass(frozen=True)
class SharpnessOptions:
    """What the numbers depend on; recorded as attributes of the result file."""

    split: str = "train"
    iterations: int = 100        # top eigenvalue (Lanczos): most Hessian-vector products
    tolerance: float = 1e-4      # ... stops when the Rayleigh quotient changes less (relative)
    probes: int = 100            # Hutchinson: Rademacher vectors
    trace: str = "hutchinson"    # or "split": the GGN's trace exactly plus Hutchinson's on the
                                 # rest (exact for ReLU networks; measures/split.py)
    draws: int = 10              # average-case sharpness: antithetic pairs of directions
    sigma: float = 0.1           # ... their scale (1 = one filter norm)
    seed: int = 0                # the start vector, the probes and the directions
    normalization: Normalization = field(default_factory=Normalization)
    top_k: int = 0               # the k largest eigenvalues too (Lanczos: spectrum.py)
    eigenvectors: bool = False   # ... and their eigenvectors, stored
    density: bool = False        # the spectral density (stochastic Lanczos quadrature)
    density_iterations: int = 90
    density_runs: int = 1

    def __post_init__(self) -> None:
        for name in ("top_k", "density_iterations", "density_runs"):
            if getattr(self, name) < (0 if name == "top_k" else 1):
                raise BadInput(f"--{name.replace('_', '-')} is too small: {getattr(self, name)}")
        if self.eigenvectors and not self.top_k:
            raise BadInput("--save-eigenvectors needs --top-k")
        if self.trace not in TRACES:
            raise BadInput(f"unknown trace method {self.trace!r}; use {' or '.join(TRACES)}")
        if self.split not in ("train", "test"):
            raise BadInput(f"unknown split {self.split!r}; use train or test")
        for name in ("iterations", "probes", "draws"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise BadInput(f"--sigma must be a number > 0, got {self.sigma}")
        if not 0 <= self.tolerance < 1:
            raise BadInput(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.seed < 0:
            raise BadInput(f"--seed must be >= 0, got {self.seed}")

    def attrs(self) -> dict:
        return {"split": self.split, "iterations": self.iterations, "tolerance": self.tolerance,
                "probes": self.probes, "draws": self.draws, "sigma": self.sigma,
                "seed": self.seed, **self.normalization.attrs(), "model_mode": "eval",
                **({"top_k": self.top_k} if self.top_k else {}),
                **({"trace": self.trace} if self.trace != "hutchinson" else {}),
                **({"density_iterations": self.density_iterations,
                    "density_runs": self.density_runs} if self.density else {})}


@dataclass(frozen=True)
class MseOptions:
    """What determines a Theorem 1 check; stored in the result's attributes."""

    epoch: int | str = "last"          # an epoch number, "last" or "snapshot"
    samples: int = 2000                # M draws of R^
    sample_size: int | None = None     # n; None: the run's training-set size
    flood_grid: tuple[float, ...] = ()  # empty: GRID_POINTS levels from 0 to 2 max(R, train loss)
    pool_size: int = 100_000           # fresh draws (synthetic sets); image sets use the test split
    pool_seed: int | None = None       # None: the run's data seed + POOL_SEED_OFFSET
    draw_seed: int = 0                 # index draws of the M samples

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise BadInput(f"--samples must be at least 2, got {self.samples}")
        if self.sample_size is not None and self.sample_size < 1:
            raise BadInput(f"--sample-size must be at least 1, got {self.sample_size}")
        if self.pool_size < 2:
            raise BadInput(f"--pool-size must be at least 2, got {self.pool_size}")
        if any(not (math.isfinite(b) and b >= 0) for b in self.flood_grid):
            raise BadInput("flood levels must be finite and >= 0")
        if self.draw_seed < 0:
            raise BadInput(f"--seed must be >= 0, got {self.draw_seed}")
        if self.pool_seed is not None and self.pool_seed < 0:
            raise BadInput(f"--pool-seed must be >= 0, got {self.pool_seed}")


CURVES = ("bezier", "polychain")           # a fitted curve's kind (connectivity.py)
PATH_BN = ("recompute", "keep")             # BatchNorm statistics along a path between models


@dataclass(frozen=True)
class ConnectOptions:
    """What determines a connection of two models (measures/connectivity.py, analysis/connect.py):
    the linear path's grid and BatchNorm statistics, and the fitted curve (None: none) with its
    SGD settings; recorded in the result file."""

    points: int = 21
    bn: str = "recompute"
    curve: str | None = "bezier"
    curve_epochs: int = 50
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.points < 3:  # the two models and at least one point between them
            raise BadInput(f"--points must be >= 3, got {self.points}")
        if self.bn not in PATH_BN:
            raise BadInput(f"unknown --bn {self.bn!r}; choose recompute or keep")
        if self.curve is not None and self.curve not in CURVES:
            raise BadInput(f"unknown --curve {self.curve!r}; choose bezier, polychain or none")
        if self.curve_epochs < 1 or self.batch_size < 1:
            raise BadInput("--curve-epochs and the batch size must be at least 1, got "
                           f"{self.curve_epochs} and {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"the curve's learning rate must be a number > 0, got {self.lr}")
        if not (0 <= self.momentum < 1 and self.weight_decay >= 0):
            raise BadInput(f"momentum must be in [0, 1) and weight decay >= 0, got "
                           f"{self.momentum} and {self.weight_decay}")
        if self.seed < 0:
            raise BadInput(f"--seed must be >= 0, got {self.seed}")

    def attrs(self) -> dict:
        return {"points": self.points, "bn": self.bn, "curve": self.curve or "none",
                **({} if self.curve is None else {
                    "curve_epochs": self.curve_epochs, "lr": self.lr, "momentum": self.momentum,
                    "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                    "seed": self.seed})}


@dataclass(frozen=True)
class GeneralizationOptions:
    """What determines a generalization study's numbers (analysis/generalization.py): the measures
    (None: the whole battery, measures/generalization.MEASURES), their options ({measure: {key:
    value}}, as generalization_measures takes them), the epochs looked at, the rows measured (None:
    the whole training split, else a seeded subset of that many) and the seed of every draw; then
    the rank statistics' bootstrap (analysis/ranking.py), which changes no measured number."""

    measures: tuple[str, ...] | None = None
    options: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    early_stopping: bool = False
    samples: int | None = None
    seed: int = 0
    resamples: int = 1000
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.measures is not None and not self.measures:
            raise BadInput("--measures names no measure")
        if self.samples is not None and self.samples < 2:
            raise BadInput(f"--samples must be at least 2, got {self.samples}")
        if self.seed < 0:
            raise BadInput(f"--seed must be >= 0, got {self.seed}")
        if self.resamples < 1:
            raise BadInput(f"--resamples must be at least 1, got {self.resamples}")
        if not 0 < self.level < 1:
            raise BadInput(f"the interval's level must be in (0, 1), got {self.level}")

    @classmethod
    def of(cls, *, options: dict | None = None, **kwargs) -> GeneralizationOptions:
        """From options as a plain {measure: {key: value}} mapping (frozen here, in key order)."""
        frozen = tuple(sorted((m, tuple(sorted(o.items()))) for m, o in (options or {}).items()))
        return cls(options=frozen, **kwargs)

    def measure_options(self) -> dict[str, dict[str, object]]:
        return {m: dict(o) for m, o in self.options}

    def attrs(self) -> dict:
        """What determines the measured rows (the bootstrap is recorded beside, in
        ranking_attrs)."""
        return {"measures": None if self.measures is None else list(self.measures),
                "measure_options": self.measure_options(), "early_stopping": self.early_stopping,
                "samples": self.samples, "seed": self.seed}

    def ranking_attrs(self) -> dict:
        return {"resamples": self.resamples, "level": self.level, "bootstrap_seed": self.seed}
