"""Tiny trained runs for the analysis tests: a pair with and without flooding, in a sweep folder."""

from __future__ import annotations

import dataclasses

from conftest import tiny_config

from landscape.config import ModelConfig
from landscape.config.execution import Execution
from landscape.runs.folders import open_runs
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import train


def train_pair(tmp_path_factory, *, model: str = "mlp", flood: float = 0.5, epochs: int = 10,
               width: int = 16) -> list[Run]:
    """Runs with b = 0 and b = `flood` (every epoch saved; the flooded one has its snapshot),
    trained once per test session: later calls find them finished and skip the training."""
    base = dataclasses.replace(tiny_config(epochs=epochs, width=width),
                               model=ModelConfig(model, depth=2, width=width))
    folder = tmp_path_factory.getbasetemp() / f"pair-{model}-{width}-b{flood:g}-{epochs}"
    result = train(expand(base, [0.0, flood], [0]), out=folder, name="pair", resume=True,
                   execution=Execution(device="cpu", progress=False))
    runs = open_runs([result.folder])
    assert runs[1].snapshot() is not None, "the flooded tiny run never fell below b"
    return runs
