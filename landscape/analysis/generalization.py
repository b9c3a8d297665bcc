"""Which landscape property predicts generalization (issue 24; `landscape generalization`): the
battery of measures (measures/generalization.py) on every model of a sweep, and how well each
measure ranks the models by their generalization gap (analysis/ranking.py: Kendall's tau, Jiang et
al.'s granulated tau Psi, Dziugaite et al.'s sign-error, bootstrap intervals over seeds).

A row is one model: a finished run at its last epoch, and (`early_stopping`) the same run at its
early-stopping epoch (the first epoch of best validation accuracy, as `landscape table
--early-stopping`), or one of a user's checkpoints (usercheckpoints.checkpoint_subjects). Per row:
its hyperparameters (the axes that vary across the rows, and the seed), its train and test error
on the labels trained with and its losses, the gap (test error - train error) and every measure,
on the training data as trained (noisy labels where noise was added; `samples`: a seeded subset).

Two targets are ranked against: the gap, and the test loss. A killed computation loses no row:
the file is rewritten (atomically) at least every SAVE_SECONDS with NaN where a row is not yet
measured, and a rerun with the same inputs and options measures only those; under torchrun each
rank measures its share of the rows and rank 0 writes (docs/guides/scale-out.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape import distributed
from landscape.analysis.loading import dataset_for, model_for, result_names
from landscape.analysis.ranked import OUTCOMES, TARGETS, stored_arrays
from landscape.analysis.ranking import MeasureRanking, rank_measures
from landscape.analysis.selection import early_stopping_epoch
from landscape.errors import BadInput
from landscape.measures.generalization import MEASURES, generalization_measures
from landscape.measures.options import GeneralizationOptions
from landscape.measures.tracking import fixed_rows
from landscape.progress import progress_bar
from landscape.results import (
    GENERALIZATION,
    read_result,
    reuse_result,
    runs_identity,
    write_result,
)
from landscape.runs.store import Run
from landscape.training.grid import AXES

KIND = GENERALIZATION
SAVE_SECONDS = 30.0
Tensors = dict[str, torch.Tensor]
# what a row's loader returns: the module, its state, the initial state (or None), the training
# data as trained, and the loss
Loaded = tuple[nn.Module, Tensors, Tensors | None, Any, Any]


@dataclass(frozen=True)
class Subject:
    """One model to measure: a row of the result."""

    name: str
    which: str                       # "last", "early_stopping" or "checkpoint"
    epoch: int
    axes: Mapping[str, Any]          # hyperparameter -> value, the seed among them
    outcome: Mapping[str, float]     # OUTCOMES (NaN where unknown)
    load: Callable[[torch.device], Loaded]
    has_init: bool = True            # whether load gives the initial weights


def run_subjects(runs: Sequence[Run], *, early_stopping: bool = False) -> list[Subject]:
    """The rows of finished runs: each at its last epoch and, when asked, at its early-stopping
    epoch. Bad input naming the run when a run is unfinished or the epoch's weights or test
    metrics were not kept. Axes: b, the sweep axes (training/grid.AXES) and the seed."""
    names = result_names(runs)
    subjects = []
    for run, name in zip(runs, names):
        if run.status != "complete":
            raise BadInput(f"{run.path} is not finished ({run.status}, epoch {run.epochs_done} of "
                           f"{run.epochs}); finish it with `landscape train ... --resume` or "
                           "leave it out")
        metrics = run.metrics()
        epochs = {"last": run.epochs_done}
        if early_stopping:
            epochs["early_stopping"] = early_stopping_epoch(metrics["val_acc"])
        c = run.config
        axes = {"b": c.objective.flood,
                **{a: getattr(getattr(c, part), field) for a, (part, field, _) in AXES.items()},
                "seed": c.seed}
        for which, epoch in epochs.items():
            if epoch not in run.saved_epochs:
                raise BadInput(f"{run.path}: its {which.replace('_', '-')} epoch {epoch} was not "
                               "saved; train with --save all to measure every epoch, or leave "
                               "the run out")
            outcome = {"train_error": 1 - float(metrics["train_acc"][epoch]),
                       "test_error": 1 - float(metrics["test_acc"][epoch]),
                       "train_loss": float(metrics["train_loss"][epoch]),
                       "test_loss": float(metrics["test_loss"][epoch])}
            if not np.isfinite(outcome["test_error"]):
                raise BadInput(f"{run.path}: no test error at epoch {epoch} (its test policy "
                               "skipped it); train with --eval-test every, or leave the run out")

            def load(device: torch.device, run=run, epoch=epoch) -> Loaded:
                dataset = dataset_for(run, device=device)
                return (model_for(run, dataset, device=device), run.state_dict(epoch, device),
                        run.state_dict(0, device), dataset.split("train"),
                        run.config.objective.loss)

            subjects.append(Subject(name, which, epoch, axes, outcome, load))
    return subjects


def varying(subjects: Sequence[Subject]) -> list[str]:
    """The hyperparameter axes whose values differ across the rows (the seed excluded)."""
    axes = [a for a in subjects[0].axes if a != "seed"
            and len({json.dumps(s.axes[a]) for s in subjects}) > 1]
    if not axes:
        raise BadInput("the models differ in no hyperparameter but the seed: nothing to rank "
                       "(give a sweep over b, lr, batch size, weight decay, width or depth)")
    return axes


def measured(subject: Subject, names: Sequence[str], options: GeneralizationOptions, *,
             device: torch.device) -> dict[str, float]:
    """The battery's measures `names` of one row (measures/generalization.py)."""
    model, state, init, data, loss = subject.load(device)
    if options.samples is not None:
        data = fixed_rows(data, options.samples, options.seed)
    return generalization_measures(model, data, init=init, names=names,
                                   options=options.measure_options(), loss=loss, params=state,
                                   seed=options.seed, device=device)


def measure_names(options: GeneralizationOptions, *, has_init: bool) -> list[str]:
    """The measures asked (all by default; those needing initial weights only where every row
    has them), checked: unknown names and options are bad input before any work."""
    names = list(options.measures or [n for n, e in MEASURES.items()
                                      if has_init or e.takes != "init"])
    unknown = [n for n in [*names, *options.measure_options()] if n not in MEASURES]
    if unknown:
        raise BadInput(f"unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}")
    for name, given in options.measure_options().items():
        MEASURES[name].check(given, name)
    if not has_init and any(MEASURES[n].takes == "init" for n in names):
        raise BadInput("distance_from_init and frobenius_distance need every model's initial "
                       "weights (an init column in the hyperparameter table)")
    return names


def generalization(subjects: Sequence[Subject], out: str | Path,
                   options: GeneralizationOptions = GeneralizationOptions(), *,
                   identity: Mapping[str, Any], device: torch.device, progress: bool = True,
                   overwrite: bool = False, report: Callable[[str], None] = lambda _: None
                   ) -> Path:
    """Every measure of every row, the rankings, one result file at `out` (runs x measures, the
    hyperparameters, errors, losses and gaps; per (epoch kind, target) each measure's statistics
    with their bootstrap intervals). `identity`: what the rows are (their files), so that a
    rerun resumes or reuses the file and other inputs are refused unless `overwrite`."""
    subjects = list(subjects)
    if len(subjects) < 2:
        raise BadInput("ranking needs at least two models")
    axes = varying(subjects)
    names = measure_names(options, has_init=all(s.has_init for s in subjects))
    identity = {**identity, **options.attrs(), "measure_names": names}
    world = distributed.join()
    with distributed.exchange(world):  # every rank reads the file before rank 0 rewrites it
        arrays, ranked = _resumed(subjects, names, out, identity, options, overwrite=overwrite)
    todo = np.flatnonzero(~arrays["done"])
    if len(todo) == 0 and ranked:
        return Path(out)
    if len(todo):
        report(f"generalization: measuring {len(todo)} of {len(subjects)} models "
               f"({len(names)} measures each)")
    device = distributed.rank_device(device, world)
    saved = time.monotonic()
    rounds = distributed.in_rounds(list(todo), world)
    with progress_bar(rounds, enabled=progress and world.rank == 0, label="models") as bar:
        for row in bar:
            with distributed.exchange(world) as done:
                if row is not None:
                    done.value = row, measured(subjects[row], names, options, device=device)
            for row, values in filter(None, done.values):
                for name, value in values.items():
                    arrays[f"measure/{name}"][row] = value
                arrays["done"][row] = True
            if world.rank == 0 and time.monotonic() - saved > SAVE_SECONDS:
                _write(out, arrays, identity, options, names, axes, rankings=None)
                saved = time.monotonic()
    with distributed.exchange(world):  # no rank returns before the file is written
        if world.rank == 0:
            rankings = rank_rows(arrays, names, axes, options, report=report)
            _write(out, arrays, identity, options, names, axes, rankings=rankings)
    return Path(out)


def axis_values(values: Sequence[Any]) -> np.ndarray:
    """An axis's values as one array: numbers as float64 (None, e.g. a ResNet's depth, as NaN),
    anything else (a user's "sgd", "adam") as text."""
    if all(v is None or isinstance(v, (int, float, np.number)) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values])
    return np.array([str(v) for v in values])


def _resumed(subjects: Sequence[Subject], names: Sequence[str], out: str | Path,
             identity: Mapping[str, Any], options: GeneralizationOptions, *,
             overwrite: bool) -> tuple[dict[str, np.ndarray], bool]:
    """The rows' arrays, with the measures a file of the same identity at `out` holds (NaN and
    done = False elsewhere), and whether its rankings are there with the bootstrap asked."""
    arrays: dict[str, np.ndarray] = {
        "name": np.array([s.name for s in subjects]),
        "which": np.array([s.which for s in subjects]),
        "epoch": np.array([s.epoch for s in subjects], dtype=np.int64),
        **{f"axis/{a}": axis_values([s.axes[a] for s in subjects]) for a in subjects[0].axes},
        **{k: np.array([s.outcome[k] for s in subjects], dtype=np.float64) for k in OUTCOMES},
        **{f"measure/{n}": np.full(len(subjects), np.nan) for n in names},
        "done": np.zeros(len(subjects), dtype=bool)}
    arrays["gap"] = arrays["test_error"] - arrays["train_error"]
    if not reuse_result(out, KIND, identity, overwrite=overwrite):
        return arrays, False
    attrs, old = read_result(out, KIND)
    for n in names:
        arrays[f"measure/{n}"] = old[f"measure/{n}"]
    arrays["done"] = old["done"].astype(bool)
    ranked = (bool(attrs.get("complete"))  # and ranked as this version ranks
              and json.loads(attrs.get("ranking", "{}")) == options.ranking_attrs()
              and json.loads(attrs.get("reversed", "null")) == [n for n in names
                                                                 if MEASURES[n].direction < 0])
    return arrays, ranked


def rank_rows(arrays: Mapping[str, np.ndarray], names: Sequence[str], axes: Sequence[str],
              options: GeneralizationOptions, *, report: Callable[[str], None] = lambda _: None
              ) -> dict[tuple[str, str], tuple[MeasureRanking, ...]]:
    """The rankings per (epoch kind, target) over that kind's rows where the target is known (a
    diverged run has no gap to rank: left out), of every measure finite on all of them (a
    PAC-Bayes sigma is inf where no noise reaches the bound: no rank to give). `report` hears
    what was left out. Each measure is ranked in its expected direction
    (MEASURES[name].direction): a flatness or margin reversed, so that for every measure a
    positive tau or Psi says it predicts the gap as its argument claims."""
    out, notes = {}, {}
    for which in dict.fromkeys(arrays["which"].tolist()):
        kind = arrays["which"] == which
        epoch = which.replace("_", "-")
        for target in TARGETS:
            rows = kind & np.isfinite(arrays[target])
            if not rows.any():  # a user's table without test losses
                continue
            lost = int(kind.sum() - rows.sum())
            if lost:
                notes[f"{which} {target}"] = (f"{lost} model{'s' * (lost > 1)} without a finite "
                                              f"{target} at the {epoch} epoch (diverged) left "
                                              "out of its rankings")
            table = {a: arrays[f"axis/{a}"][rows] for a in [*axes, "seed"]}
            values = {n: MEASURES[n].direction * arrays[f"measure/{n}"][rows] for n in names}
            finite = {n: v for n, v in values.items() if np.isfinite(v).all()}
            if len(finite) < len(values):
                notes[f"{which} measures"] = (
                    f"not ranked at the {epoch} epoch (non-finite on some models): "
                    + ", ".join(sorted(set(values) - set(finite))))
            if finite:
                out[which, target] = rank_measures(
                    table, finite, arrays[target][rows], axes=axes,
                    resamples=options.resamples, seed=options.seed, level=options.level)
    for note in notes.values():
        report(f"generalization: {note}")
    return out


def _write(out: str | Path, arrays: Mapping[str, np.ndarray], identity: Mapping[str, Any],
           options: GeneralizationOptions, names: Sequence[str], axes: Sequence[str], *,
           rankings: Mapping[tuple[str, str], Sequence[MeasureRanking]] | None) -> Path:
    stored = {**arrays, **stored_arrays(rankings or {}, axes)}
    attrs = {**options.attrs(), "measure_names": list(names), "axes": list(axes),
             "reversed": [n for n in names if MEASURES[n].direction < 0],
             "targets": TARGETS, "complete": rankings is not None,
             "ranking": options.ranking_attrs(), "identity": dict(identity)}
    return write_result(out, kind=KIND, attrs=attrs, arrays=stored)


def run_generalization(runs: Sequence[Run], out: str | Path,
                       options: GeneralizationOptions = GeneralizationOptions(), *,
                       device: torch.device, progress: bool = True, overwrite: bool = False,
                       report: Callable[[str], None] = lambda _: None) -> Path:
    """`generalization` over the finished runs of sweeps (run_subjects)."""
    runs = list(runs)
    subjects = run_subjects(runs, early_stopping=options.early_stopping)
    return generalization(subjects, out, options, identity=runs_identity(runs), device=device,
                          progress=progress, overwrite=overwrite, report=report)
