"""Tiny sweeps over flood levels and seeds (test loss every epoch) and reading figure data files,
for the figure tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from conftest import tiny_config

from landscape.config.execution import Execution
from landscape.training.grid import expand
from landscape.training.planner import train

FLOODS = (0.0, 0.2, 0.4)


def train_sweep(folder: Path, *, noise: float = 0.1, seeds: int = 2, epochs: int = 12,
                name: str | None = None) -> Path:
    """A sweep of FLOODS x seeds on tiny Two Gaussians runs; returns the sweep folder."""
    configs = expand(tiny_config(noise=noise, epochs=epochs, save="last"), FLOODS, range(seeds))
    result = train(configs, out=folder, name=name or f"noise{noise:g}",
                   execution=Execution(device="cpu", progress=False))
    return result.folder


def read_figure_data(path: Path) -> dict[str, np.ndarray]:
    """A figure's CSV as columns: numbers where the column is numeric, else strings."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        try:
            columns[key] = np.array(values, dtype=np.float64)
        except ValueError:
            columns[key] = np.array(values)
    return columns
