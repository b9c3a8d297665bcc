"""Sharpness of the loss around a trained model, beyond the paper's 1-D slices (Sec. 5.3): the top
Hessian eigenvalue, the Hessian trace and the average-case sharpness, at every saved epoch of runs
with and without flooding, against test loss as the gradients of Sec. 5.2.

L(theta) is the mean surrogate loss over a whole split, the model in eval mode (BatchNorm with the
checkpoint's running statistics; only parameters are perturbed), H its Hessian over all parameters:

- lambda_max: the Lanczos iteration from a seeded Gaussian start (measures/spectrum.py:
  top_eigenvalue, three vectors of memory), the estimate being the extreme Ritz value of largest
  magnitude; it stops when that changes by less than `tolerance` (relative) or after `iterations`
  products (stored as `power_iterations`, the name of earlier releases, where this was power
  iteration with the same rule). It finds the eigenvalue of largest magnitude, which is the top
  one where the curvature is mostly positive (near a minimum); a negative value says it was not.
- trace: Hutchinson (1989), tr(H) = E[z.Hz] for Rademacher z (entries +-1): the mean over `probes`
  seeded draws, with its standard error (std / sqrt(probes)).
- average-case sharpness: E_d[L(theta + sigma d)] - L(theta) for Gaussian d filter-normalized to
  theta (measures/filternorm.py, Li et al. 2018: ||d_f|| = ||theta_f|| for each filter; biases and BN
  weights left out by default), from `draws` antithetic pairs +-d. The pair has the same
  expectation and cancels the first-order term sigma g.d exactly, so for small sigma the estimate
  is sigma^2 / 2 times the mean of d.Hd over the draws, up to O(sigma^4).

Hessian-vector products Hv are reverse over reverse (a backward pass through each chunk's
gradient graph, measures/operators.HessianOperator), accumulated over chunks of rows and divided
by n; the graphs are built once and kept while they fit the memory rule's budget. The estimators
live in measures/spectrum.py and measures/trace.py; this module measures run files' saved epochs
and writes the result file; figures/sharpness.py draws it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from landscape.analysis.loading import (
    check_same_architecture,
    dataset_for,
    model_for,
    result_names,
    split_sources,
)
from landscape.analysis.selection import early_stopping_epoch
from landscape.config import ModelConfig
from landscape.errors import BadInput
from landscape.flooding import Loss
from landscape.measures.filternorm import parameters_of
from landscape.measures.hessian import TRACE_METHODS, sharpness_estimate
from landscape.measures.objective import Objective
from landscape.measures.operators import HessianOperator
from landscape.measures.options import SharpnessOptions
from landscape.measures.sources import Source
from landscape.measures.spectrum import eigenpairs, spectral_density, top_eigenvalue
from landscape.memory import models_at_once, rows_of
from landscape.progress import progress_bar
from landscape.results import SHARPNESS, reuse_result, runs_identity, write_result
from landscape.runs.store import Run

KIND = SHARPNESS
Tensors = dict[str, torch.Tensor]


MEASURES = ("lambda_max", "power_iterations", "trace", "trace_stderr", "avg_sharpness",
            "avg_sharpness_stderr", "loss")


def measure_states(model: nn.Module, states: Sequence[Callable[[], Tensors]], source: Source,
                   loss: Loss, options: SharpnessOptions, *, model_config: ModelConfig | None,
                   progress: bool = True, label: str = "") -> dict[str, np.ndarray]:
    """MEASURES under each state dict (each loaded when its turn comes); 1-D arrays."""
    first = next(iter(model.parameters()))
    at_once = models_at_once(model_config, sum(p.numel() for p in model.parameters()),
                             first.device)
    rows = rows_of(model, source, at_once, first.device)
    out = {k: np.full(len(states), np.nan) for k in MEASURES}
    if options.top_k:
        out["eigenvalues"] = np.full((len(states), options.top_k), np.nan)
    if options.density:
        width = options.density_runs * options.density_iterations
        out["density/nodes"] = np.full((len(states), width), np.nan)
        out["density/weights"] = np.zeros((len(states), width))
    with progress_bar(list(enumerate(states)), enabled=progress, label=label) as bar:
        for i, state in bar:
            params, buffers = parameters_of(model, state())
            hessian = HessianOperator.on(Objective(model, params, buffers, source, loss,
                                                   tuple(params)))
            if options.top_k:
                values, vectors, _ = eigenpairs(
                    hessian, k=options.top_k, iterations=max(options.iterations,
                                                                 options.top_k),
                    tolerance=options.tolerance, seed=options.seed, vectors=options.eigenvectors)
                out["eigenvalues"][i, :len(values)] = values
                for j, vector in enumerate(vectors or []):
                    for name, t in vector.items():
                        out.setdefault(f"eigenvectors/{name}", np.full(
                            (len(states), options.top_k, *t.shape), np.nan))[i, j] = t.cpu().numpy()
            if options.density:
                found = spectral_density(hessian, iterations=options.density_iterations,
                                         runs=options.density_runs, seed=options.seed)
                out["density/nodes"][i, :len(found.nodes)] = found.nodes
                out["density/weights"][i, :len(found.weights)] = found.weights
            out["lambda_max"][i], out["power_iterations"][i] = top_eigenvalue(
                hessian, iterations=options.iterations, tolerance=options.tolerance,
                seed=options.seed)
            out["trace"][i], out["trace_stderr"][i] = TRACE_METHODS[options.trace](
                hessian, probes=options.probes, seed=options.seed)
            out["avg_sharpness"][i], out["avg_sharpness_stderr"][i], out["loss"][i] = (
                sharpness_estimate(model, params, buffers, source, loss, options,
                                  at_once=at_once, rows=rows))
    return out


def run_sharpness(run: Run, options: SharpnessOptions, *, device: torch.device,
                  epochs: Sequence[int], progress: bool = True) -> dict[str, np.ndarray]:
    """MEASURES at each of `epochs` (saved) of one run, with the run's test loss and accuracy
    there (its metrics); 1-D arrays over the epochs, with "epoch"."""
    missing = [e for e in epochs if e not in run.saved_epochs]
    if missing:
        raise BadInput(f"{run.path}: epoch(s) {', '.join(map(str, missing))} were not saved; "
                       "train with --save-every/--save-epochs/--save all")
    dataset = dataset_for(run, device=device)
    model = model_for(run, dataset, device=device)
    out = measure_states(model, [lambda e=e: run.state_dict(e, device) for e in epochs],
                         split_sources(dataset)[options.split], run.config.objective.loss,
                         options, model_config=run.config.model, progress=progress,
                         label=run.name)
    metrics = run.metrics()
    out["test_loss"] = metrics["test_loss"][list(epochs)]
    out["test_acc"] = metrics["test_acc"][list(epochs)]
    out["epoch"] = np.asarray(epochs, dtype=np.int64)
    return out


def sharpness(runs: Sequence[Run], out: str | Path, options: SharpnessOptions = SharpnessOptions(),
              *, device: torch.device, epochs: Sequence[int] | None = None,
              progress: bool = True, overwrite: bool = False) -> Path:
    """The measures at the saved epochs (all, or `epochs` and each run's early-stopping epoch
    where saved, so that its marker is exact) of every run, written to `out`: long-format rows
    over (run, epoch), per-run arrays, the options and the runs as attributes. A result of the
    same runs and options at `out` is reused; another is refused unless `overwrite`."""
    runs = list(runs)
    check_same_architecture(runs)
    names = result_names(runs)  # runs named alike: told apart by their paths
    identity = {**runs_identity(runs), **options.attrs(),
                "epochs": None if epochs is None else sorted(epochs)}
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    rows, stops = [], []
    for index, run in enumerate(runs):
        if not run.saved_epochs:
            raise BadInput(f"{run.path}: no saved epochs yet")
        stop = early_stopping_epoch(run.metric("val_acc"))
        wanted = list(run.saved_epochs) if epochs is None else sorted(
            set(epochs) | ({stop} if stop in run.saved_epochs else set()))
        values = run_sharpness(run, options, device=device, epochs=wanted, progress=progress)
        values["run"] = np.full(len(wanted), index, dtype=np.int64)
        rows.append(values)
        stops.append(stop)
    arrays = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    arrays.update(run_name=np.array(names),
                  flooded=np.array([run.config.objective.floods for run in runs]),
                  flood=np.array([run.config.objective.flood for run in runs]),
                  early_stopping_epoch=np.array(stops, dtype=np.int64),
                  marked_epoch=np.array([min(r["epoch"], key=lambda e: (abs(e - s), e))
                                         for r, s in zip(rows, stops)], dtype=np.int64))
    attrs = {**options.attrs(), "runs": [str(run.path) for run in runs],
             "config_digests": [run.config.digest() for run in runs],
             "objectives": [run.config.objective.label for run in runs],
             "split_size": len(dataset_for(runs[0], device=device).split(options.split)),
             "identity": identity}
    return write_result(out, kind=KIND, attrs=attrs, arrays=arrays)
