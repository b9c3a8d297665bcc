"""A run's metrics as a table, for pandas, R or a spreadsheet (`landscape export`).

One row per epoch from epoch 0 (the untrained model), one column per metric in the order the run
file stores them, with `epoch` first; the test split's columns are empty where the run did not
evaluate it (sweeps evaluate it at new best validation accuracies, saved and last epochs:
--eval-test). Each column's meaning is descriptions.metric's, as in the run file's attributes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from landscape.files import check_name, create_exclusive, publish, temporary
from landscape.runs import descriptions
from landscape.runs.store import Run


def describe_metric(name: str) -> str:
    """The meaning of a metric column, with its units (descriptions.metric)."""
    meaning, units = descriptions.metric(name)
    return f"{meaning} [{units}]" if meaning and units else meaning


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
