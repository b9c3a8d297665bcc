"""Hessian-vector products and the estimators over them: power iteration, Hutchinson's trace,
average-case sharpness, and the any-model functions built on them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from landscape.data import Split
from landscape.errors import BadInput
from landscape.flooding import Loss, per_sample_loss
from landscape.measures.batches import taken
from landscape.measures.density import Density
from landscape.measures.evaluation import losses_at
from landscape.measures.filternorm import gaussian_directions
from landscape.measures.model import Tensors, _norm
from landscape.measures.options import SharpnessOptions
from landscape.measures.sources import Source, TensorSource, as_source
from landscape.measures.spectrum import density, flat_draws, top_eigenpairs
from landscape.memory import GRAPH_NUMBERS

PROBE_BATCH = 8  # trace probes drawn at once (the draws of a seed depend on it)


def hvp_function(model: nn.Module, params: Tensors, buffers: Tensors, data: Source | Split,
                 loss: Loss, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> Hv for stacked flat vectors [P, N] (N: all parameters, in order), H the Hessian of
    the data's mean loss at params (eval mode), in chunks of `rows` rows (a DataLoader keeps its
    own batches).

    Reverse over reverse, as PyHessian: each chunk's gradient is built once with its graph
    (create_graph) and every product is one backward pass through it. The graphs are kept across
    products while they fit in GRAPH_NUMBERS, which removes a forward and a backward pass from
    every product (graph_numbers measures what they hold); beyond that each product rebuilds them
    chunk by chunk. Vectors are flat, so that the power and Lanczos iterations' arithmetic is one
    operation per step, not one per parameter tensor (a narrow model's product is a few
    milliseconds)."""
    first = next(iter(params.values()))
    source = as_source(data, device=first.device, dtype=first.dtype)
    leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
    inputs = list(leaves.values())
    sizes = [p.numel() for p in inputs]
    model.eval()

    def gradient(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        total = per_sample_loss(functional_call(model, (leaves, buffers), (x,)), y, loss).sum()
        return list(torch.autograd.grad(total, inputs, create_graph=True))

    cache: list[list[torch.Tensor]] | None = []
    n = held = 0
    per_row, per_chunk = graph_numbers(gradient, *next(iter(source.batches(2))))
    if isinstance(source, TensorSource):  # kept graphs need no small chunks: fewer, larger ones
        if per_chunk + len(source) * per_row <= GRAPH_NUMBERS:
            rows = max(rows, len(source))
    with torch.enable_grad():
        for x, y in source.batches(rows):
            n += len(y)
            held += per_chunk + len(y) * per_row
            if cache is not None and held <= GRAPH_NUMBERS:
                cache.append(gradient(x, y))
            else:
                cache = None

    def product(vectors: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vectors)
        pieces = [[t.view(p.shape) for t, p in zip(v.split(sizes), inputs)] for v in vectors]
        with torch.enable_grad():
            grads = cache if cache is not None else (gradient(x, y) for x, y in
                                                     source.batches(rows))
            for g in grads:
                for row, v in zip(out, pieces):
                    hv = torch.autograd.grad(g, inputs, v, retain_graph=True, allow_unused=True)
                    # None: the gradient does not depend on that parameter
                    row += torch.cat([torch.zeros(s, dtype=out.dtype, device=out.device)
                                      if h is None else h.reshape(-1) for h, s in zip(hv, sizes)])
        return out.div_(n)

    return product


def graph_numbers(gradient: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]],
                  x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(numbers per row, numbers per chunk) that a chunk's gradient graph keeps for the double
    backward: the tensors autograd saves while `gradient` builds it (create_graph), counted by
    their storages, for the first row of `x` and for its first two. A CNN of 3 conv blocks on
    32 x 32 images keeps 261k numbers a row, half of the earlier estimate (4 x weight layers x
    the widest layer), which had refused to keep 512 images' graphs in 512 MB."""
    def kept(rows: int) -> int:
        storages: dict[tuple[int, torch.dtype], int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            storages[(storage.data_ptr(), tensor.dtype)] = storage.nbytes() // tensor.element_size()
            return tensor

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            gradient(x[:rows], y[:rows])
        return sum(storages.values())

    one = kept(1)
    if len(y) < 2:  # a source of one-row batches: the whole graph counted per row
        return one, 0
    per_row = max(kept(2) - one, 1)
    return per_row, max(one - per_row, 0)


def top_eigenvalue(hvp: Callable[[torch.Tensor], torch.Tensor], params: Tensors, *,
                   iterations: int, tolerance: float, seed: int) -> tuple[float, int]:
    """(lambda_max, products used) by power iteration from a seeded Gaussian start."""
    generator = torch.Generator().manual_seed(seed)
    first = next(iter(params.values()))
    v = flat_draws(params, lambda shape: torch.randn(shape, generator=generator)).to(first)
    v = (v / v.norm())[None]                                           # [1, N]
    estimate = math.nan
    for step in range(1, iterations + 1):
        hv = hvp(v)
        previous, estimate = estimate, float(v[0] @ hv[0])
        norm = float(hv.norm())
        if norm == 0:  # v in the null space: the loss is flat along it
            return 0.0, step
        v = hv / norm
        if abs(estimate - previous) <= tolerance * abs(estimate):
            break
    return estimate, step


def hutchinson_trace(hvp: Callable[[torch.Tensor], torch.Tensor], params: Tensors, *, probes: int,
                  seed: int) -> tuple[float, float]:
    """(Hutchinson's estimate of tr H, its standard error) from `probes` Rademacher vectors."""
    generator = torch.Generator().manual_seed(seed)
    first = next(iter(params.values()))
    values = []
    for start in range(0, probes, PROBE_BATCH):
        count = min(PROBE_BATCH, probes - start)
        z = torch.cat([(torch.randint(0, 2, (count, p.numel()), generator=generator) * 2 - 1)
                       for p in params.values()], 1).to(first)            # [count, N]
        values.append((z * hvp(z)).sum(1))
    samples = torch.cat(values).double()
    stderr = float(samples.std() / math.sqrt(probes)) if probes > 1 else math.nan
    return float(samples.mean()), stderr


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


class Estimate(NamedTuple):
    """A Monte-Carlo estimate and its standard error."""

    value: float
    stderr: float


@contextlib.contextmanager
def _hessian(model, data, loss, params, device) -> Iterator[tuple[Tensors, Any]]:
    """(theta, v -> Hv) of the mean loss over `data`."""
    with taken(model, data, loss, params, device, gradients=True) as m:
        yield m.theta, hvp_function(m.template, m.theta, m.buffers, m.source, m.loss, m.rows)


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
    with full reorthogonalization (measures/spectrum.py), at most `iterations` products; with
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
    options = SharpnessOptions(sigma=sigma, draws=draws, seed=seed,
                               normalization=_norm(normalization, include_biasbn))
    with taken(model, data, loss, params, device) as m:
        value, stderr, _ = sharpness_estimate(m.template, m.theta, m.buffers, m.source, m.loss,
                                              options, at_once=1, rows=m.rows)
    return Estimate(value, stderr)
