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
from landscape.analysis.ranking import Interval, MeasureRanking, rank_measures, ranking_table
from landscape.analysis.selection import early_stopping_epoch
from landscape.errors import BadInput
from landscape.figures.style import with_extension, write_csv
from landscape.files import write_text
from landscape.measures.generalization import MEASURES, generalization_measures
from landscape.measures.options import GeneralizationOptions
from landscape.measures.tracking import fixed_rows
from landscape.progress import progress_bar
from landscape.results import (
    GENERALIZATION,
    read_result,
    reuse_result,
    runs_identity,
    text,
    write_result,
)
from landscape.runs.store import Run
from landscape.training.grid import AXES
from landscape.training.tracking import tracking_loss

KIND = GENERALIZATION
SAVE_SECONDS = 30.0
OUTCOMES = ("train_error", "test_error", "train_loss", "test_loss")
TARGETS = {"gap": "test error - train error", "test_loss": "test loss"}
STATISTICS = ("tau", "psi_mean", "sign_error_mean", "sign_error_worst")
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
                        tracking_loss(run.config))

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
    ranked = (bool(attrs.get("complete"))
              and json.loads(attrs.get("ranking", "{}")) == options.ranking_attrs())
    return arrays, ranked


def rank_rows(arrays: Mapping[str, np.ndarray], names: Sequence[str], axes: Sequence[str],
              options: GeneralizationOptions, *, report: Callable[[str], None] = lambda _: None
              ) -> dict[tuple[str, str], tuple[MeasureRanking, ...]]:
    """The rankings per (epoch kind, target), over that kind's rows, of every measure finite on
    all of them (a PAC-Bayes sigma is inf where no noise reaches the bound: no rank to give;
    `report` names the measures left out)."""
    out = {}
    for which in dict.fromkeys(arrays["which"].tolist()):
        rows = arrays["which"] == which
        table = {a: arrays[f"axis/{a}"][rows] for a in [*axes, "seed"]}
        values = {n: arrays[f"measure/{n}"][rows] for n in names}
        finite = {n: v for n, v in values.items() if np.isfinite(v).all()}
        if len(finite) < len(values):
            report(f"generalization: not ranked at the {which.replace('_', '-')} epoch "
                   "(non-finite on some models): " + ", ".join(sorted(set(values) - set(finite))))
        for target in TARGETS:
            if not finite or not np.isfinite(arrays[target][rows]).all():  # e.g. no test losses
                continue
            out[which, target] = rank_measures(
                table, finite, arrays[target][rows], axes=axes, resamples=options.resamples,
                seed=options.seed, level=options.level)
    return out


def _write(out: str | Path, arrays: Mapping[str, np.ndarray], identity: Mapping[str, Any],
           options: GeneralizationOptions, names: Sequence[str], axes: Sequence[str], *,
           rankings: Mapping[tuple[str, str], Sequence[MeasureRanking]] | None) -> Path:
    stored = dict(arrays)
    for (which, target), ranked in (rankings or {}).items():
        prefix = f"ranking/{which}/{target}"
        stored[f"{prefix}/measure"] = np.array([r.measure for r in ranked])
        for stat in STATISTICS:
            stored[f"{prefix}/{stat}"] = np.array([_triple(getattr(r, stat)) for r in ranked])
        stored[f"{prefix}/psi"] = np.array([[_triple(r.psi[a]) for a in axes] for r in ranked])
        stored[f"{prefix}/skipped"] = np.array([[r.skipped[a] for a in axes] for r in ranked])
        stored[f"{prefix}/undefined"] = np.array([[r.undefined[a] for a in axes] for r in ranked])
        stored[f"{prefix}/worst_environment"] = np.array([r.worst_environment for r in ranked])
    attrs = {**options.attrs(), "measure_names": list(names), "axes": list(axes),
             "targets": TARGETS, "complete": rankings is not None,
             "ranking": options.ranking_attrs(), "identity": dict(identity)}
    return write_result(out, kind=KIND, attrs=attrs, arrays=stored)


def _triple(interval) -> tuple[float, float, float]:
    return interval.estimate, interval.low, interval.high


def run_generalization(runs: Sequence[Run], out: str | Path,
                       options: GeneralizationOptions = GeneralizationOptions(), *,
                       device: torch.device, progress: bool = True, overwrite: bool = False,
                       report: Callable[[str], None] = lambda _: None) -> Path:
    """`generalization` over the finished runs of sweeps (run_subjects)."""
    runs = list(runs)
    subjects = run_subjects(runs, early_stopping=options.early_stopping)
    return generalization(subjects, out, options, identity=runs_identity(runs), device=device,
                          progress=progress, overwrite=overwrite, report=report)


def ranked_pairs(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """The (epoch kind, target) pairs a result file holds rankings for, in the file's order."""
    return [(which, target) for which in ("last", "early_stopping", "checkpoint")
            for target in TARGETS if f"ranking/{which}/{target}/measure" in arrays]


def stored_rankings(arrays: Mapping[str, np.ndarray], which: str, target: str,
                    axes: Sequence[str], level: float) -> tuple[MeasureRanking, ...]:
    """The rankings of one (epoch kind, target) as _write stored them (`level`: the intervals')."""
    p = f"ranking/{which}/{target}"

    def interval(row: np.ndarray) -> Interval:
        return Interval(float(row[0]), float(row[1]), float(row[2]), level)

    def per_axis(key: str, i: int) -> dict[str, int]:
        return {x: int(arrays[f"{p}/{key}"][i, j]) for j, x in enumerate(axes)}

    return tuple(MeasureRanking(
        text(measure), interval(arrays[f"{p}/tau"][i]),
        {x: interval(arrays[f"{p}/psi"][i, j]) for j, x in enumerate(axes)},
        interval(arrays[f"{p}/psi_mean"][i]), interval(arrays[f"{p}/sign_error_mean"][i]),
        interval(arrays[f"{p}/sign_error_worst"][i]), per_axis("skipped", i),
        per_axis("undefined", i), text(arrays[f"{p}/worst_environment"][i]))
        for i, measure in enumerate(arrays[f"{p}/measure"]))


def write_reports(result: str | Path, stem: str | Path) -> list[Path]:
    """From a finished result file: STEM.csv (one row per model: name, epoch kind and epoch,
    hyperparameters, errors, losses, gap, every measure) and the ranked tables of every (epoch
    kind, target), STEM-ranking.md and STEM-ranking.tex."""
    attrs, a = read_result(result, KIND)
    if not bool(attrs.get("complete")):
        raise BadInput(f"{result}: not finished; rerun `landscape generalization` on the same "
                       "inputs to finish it")
    names, axes = json.loads(attrs["measure_names"]), json.loads(attrs["axes"])
    level = float(json.loads(attrs["ranking"])["level"])
    which = np.array([text(w) for w in a["which"]])
    stem = Path(stem)
    columns = {"name": [text(n) for n in a["name"]], "which": which, "epoch": a["epoch"],
               **{x: [text(v) for v in a[f"axis/{x}"]] if a[f"axis/{x}"].dtype.kind in "OSU"
                  else a[f"axis/{x}"] for x in [*axes, "seed"]},
               **{k: a[k] for k in (*OUTCOMES, "gap")}, **{n: a[f"measure/{n}"] for n in names}}
    written = [write_csv(with_extension(stem, "csv"), columns)]
    for fmt in ("md", "latex"):
        parts = [ranking_table(stored_rankings(a, kind, target, axes, level), fmt=fmt,
                               title=f"Each measure against the {TARGETS[target]} at the "
                                     f"{kind.replace('_', '-')} epoch of "
                                     f"{int((which == kind).sum())} models.")
                 for kind, target in ranked_pairs(a)]
        path = Path(f"{stem}-ranking.{'tex' if fmt == 'latex' else 'md'}")
        write_text(path, "\n\n".join(parts) + "\n")
        written.append(path)
    return written
