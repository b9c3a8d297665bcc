"""The measurements on any PyTorch model: `model` (an nn.Module: its current weights, or a state
dict given as `params`), `data` (a pair of tensors (x, y), or any iterable of (x, y) batches such
as a DataLoader: its first whole pass is kept on the device and replayed, sources.py) and `loss` ("cross_entropy", "logistic" or a callable
(logits, y) -> per-sample losses). They return numbers and write nothing; the model is evaluated
functionally in eval mode (dropout off, BatchNorm with its running statistics) and left as it was.

These are the functions `landscape gradnorm`, `flatness`, `sharpness` and `mse` compute on run
files and on user checkpoints: the same code (analysis/flatness.py, gradnorm.py, sharpness.py,
mse.py), here without run files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from .analysis.filternorm import Normalization, gaussian_directions, normalize_direction
from .analysis.filternorm import parameters_of
from .analysis.flatness import BN_STATS, evaluate_points
from .analysis.gradnorm import amplitudes
from .analysis.mse import MseOptions, check_panels
from .analysis.spectrum import Density, density, top_eigenpairs
from .analysis.trajectory import Trajectory, pca_directions
from .analysis.sharpness import (SharpnessOptions, sharpness_estimate,
                                 hutchinson_trace, hvp_function, top_eigenvalue)
from .errors import BadInput
from .evaluation import rows_of, sample_losses
from .flooding import Loss, check_loss
from .sources import as_source, as_sources
from .usermodel import fit_state

Tensors = dict[str, torch.Tensor]


class Estimate(NamedTuple):
    """A Monte-Carlo estimate and its standard error."""

    value: float
    stderr: float


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


@contextlib.contextmanager
def _prepared(model: nn.Module, params: Mapping[str, torch.Tensor] | None,
              device: torch.device | str | None) -> Iterator[tuple[nn.Module, Tensors]]:
    """The module to call (moved to `device` as a copy if asked) and the state to evaluate; the
    user's module gets its train/eval flags back afterwards."""
    if not isinstance(model, nn.Module):
        raise BadInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
    first = next(iter(model.parameters()), None)
    if first is None:
        raise BadInput("the model has no parameters")
    device = first.device if device is None else torch.device(device)
    template = model if first.device == device else _copy_to(model, device)
    expected = template.state_dict()
    state = expected if params is None else fit_state(params, expected, "params")
    state = {k: v.detach().to(device) for k, v in state.items()}
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield template, state
    finally:
        for module, training in flags:
            module.training = training


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    import copy
    return copy.deepcopy(model).to(device)


def _dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    return next(v.dtype for v in state.values() if v.is_floating_point())


def _norm(normalization: str, include_biasbn: bool) -> Normalization:
    return Normalization(normalization, include_biasbn)


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


def gradient_amplitude(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                       params: Mapping[str, torch.Tensor] | None = None,
                       normalization: str = "filter", include_biasbn: bool = False,
                       device: torch.device | str | None = None) -> float:
    """The l2 norm of the gradient of the mean loss over `data` with each filter's entries
    multiplied by the filter's norm (paper Sec. 5.2; `normalization="layer"`: each tensor's)."""
    loss = check_loss(loss)
    with _prepared(model, params, device) as (template, state):
        first = next(iter(state.values()))
        source = {"data": as_source(data, device=first.device, dtype=_dtype(state))}
        out = amplitudes(template, [state], source, loss, _norm(normalization, include_biasbn),
                         splits=("data",))
    return float(out["data_grad"][0])


@contextlib.contextmanager
def _hessian(model, data, loss, params, device) -> Iterator[tuple[Tensors, Any]]:
    """(theta, v -> Hv) of the mean loss over `data`."""
    loss = check_loss(loss)
    with _prepared(model, params, device) as (template, state):
        theta, buffers = parameters_of(template, state)
        first = next(iter(theta.values()))
        source = as_source(data, device=first.device, dtype=_dtype(state))
        rows = rows_of(template, source, 1, first.device, gradients=True)
        yield theta, hvp_function(template, theta, buffers, source, loss, rows)


def hessian_top_eigenvalue(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                           params: Mapping[str, torch.Tensor] | None = None,
                           iterations: int = 100, tolerance: float = 1e-4, seed: int = 0,
                           device: torch.device | str | None = None) -> float:
    """The Hessian eigenvalue of largest magnitude of the mean loss over `data` (all parameters),
    by power iteration from a seeded Gaussian start; it stops when the Rayleigh quotient changes
    by less than `tolerance` (relative) or after `iterations` Hessian-vector products."""
    SharpnessOptions(iterations=iterations, tolerance=tolerance, seed=seed)  # validates
    with _hessian(model, data, loss, params, device) as (theta, hvp):
        value, _ = top_eigenvalue(hvp, theta, iterations=iterations, tolerance=tolerance,
                                  seed=seed)
    return value


def hessian_trace(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                  params: Mapping[str, torch.Tensor] | None = None, probes: int = 100,
                  seed: int = 0, device: torch.device | str | None = None) -> Estimate:
    """Hutchinson's estimate of the trace of the Hessian of the mean loss, over `probes`
    Rademacher vectors, with its standard error."""
    SharpnessOptions(probes=probes, seed=seed)
    with _hessian(model, data, loss, params, device) as (theta, hvp):
        return Estimate(*hutchinson_trace(hvp, theta, probes=probes, seed=seed))


def hessian_eigenvalues(model: nn.Module, data: Any, *, k: int = 5, loss: Loss = "cross_entropy",
                        params: Mapping[str, torch.Tensor] | None = None, iterations: int = 100,
                        tolerance: float = 1e-4, seed: int = 0, vectors: bool = False,
                        device: torch.device | str | None = None):
    """The k largest Hessian eigenvalues of the mean loss over `data` (descending), by Lanczos
    with full reorthogonalization (analysis/spectrum.py), at most `iterations` products; with
    `vectors`, (eigenvalues, eigenvectors as {parameter name: tensor})."""
    if k < 1:
        raise BadInput(f"k must be at least 1, got {k}")
    SharpnessOptions(iterations=iterations, tolerance=tolerance, seed=seed)
    with _hessian(model, data, loss, params, device) as (theta, hvp):
        values, found, _ = top_eigenpairs(hvp, theta, k=k, iterations=iterations,
                                          tolerance=tolerance, seed=seed, vectors=vectors)
    return (values, found) if vectors else values


def hessian_density(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                    params: Mapping[str, torch.Tensor] | None = None, iterations: int = 90,
                    runs: int = 1, seed: int = 0,
                    device: torch.device | str | None = None) -> Density:
    """The Hessian's spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019):
    `runs` Rademacher starts of `iterations` Lanczos steps; `.nodes`, `.weights` (summing to 1),
    `.curve()` (the broadened density) and `.moment(p)` (~ tr(H^p) / n)."""
    if iterations < 1 or runs < 1:
        raise BadInput(f"iterations and runs must be at least 1, got {iterations} and {runs}")
    with _hessian(model, data, loss, params, device) as (theta, hvp):
        return density(hvp, theta, iterations=iterations, runs=runs, seed=seed)


def average_sharpness(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                      params: Mapping[str, torch.Tensor] | None = None, sigma: float = 0.1,
                      draws: int = 10, seed: int = 0, normalization: str = "filter",
                      include_biasbn: bool = False,
                      device: torch.device | str | None = None) -> Estimate:
    """E_d[L(theta + sigma d)] - L(theta) over `draws` antithetic pairs of Gaussian directions d,
    filter-normalized to the model (sigma in units of each filter's norm), with its standard
    error over the draws."""
    loss = check_loss(loss)
    options = SharpnessOptions(sigma=sigma, draws=draws, seed=seed,
                               normalization=_norm(normalization, include_biasbn))
    with _prepared(model, params, device) as (template, state):
        theta, buffers = parameters_of(template, state)
        first = next(iter(theta.values()))
        source = as_source(data, device=first.device, dtype=_dtype(state))
        rows = rows_of(template, source, 1, first.device)
        value, stderr, _ = sharpness_estimate(template, theta, buffers, source, loss, options,
                                              at_once=1, rows=rows)
    return Estimate(value, stderr)


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


def risk_mse(model: nn.Module, pool: Any, *, sample_size: int, samples: int = 2000,
             flood_grid: Sequence[float] | None = None, train: Any = None,
             loss: Loss = "cross_entropy", params: Mapping[str, torch.Tensor] | None = None,
             seed: int = 0, device: torch.device | str | None = None):
    """Theorem 1 (paper Sec. 5.4) for this model: R is the mean loss over `pool` (data
    independent of the model's training data), R^ the means of `samples` index draws of
    `sample_size` from it, R~ = |R^ - b| + b over `flood_grid` (default: 201 levels in
    [0, 2 max(R, training loss)]). With `train` (the model's training data), a second panel draws
    R^ from it. Returns an analysis.mse.Check: the risk, the grid, the panels and the claims
    checked on each (`.holds`)."""
    loss = check_loss(loss)
    MseOptions(samples=samples, sample_size=sample_size, flood_grid=tuple(flood_grid or ()),
               draw_seed=seed)
    with _prepared(model, params, device) as (template, state):
        first = next(iter(state.values()))

        def losses(data) -> np.ndarray:
            source = as_source(data, device=first.device, dtype=_dtype(state))
            return sample_losses(template, state, source, loss,
                                 rows_of(template, source, 1, first.device))

        pool_losses = losses(pool)
        train_losses = None if train is None else losses(train)
    return check_panels(pool_losses, train_losses, sample_size=sample_size, samples=samples,
                        flood_grid=flood_grid, seed=seed)


__all__ = ["Estimate", "Slice", "loss_slice", "loss_surface", "gradient_amplitude",
           "hessian_top_eigenvalue", "hessian_eigenvalues", "hessian_density", "hessian_trace",
           "average_sharpness", "risk_mse", "trajectory_directions"]
