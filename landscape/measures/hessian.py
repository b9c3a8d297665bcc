"""The Hessian measures of any model at the package's root, over the Hessian operator
(operators.py) and its estimators (spectrum.py, trace.py), and average-case sharpness.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from landscape.errors import BadInput
from landscape.flooding import Loss
from landscape.measures.batches import taken
from landscape.measures.density import Density
from landscape.measures.evaluation import losses_at
from landscape.measures.filternorm import gaussian_directions
from landscape.measures.model import Tensors, _norm
from landscape.measures.objective import Inputs, Wrt
from landscape.measures.operators import HessianOperator
from landscape.measures.options import TRACES, SharpnessOptions
from landscape.measures.sources import Source
from landscape.measures.spectrum import eigenpairs, spectral_density, top_eigenvalue
from landscape.measures.split import split_trace
from landscape.measures.trace import Estimate, hutchinson_trace

TRACE_METHODS = dict(zip(TRACES, (hutchinson_trace, split_trace)))


def sharpness_estimate(model: nn.Module, params: Tensors, buffers: Tensors, source: Source,
                      loss: Loss, options: SharpnessOptions, *, at_once: int, rows: int
                      ) -> tuple[float, float, float]:
    """(E[L(theta + sigma d)] - L(theta), its standard error over the draws, L(theta))."""
    directions = gaussian_directions(params, options.seed, options.normalization,
                                     count=options.draws)
    points = [{**params, **buffers}] + [
        {**{k: p + sign * options.sigma * d[k] for k, p in params.items()}, **buffers}
        for d in directions for sign in (1, -1)]
    losses = losses_at(model, points, source, loss, at_once=at_once, rows=rows)
    pairs = (losses[1::2] + losses[2::2]) / 2 - losses[0]  # [draws]: antithetic means
    stderr = pairs.std(ddof=1) / math.sqrt(len(pairs)) if len(pairs) > 1 else math.nan
    return float(pairs.mean()), float(stderr), float(losses[0])


def hessian_top_eigenvalue(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                           params: Mapping[str, torch.Tensor] | None = None,
                           iterations: int = 100, tolerance: float = 1e-4, seed: int = 0,
                           wrt: Wrt = None, inputs: Inputs | None = None,
                           device: torch.device | str | None = None,
                           method: str = "lanczos") -> float:
    """The Hessian eigenvalue of largest magnitude of the mean loss over `data`, by Lanczos from
    a seeded Gaussian start (spectrum.top_eigenvalue); it stops when the estimate changes by less
    than `tolerance` (relative) or after `iterations` Hessian-vector products (method="power":
    power iteration with the same rule, as PyHessian and earlier releases). Here and in the
    functions below, `wrt` chooses parameters (names or a predicate on a name; all by default)
    and `inputs` the model's arguments from a dict batch (HessianOperator's arguments)."""
    SharpnessOptions(iterations=iterations, tolerance=tolerance, seed=seed)  # validates
    hessian = HessianOperator(model, data, loss=loss, params=params, wrt=wrt,
                              inputs=inputs, device=device)
    return top_eigenvalue(hessian, iterations=iterations, tolerance=tolerance, seed=seed,
                          method=method)[0]


def hessian_trace(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                  params: Mapping[str, torch.Tensor] | None = None, probes: int = 100,
                  seed: int = 0, wrt: Wrt = None, inputs: Inputs | None = None,
                  device: torch.device | str | None = None, method: str = "hutchinson",
                  stderr: float | None = None) -> Estimate:
    """The trace of the Hessian of the mean loss, with its standard error: Hutchinson's estimate
    over `probes` Rademacher vectors (fewer once the standard error is at most `stderr`), or
    method="split": the GGN's trace exactly plus Hutchinson's on the rest (split.py), exact
    with no product for a model piecewise linear in its parameters (ReLU networks)."""
    SharpnessOptions(probes=probes, seed=seed, trace=method)  # validates, the method too
    hessian = HessianOperator(model, data, loss=loss, params=params, wrt=wrt,
                              inputs=inputs, device=device)
    return TRACE_METHODS[method](hessian, probes=probes, seed=seed, stderr=stderr)


def hessian_eigenvalues(model: nn.Module, data: Any, *, k: int = 5, loss: Loss = "cross_entropy",
                        params: Mapping[str, torch.Tensor] | None = None, iterations: int = 100,
                        tolerance: float = 1e-4, seed: int = 0, vectors: bool = False,
                        wrt: Wrt = None, inputs: Inputs | None = None,
                        device: torch.device | str | None = None):
    """The k largest Hessian eigenvalues of the mean loss over `data` (descending), by Lanczos
    with full reorthogonalization (measures/spectrum.py), at most `iterations` products; with
    `vectors`, (eigenvalues, eigenvectors as {parameter name: tensor})."""
    if k < 1:
        raise BadInput(f"k must be at least 1, got {k}")
    SharpnessOptions(iterations=iterations, tolerance=tolerance, seed=seed)
    hessian = HessianOperator(model, data, loss=loss, params=params, wrt=wrt,
                              inputs=inputs, device=device)
    values, found, _ = eigenpairs(hessian, k=k, iterations=iterations, tolerance=tolerance,
                                  seed=seed, vectors=vectors)
    return (values, found) if vectors else values


def hessian_density(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                    params: Mapping[str, torch.Tensor] | None = None, iterations: int = 90,
                    runs: int = 1, seed: int = 0,
                    wrt: Wrt = None, inputs: Inputs | None = None,
                    device: torch.device | str | None = None) -> Density:
    """The Hessian's spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019):
    `runs` Rademacher starts of `iterations` Lanczos steps; `.nodes`, `.weights` (summing to 1),
    `.curve()` (the broadened density) and `.moment(p)` (~ tr(H^p) / n)."""
    hessian = HessianOperator(model, data, loss=loss, params=params, wrt=wrt,
                              inputs=inputs, device=device)
    return spectral_density(hessian, iterations=iterations, runs=runs, seed=seed)


def average_sharpness(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                      params: Mapping[str, torch.Tensor] | None = None, sigma: float = 0.1,
                      draws: int = 10, seed: int = 0, normalization: str = "filter",
                      include_biasbn: bool = False,
                      device: torch.device | str | None = None) -> Estimate:
    """E_d[L(theta + sigma d)] - L(theta) over `draws` antithetic pairs of Gaussian directions d,
    filter-normalized to the model (sigma in units of each filter's norm), with its standard
    error over the draws."""
    options = SharpnessOptions(sigma=sigma, draws=draws, seed=seed,
                               normalization=_norm(normalization, include_biasbn))
    with taken(model, data, loss, params, device) as m:
        value, stderr, _ = sharpness_estimate(m.template, m.theta, m.buffers, m.source, m.loss,
                                              options, at_once=1, rows=m.rows)
    return Estimate(value, stderr)


def hvp_function(model: nn.Module, params: Tensors, buffers: Tensors, data: Any, loss: Loss,
                 rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> Hv for stacked flat vectors [k, N] at `params` (with `buffers`; eval mode), in chunks
    of `rows` rows: HessianOperator(...).matmat, kept for code written against releases before
    the operators (operators.py), where this function was the product itself."""
    return HessianOperator(model, data, loss=loss, params={**params, **buffers}, rows=rows).matmat
