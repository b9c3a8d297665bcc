"""What a sweep is: the grid of configs over flood levels, seeds and other hyperparameter axes,
and the names of its runs' files.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Sequence

from landscape.config import RunConfig
from landscape.errors import BadInput
from landscape.files import check_name

# Hyperparameter axes a sweep may vary besides the flood level and the seed: the config field
# each sets, and how a run's file name says its value when the sweep varies it
AXES = {"lr": ("optim", "lr", "lr{:g}"), "batch_size": ("optim", "batch_size", "bs{}"),
        "weight_decay": ("optim", "weight_decay", "wd{:g}"), "width": ("model", "width", "w{}"),
        "depth": ("model", "depth", "d{}")}


def expand(base: RunConfig, floods: Sequence[float], seeds: Sequence[int], *,
           data_seed: int | None = None, **axes: Sequence) -> list[RunConfig]:
    """The grid flood levels x seeds x every axis given (AXES: lr, batch_size, weight_decay,
    width, depth; each a list of values, the base's value where not given). Each seed also draws
    its own data unless data_seed fixes it."""
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise BadInput(f"unknown sweep axis {unknown[0]!r}; choose from {', '.join(AXES)}")
    for axis, values in axes.items():
        if not values:
            raise BadInput(f"the sweep axis {axis} has no values")
        if len(set(values)) != len(values):
            raise BadInput(f"the sweep axis {axis} repeats a value: {list(values)}")
    configs = []
    for point in itertools.product(*axes.values()):
        varied = base
        for axis, value in zip(axes, point):
            part, field, _ = AXES[axis]
            varied = dataclasses.replace(varied, **{part: dataclasses.replace(
                getattr(varied, part), **{field: value})})
        configs += [dataclasses.replace(
            varied, seed=s,
            data=dataclasses.replace(varied.data, seed=s if data_seed is None else data_seed),
            objective=dataclasses.replace(varied.objective, flood=b))
            for s in seeds for b in floods]
    return configs


def varied_axes(configs: Sequence[RunConfig]) -> dict[str, list]:
    """The AXES whose (resolved) values differ between the configs, with their values."""
    out = {}
    for axis, (part, field, _) in AXES.items():
        values = sorted({getattr(getattr(c, part), field) for c in configs})
        if len(values) > 1:
            out[axis] = values
    return out


def run_names(configs: Sequence[RunConfig]) -> list[str]:
    """Each run's file name: its config's name, followed by the values of the axes the sweep
    varies (a sweep over flood levels and seeds alone keeps the names it always had)."""
    varied = varied_axes(configs)
    return ["-".join([c.name] + [AXES[a][2].format(getattr(getattr(c, AXES[a][0]), AXES[a][1]))
                                 for a in varied]) for c in configs]


def sweep_name(config: RunConfig) -> str:
    parts = [config.data.name] + ([f"noise{config.data.noise:g}"] if config.data.noise else [])
    adaptive = ["adaptive"] if config.objective.schedule else []
    return "-".join(parts + [config.model.name, config.objective.kind] + adaptive)


def plan_paths(configs: list[RunConfig], out: Path, name: str | None = None
               ) -> tuple[Path | None, list[Path]]:
    """(sweep folder or None, run file paths): out/NAME.h5 for one run, out/NAME/<run>.h5 for many."""
    names = run_names(configs)
    if name is not None:
        check_name(name)
    if len(set(names)) != len(names):
        raise BadInput("the sweep repeats a run (the same config twice)")
    if len(configs) == 1:
        return None, [out / f"{name or names[0]}.h5"]
    folder = out / (name or sweep_name(configs[0]))
    return folder, [folder / f"{n}.h5" for n in names]
