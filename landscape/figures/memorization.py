"""Fig. 3: memorization of flipped labels with and without flooding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.figures.style import FORMATS, PALETTE, figure, save_figure
from landscape.results import MEMORIZATION, read_result


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


METRICS = ("train_acc", "train_acc_clean", "train_acc_flipped")


STOPPING = ("last", "early")  # Fig. 3 (a) without, (b) with early stopping


LABELS = {"train_acc": "training accuracy", "train_acc_clean": "training accuracy, clean labels",
          "train_acc_flipped": "accuracy on flipped points",
          "last": "(a) w/o early stopping", "early": "(b) w/ early stopping"}


AT = {"last": "at the last epoch", "early": "at the early-stopping epoch"}


MARKERS = ("*", "^", "v", "o", "s", "D", "P", "X")  # the paper marks each setting differently


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
    attrs, arrays = read_result(path, MEMORIZATION)
    labels = json.loads(attrs["labels"])
    return labels, [{k.split("/", 1)[1]: v for k, v in arrays.items()
                     if k.startswith(f"setting{i}/")} for i in range(len(labels))]
