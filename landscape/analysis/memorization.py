"""Memorization (paper Sec. 5.1, Fig. 3; docs/measurements.md): training accuracy against the flood level b,
at the last epoch and at the early-stopping epoch, one line per setting, the chosen b marked.

Settings, trials, early-stopping epochs and the flood level chosen by validation accuracy all come
from selection.py (what Table 2 reports), so the marks sit where the table's choice is. Each trial
chooses its own b; every trial's choice is marked, at its chosen run's own training accuracy.
Accuracies: on the training labels as trained with (noisy where label noise was added; the paper's
"training accuracy"), on the clean labels, and on the flipped points (memorized noise).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import BadInput
from ..store import Run, find_runs
from .loading import read_result, reuse_result, runs_identity, write_result
from .plotting import FORMATS, PALETTE, figure, save_figure
from .selection import SettingResult, outcome, select_runs, setting_of

KIND = "memorization"
METRICS = ("train_acc", "train_acc_clean", "train_acc_flipped")
STOPPING = ("last", "early")  # Fig. 3 (a) without, (b) with early stopping
LABELS = {"train_acc": "training accuracy", "train_acc_clean": "training accuracy, clean labels",
          "train_acc_flipped": "accuracy on flipped points",
          "last": "(a) w/o early stopping", "early": "(b) w/ early stopping"}
AT = {"last": "at the last epoch", "early": "at the early-stopping epoch"}
MARKERS = ("*", "^", "v", "o", "s", "D", "P", "X")  # the paper marks each setting differently


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


def mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over trials (axis 1), ignoring missing runs: mean and sample std (ddof 1, NaN for one trial),
    as selection.py reports them."""
    count = np.isfinite(values).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(values, 1) / count
        var = np.nansum((values - mean[:, None]) ** 2, 1) / (count - 1)
    return mean, np.where(count > 1, np.sqrt(var), np.nan)


def read_memorization(path: str | Path) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """(setting labels, per-setting arrays) of a memorization result file."""
    attrs, arrays = read_result(path, KIND)
    labels = json.loads(attrs["labels"])
    return labels, [{k.split("/", 1)[1]: v for k, v in arrays.items()
                     if k.startswith(f"setting{i}/")} for i in range(len(labels))]


def chosen_points(s: dict[str, np.ndarray], rule: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each trial's chosen b and its chosen run's value of `metric`."""
    chosen = s[f"{rule}/chosen_b"]
    rows = np.searchsorted(s["flood"], chosen)
    return chosen, s[f"{rule}/{metric}"][rows, np.arange(len(chosen))]


def plot_memorization(result_path: str | Path, out_stem: str | Path,
                      formats: Sequence[str] = FORMATS) -> list[Path]:
    """Fig. 3 of the paper from a memorization result: accuracy against b, mean and std over
    trials, (a) at the last epoch and (b) at the early-stopping epoch, a row per accuracy that was
    measured (no flipped-point row without label noise), each trial's chosen b marked.
    Writes OUT_STEM.<format> and OUT_STEM.csv (every plotted number)."""
    labels, settings = read_memorization(result_path)
    metrics = [m for m in METRICS if any(np.isfinite(s[f"last/{m}"]).any() for s in settings)]
    colours = list(PALETTE.values())
    fig, axes = figure(columns=2, rows=len(metrics), cols=2, height=1.9 * len(metrics) + 0.5,
                       sharex=True, sharey="row")
    csv: dict[str, list] = {k: [] for k in ("setting", "stopping", "metric", "kind", "flood",
                                            "value", "std", "trials")}

    def rows(**columns) -> None:
        size = len(columns["flood"])
        for key in csv:
            value = columns[key]
            csv[key].extend(value if isinstance(value, (list, np.ndarray)) else [value] * size)

    for i, (label, s) in enumerate(zip(labels, settings)):
        colour, marker = colours[i % len(colours)], MARKERS[i % len(MARKERS)]
        for (r, metric), (c, rule) in ((rm, cr) for rm in enumerate(metrics)
                                       for cr in enumerate(STOPPING)):
            ax = axes[r, c]
            values = s[f"{rule}/{metric}"]
            if not np.isfinite(values).any():  # flipped points of a setting without noise
                continue
            mean, std = mean_std(values)
            trials = np.isfinite(values).sum(1)
            ax.plot(s["flood"], mean, color=colour, label=label if (r, c) == (0, 0) else None)
            ax.fill_between(s["flood"], mean - std, mean + std, color=colour, alpha=0.2, lw=0)
            chosen, at = chosen_points(s, rule, metric)
            ax.scatter(chosen, at, marker=marker, s=60, color=colour, edgecolors="black",
                       linewidths=0.5, zorder=3)
            rows(setting=label, stopping=rule, metric=metric, kind="mean", flood=s["flood"],
                 value=mean, std=std, trials=trials)
            rows(setting=label, stopping=rule, metric=metric, kind="chosen", flood=chosen,
                 value=at, std=math.nan, trials=1)
            ax.set_title(LABELS[rule] if r == 0 else "")
            ax.set_ylabel(LABELS[metric] if c == 0 else "")
            ax.set_xlabel("flood level b" if r == len(metrics) - 1 else "")
    axes[0, 0].legend(loc="lower left")
    fig.suptitle("Training accuracy against the flood level; marks: b chosen by validation "
                 "accuracy (each trial)")
    return save_figure(fig, out_stem, csv, formats=formats)


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
