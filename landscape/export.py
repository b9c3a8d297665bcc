"""A run's metrics as a table, for pandas, R or a spreadsheet (`landscape export`).

One row per epoch from epoch 0 (the untrained model), one column per metric in the order the run
file stores them, with `epoch` first; the test split's columns are empty where the run did not
evaluate it (sweeps evaluate it at new best validation accuracies, saved and last epochs:
--eval-test). Each column's meaning is in METRIC_DESCRIPTIONS (docs/run-files.md).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .files import check_name, create_exclusive, publish, temporary
from .store import Run

# what each metric means (train/val/test prefixes: the split; "_clean": on the clean labels)
METRIC_DESCRIPTIONS = {
    "loss": "mean surrogate loss on the labels trained with (noisy where noise was added)",
    "acc": "accuracy on the labels trained with",
    "loss_clean": "mean surrogate loss on the clean labels",
    "acc_clean": "accuracy on the clean labels",
    "acc_flipped": "accuracy on the points whose label was flipped (memorization); empty "
                   "without label noise",
    "batch_loss": "mean raw mini-batch loss J over the epoch's steps",
    "batch_objective": "mean flooded objective over the epoch's steps (|J - b| + b for "
                       "flooding; iFlood's and AdaFlood's per-sample forms)",
    "ascent_fraction": "share of the epoch's steps that were gradient ascent (J < b)",
    "lr": "learning rate during the epoch",
    "seconds": "wall seconds the epoch took (empty at epoch 0)",
    "flood_level": "flood level b the epoch trained with (AdaFlood: the mean level)",
}


def describe_metric(name: str) -> str:
    """The meaning of a metric column, from its split prefix and measure."""
    split, _, measure = name.partition("_")
    if split in ("train", "val", "test") and measure in METRIC_DESCRIPTIONS:
        where = {"train": "training", "val": "validation", "test": "test"}[split]
        return f"{where} set: {METRIC_DESCRIPTIONS[measure]}"
    return METRIC_DESCRIPTIONS.get(name, "")


def metrics_table(run: Run) -> dict[str, np.ndarray]:
    """{"epoch": [E], metric: [E], ...}: a run's metrics, epochs 0..epochs_done (pandas:
    pd.DataFrame(metrics_table(run)))."""
    metrics = run.metrics()
    return {"epoch": np.arange(run.epochs_done + 1),
            **{k: np.asarray(metrics[k], dtype=np.float64) for k in run.metric_names}}


def export_csv(run: Run, out: str | Path, *, name: str | None = None) -> Path:
    """OUT/<run file name>.csv (or NAME.csv): metrics_table as CSV, written exclusively and
    atomically; NaN as an empty cell."""
    stem = check_name(name) if name is not None else run.path.stem
    path = Path(out) / f"{stem}.csv"
    table = metrics_table(run)
    with temporary(path) as partial:
        with open(create_exclusive(partial), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(table))
            for row in zip(*table.values()):
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v
                                 for v in map(_scalar, row)])
        publish(partial, path, replace=True)
    return path


def _scalar(value):
    """numpy scalars as Python numbers: ints stay ints, floats print in full (repr)."""
    return value.item() if isinstance(value, np.generic) else value
