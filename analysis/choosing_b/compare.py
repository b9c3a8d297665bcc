#!/usr/bin/env python
"""The table of analysis/choosing_b/run.sh: per noise level and way of choosing b, the test accuracy
(mean (std) over seeds) and what it cost.

    python analysis/choosing_b/compare.py checkpoints/choosing-b

Accuracies are on the noisy test labels (Table 2's convention), then on the clean ones; "last" is
the last epoch, "early stop" each run's first epoch of best validation accuracy. For the grids the
b is chosen per seed by validation accuracy at that same epoch (landscape.analysis.selection, as
`landscape table`); the adaptive and AdaFlood runs are single runs per seed. b: the chosen level
(grids; at the last epoch), the level of the last epoch (adaptive), the mean per-sample level
(AdaFlood).
Cost: model trainings per seed (AdaFlood's auxiliary models included) and the CPU and wall seconds
of the commands (OUT/timings.txt), all seeds together.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from landscape.analysis.selection import outcome, select_runs
from landscape.runs.folders import open_runs

METHODS = {"grid": "grid + validation (flood)", "adaptive": "adaptive schedule",
           "adaptive-step0.05": "adaptive schedule, alpha 0.05", "adaflood": "AdaFlood",
           "iflood": "grid + validation (iFlood)"}


def timings(folder: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(method, noise) -> (wall, CPU) seconds, summed over the lines of reruns."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    path = folder / "timings.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) == 5 and parts[0] in METHODS:  # GNU time adds lines when a command fails
            wall, user, system = map(float, parts[2:])
            old = out.get((parts[0], parts[1]), (0.0, 0.0))
            out[(parts[0], parts[1])] = (old[0] + wall, old[1] + user + system)
    return out


def cell(values: np.ndarray, scale: float = 100, digits: int = 2) -> str:
    values = np.asarray(values, dtype=np.float64) * scale
    std = f" ({values.std(ddof=1):.{digits}f})" if len(values) > 1 else ""
    return f"{values.mean():.{digits}f}{std}"


def grid_rows(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(the chosen runs' numbers, the b = 0 runs' numbers) per seed, and the grid's size."""
    (last,), (early,) = (select_runs([path], early_stopping=s) for s in (False, True))
    chosen = {"last": last.values("with_flooding"), "early": early.values("with_flooding"),
              "clean": last.values("with_flooding_clean"), "b": last.values("chosen_b")}
    base = {"last": last.values("without_flooding"), "early": early.values("without_flooding"),
            "clean": last.values("without_flooding_clean"), "b": np.zeros(len(last.trials))}
    return chosen, base, len(last.trials[0].grid)


def single_rows(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """The adaptive or AdaFlood runs' numbers per seed, and trainings per seed."""
    runs = sorted(open_runs([path]), key=lambda r: r.config.seed)
    rows: dict[str, list[float]] = {"last": [], "early": [], "clean": [], "b": []}
    for run in runs:
        m = run.metrics()
        for key, stopping in (("last", False), ("early", True)):
            rows[key].append(outcome(0.0, m, run.epochs, early_stopping=stopping).test_acc)
        rows["clean"].append(m["test_acc_clean"][run.epochs])
        rows["b"].append(m["flood_level"][run.epochs])
    folds = runs[0].config.objective.adaflood_folds or 0
    return {k: np.array(v) for k, v in rows.items()}, 1 + folds


def table(folder: Path) -> str:
    spent = timings(folder)
    noises = sorted({noise for _, noise in spent}, key=float)
    header = ["noise", "method", "trainings / seed", "CPU s", "wall s", "test acc, last",
              "test acc, early stop", "clean test acc, last", "b"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for noise in noises:
        for method, label in METHODS.items():
            path = folder / f"{method}-noise{noise}"
            if not path.is_dir() or (method, noise) not in spent:
                continue
            try:
                if method in ("grid", "iflood"):
                    numbers, base, trainings = grid_rows(path)
                else:
                    numbers, trainings = single_rows(path)
            except Exception as err:  # unfinished runs: say so in the row, keep the others
                lines.append(f"| {noise} | {label} | unfinished: {err} |")
                continue
            wall, cpu = spent[(method, noise)]
            if method == "grid":
                lines.append(f"| {noise} | no flooding (b = 0) | 1 | | | {cell(base['last'])} | "
                             f"{cell(base['early'])} | {cell(base['clean'])} | 0 |")
            lines.append(f"| {noise} | {label} | {trainings} | {cpu:.0f} | {wall:.0f} | "
                         f"{cell(numbers['last'])} | {cell(numbers['early'])} | "
                         f"{cell(numbers['clean'])} | {cell(numbers['b'], 1, 3)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: compare.py CHECKPOINTS_FOLDER")
    print(table(Path(sys.argv[1])))
