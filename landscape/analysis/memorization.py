"""Memorization (paper Sec. 5.1, Fig. 3; docs/measurements.md): training accuracy against the flood level b,
at the last epoch and at the early-stopping epoch, one line per setting, the chosen b marked.

Settings, trials, early-stopping epochs and the flood level chosen by validation accuracy all come
from selection.py (what Table 2 reports), so the marks sit where the table's choice is. Each trial
chooses its own b; every trial's choice is marked, at its chosen run's own training accuracy.
Accuracies: on the training labels as trained with (noisy where label noise was added; the paper's
"training accuracy"), on the clean labels, and on the flipped points (memorized noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from landscape.analysis.selection import SettingResult, outcome, select_runs, setting_of
from landscape.errors import BadInput
from landscape.figures.memorization import (
    AT,
    METRICS,
    STOPPING,
    chosen_points,
    mean_std,
    read_memorization,
)
from landscape.results import MEMORIZATION, reuse_result, runs_identity, write_result
from landscape.runs.folders import find_runs
from landscape.runs.store import Run

KIND = MEMORIZATION


def setting_arrays(selections: dict[str, SettingResult], runs: Sequence[Run]
                   ) -> dict[str, np.ndarray]:
    """One setting's arrays: flood [B], seed [T], and per stopping rule <rule>/<metric> and
    <rule>/epoch [B, T] (NaN where a run is missing or never reached the epoch), <rule>/chosen_b [T]."""
    trials = [(t.seed, t.data_seed) for t in selections["last"].trials]
    floods = sorted({r.config.objective.flood for r in runs})
    out: dict[str, np.ndarray] = {"flood": np.array(floods),
                                  "seed": np.array([s for s, _ in trials], dtype=np.int64)}
    for rule in STOPPING:
        values = {m: np.full((len(floods), len(trials)), np.nan) for m in (*METRICS, "epoch")}
        for run in runs:
            metrics = run.metrics()
            o = outcome(run.config.objective.flood, metrics, run.epochs,
                        early_stopping=rule == "early")
            if o.epoch < 0:
                continue
            where = (floods.index(o.flood), trials.index((run.config.seed, run.config.data.seed)))
            values["epoch"][where] = o.epoch
            for m in METRICS:
                values[m][where] = metrics[m][o.epoch]
        out.update({f"{rule}/{k}": v for k, v in values.items()})
        out[f"{rule}/chosen_b"] = np.array([t.chosen_b for t in selections[rule].trials])
    return out


def memorization(paths: Iterable[str | Path], out: str | Path, *, overwrite: bool = False) -> Path:
    """Training accuracies of every run of the sweeps under `paths`, grouped by setting, with the
    flood levels chosen with and without early stopping; written to the result file `out`. A
    result of the same runs at the same progress in `out` is reused; one of others is refused
    unless `overwrite` (loading.reuse_result)."""
    paths = list(paths)
    files = find_runs(paths)
    runs = [Run(p) for p in files]
    identity = runs_identity(runs)
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    selections = {rule: select_runs(files, early_stopping=rule == "early") for rule in STOPPING}
    arrays: dict[str, np.ndarray] = {}
    for i, (last, early) in enumerate(zip(selections["last"], selections["early"])):
        mine = [r for r in runs if setting_of(r.config) == last.config]
        if len({r.config.objective.flood for r in mine}) < 2:
            raise BadInput(f"{last.label}: only one flood level; memorization needs a sweep over b")
        for key, value in setting_arrays({"last": last, "early": early}, mine).items():
            arrays[f"setting{i}/{key}"] = value
    attrs = {"labels": [s.label for s in selections["last"]],
             "settings": [s.config.to_json() for s in selections["last"]],
             "runs": [str(p) for p in files], "metrics": list(METRICS), "stopping": list(STOPPING),
             "identity": identity}
    return write_result(out, kind=KIND, attrs=attrs, arrays=arrays)


def _accuracy(a: float) -> str:
    """Three decimals, more where rounding would show a training error above zero as 1.000."""
    digits = 3
    while a < 1 and f"{a:.{digits}f}" == f"{1:.{digits}f}" and digits < 8:
        digits += 1
    return f"{a:.{digits}f}"


def report(path: str | Path) -> str:
    """Per setting and stopping rule: the chosen b of each trial and its training accuracy, and
    whether the chosen runs memorized their training set (100% training accuracy)."""
    labels, settings = read_memorization(path)
    lines = []
    for label, s in zip(labels, settings):
        for rule in STOPPING:
            chosen, at = chosen_points(s, rule, "train_acc")
            mean, _ = mean_std(s[f"{rule}/train_acc"])
            full = int(np.sum(at >= 1.0))
            lines.append(
                f"{label}, {AT[rule]}: chosen b = {', '.join(f'{b:g}' for b in chosen)}; "
                f"their training accuracy {', '.join(map(_accuracy, at))} ({full} of "
                f"{len(at)} at zero training error); mean training accuracy from "
                f"{_accuracy(mean[0])} at b = {s['flood'][0]:g} to {_accuracy(mean[-1])} at b = "
                f"{s['flood'][-1]:g}")
    return "\n".join(lines)
