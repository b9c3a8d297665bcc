"""Flatness (paper Sec. 5.3, Fig. 5): train and test loss and accuracy along random directions.

A slice evaluates theta + alpha d for alpha on a grid, d a Gaussian direction drawn from a recorded
seed and filter-normalized to each model (Li et al. 2018, Sec. 4; measures/filternorm.py); a
surface (`two_d`) evaluates theta + alpha dx + beta dy (measures/slices.py evaluates the points;
this module plans, resumes and writes them). The models are the paper's three (sliced.py): for a run
with b > 0 its first-below-flood snapshot and its last epoch, for a run with b = 0 its last epoch.

Each model gets its own result file whose datasets carry loss-landscape's names (xcoordinates,
ycoordinates, train_loss, train_acc, test_loss, test_acc; surfaces [ny, nx]) so that tool's plotting
scripts read it, and whose attributes hold everything that produced it. NaN marks points not yet
computed: a killed computation resumes where it stopped, and a file made with other parameters is
refused rather than silently reused. With `eigen`, each point also gets the largest and the
smallest eigenvalue of the training loss's Hessian (train_max_eigenvalue, train_min_eigenvalue:
the convexity map of Li et al. 2018, Sec. 6; measures/convexity.py); a loss-only file asked for
them gains them with its losses kept, and a file that has them keeps them when resumed without
`eigen`. BatchNorm models are
evaluated in eval mode with the checkpoint's running statistics, or with statistics re-estimated
at each perturbed point from the training inputs (`bn_stats="recompute"`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from landscape import distributed
from landscape.analysis.directions import choose
from landscape.analysis.loading import check_same_architecture
from landscape.analysis.sliced import SlicedModel, fig5_models, run_models
from landscape.errors import BadInput
from landscape.measures.convexity import extreme_eigenvalues
from landscape.measures.filternorm import parameters_of
from landscape.measures.options import EIGEN_ATTRS, EIGEN_METRICS, SliceOptions
from landscape.measures.slices import evaluate_points
from landscape.memory import models_at_once, refuse_unless_fits
from landscape.progress import progress_bar
from landscape.results import SLICE, read_result, stored, write_result
from landscape.runs.store import Run

KIND = SLICE
SAVE_SECONDS = 10.0  # a killed surface loses at most this much work


@dataclass
class _Plan:
    """One model's result file being filled."""

    model: SlicedModel
    path: Path
    attrs: dict
    arrays: dict[str, np.ndarray]
    todo: np.ndarray  # flat indices of the points still NaN
    directions: list[dict[str, torch.Tensor]]

    def save(self) -> None:
        write_result(self.path, kind=KIND, attrs=self.attrs, arrays=self.arrays)


def _plan(model: SlicedModel, options: SliceOptions, folder: Path, *, overwrite: bool) -> _Plan:
    if options.eigen and "train" not in model.sources:
        raise BadInput(f"{model.name}: --eigen needs training data (the Hessian of its loss)")
    chosen = choose(model, options)
    attrs = {**model.attrs, **options.attrs(chosen.span), **chosen.attrs}
    path = folder / f"{model.name}.{'surface' if options.two_d else 'slice'}.h5"
    metrics = options.metrics(list(model.sources))
    x, y = options.coordinates(chosen.span)
    shape = (len(x),) if y is None else (len(y), len(x))
    arrays = {"xcoordinates": x, **({} if y is None else {"ycoordinates": y}),
              **{k: np.full(shape, np.nan) for k in metrics}, **chosen.arrays}
    for axis, d in zip("xy", chosen.directions):  # anyone can re-evaluate or extend the result
        arrays.update({f"direction/{axis}/{n}": t.cpu().numpy() for n, t in d.items()})
    if path.exists() and not overwrite:
        old_attrs, old = read_result(path, KIND)
        # a loss-only file asked for eigenvalues gains them; its losses are kept, not redone
        adding = options.eigen and not any(k in old for k in EIGEN_METRICS)
        stale = [f"{k}: {stored(old_attrs.get(k))!r} in the file vs {v!r} asked"
                 for k, v in attrs.items() if k not in model.ignored
                 and not (adding and k in EIGEN_ATTRS) and stored(old_attrs.get(k)) != stored(v)]
        stale += [f"{k} is not in the file" for k in metrics
                  if k not in old and not (adding and k in EIGEN_METRICS)]
        # the values are resumed, not recomputed: they must lie on the grid asked, point by point
        stale += [f"its {k} are not the grid asked" for k in ("xcoordinates", "ycoordinates")
                  if k in arrays and not (k in old and old[k].shape == arrays[k].shape
                                          and np.array_equal(old[k], arrays[k]))]
        stale += [f"its {k} has shape {old[k].shape}, not {shape}" for k in metrics
                  if k in old and old[k].shape != shape]
        if stale:
            raise BadInput(f"{path} was computed with other parameters ({'; '.join(stale)}); "
                           "pass --overwrite to replace it or choose another --out")
        arrays.update({k: old[k] for k in metrics if k in old})
        if not options.eigen and all(k in old for k in EIGEN_METRICS):  # kept when resumed
            arrays.update({k: old[k] for k in EIGEN_METRICS})               # without --eigen
            attrs.update({k: old_attrs[k] for k in EIGEN_ATTRS if k in old_attrs})
    undone = np.isnan(np.stack([arrays[k].ravel() for k in metrics])).any(0)
    return _Plan(model, path, attrs, arrays, np.flatnonzero(undone), chosen.directions)


def flatness(runs: Sequence[Run], options: SliceOptions, out: str | Path, *,
             device: torch.device, overwrite: bool = False, progress: bool = True,
             members: int | None = None, report: Callable[[str], None] | None = None
             ) -> list[Path]:
    """Slices (or surfaces) of the paper's models of `runs` into one result file each under
    `out`, resuming files that a killed computation left; returns the files, in model order.
    `members`: points evaluated at once (default: evaluation.models_at_once); `report` hears of
    models left out (run_models)."""
    runs = list(runs)
    check_grid_fits(options, len(fig5_models(runs)))
    check_same_architecture(runs)  # one seed must draw one direction for every model
    world = distributed.join()
    with distributed.exchange(world):  # bad input on one rank stops all
        models = run_models(runs, device=distributed.rank_device(device, world),
                            snapshots=options.direction != "pca",
                            report=report if world.rank == 0 else (lambda _: None))
    return slice_models(models, options, out, overwrite=overwrite, progress=progress,
                        members=members)


def check_grid_fits(options: SliceOptions, models: int) -> None:
    """Bad input, with the estimate, when the result arrays of `models` grids (float64: the
    metrics of two splits and the coordinates, and the flat indices of the points to do) cannot
    fit in host memory: --2d --points 10^6 is 10^12 points."""
    points = options.points * ((options.y_points or options.points) if options.two_d else 1)
    arrays = len(options.metrics(["train", "test"])) + 2
    refuse_unless_fits(models * points * 8 * arrays, torch.device("cpu"),
                       f"the result arrays of {models} {'surface' if options.two_d else 'slice'}s "
                       f"of {points:,} points")


def slice_models(models: Sequence[SlicedModel], options: SliceOptions, out: str | Path, *,
                 overwrite: bool = False, progress: bool = True, members: int | None = None
                 ) -> list[Path]:
    """Slices (or surfaces) of `models`, one result file each under `out` (which also stores
    the directions themselves), resuming files that a killed computation left.

    Under torchrun each rank evaluates a share of each model's points; rank 0 gathers them into
    the file (docs/guides/scale-out.md)."""
    check_grid_fits(options, len(models))
    world = distributed.join()
    # every rank reads the result files before rank 0 writes; bad input on one rank stops all
    with distributed.exchange(world):
        plans = [_plan(model, options, Path(out), overwrite=overwrite) for model in models]
    for plan in plans:
        model = plan.model
        params, _ = parameters_of(model.template, model.state)
        directions = plan.directions
        x, y = plan.arrays["xcoordinates"], plan.arrays.get("ycoordinates")
        grid = np.stack(np.meshgrid(x, y if y is not None else [0.0]), -1).reshape(-1, 2)
        if not len(plan.todo):
            continue
        step = members or models_at_once(
            model.model_config, sum(p.numel() for p in params.values()), next(
                iter(params.values())).device)
        if world.size > 1:  # points for every rank (a GPU would stack a whole slice in one chunk)
            step = min(step, math.ceil(len(plan.todo) / world.size))
        # a point's Hessian eigenvalues cost hundreds of its loss evaluations: chunks of one
        # point keep a killed computation's loss to one point
        width = 1 if options.eigen else step
        losses = [k for k in options.metrics(list(model.sources)) if k not in EIGEN_METRICS]
        chunks = [plan.todo[i:i + width] for i in range(0, len(plan.todo), width)]
        saved = time.monotonic()
        rounds = distributed.in_rounds(chunks, world)  # this rank's chunk of each round, or None
        with progress_bar(rounds, enabled=progress and world.rank == 0, label=model.name) as bar:
            for chunk in bar:
                with distributed.exchange(world) as done:
                    if chunk is not None:
                        done.value = chunk, {}
                        if np.isnan(np.stack([plan.arrays[k].ravel()[chunk]
                                              for k in losses])).any():
                            done.value = chunk, evaluate_points(
                                model.template, model.state, directions,
                                grid[chunk][:, :len(directions)], model.sources, model.loss,
                                members=step, bn_stats=options.bn_stats)
                        if options.eigen:
                            done.value[1].update(extreme_eigenvalues(
                                model.template, model.state, directions,
                                grid[chunk][:, :len(directions)], model.sources["train"],
                                model.loss, options))
                for chunk, values in filter(None, done.values):  # every rank's chunk of the round
                    for k, v in values.items():
                        np.put(plan.arrays[k], chunk, v)  # flat indices into [ny, nx]
                if world.rank == 0 and time.monotonic() - saved > SAVE_SECONDS:
                    plan.save()
                    saved = time.monotonic()
        with distributed.exchange(world):  # no rank returns before the file is written
            if world.rank == 0:
                plan.save()
    return [plan.path for plan in plans]


