"""What every analysis needs from a run: its data, its model and the weights at a chosen point.

Models are rebuilt from the run's config and evaluated functionally on state dicts (no module is
mutated); the data set is regenerated from the config (synthetic) or re-read (image sets).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from landscape import data as data_module
from landscape.device import dtype_of
from landscape.errors import BadInput
from landscape.measures.sources import Source, as_source
from landscape.models import run_model
from landscape.runs.store import Run

_DATA_CACHE: dict[tuple, data_module.Dataset] = {}


def dataset_for(run: Run, *, device: torch.device) -> data_module.Dataset:
    """The run's data set (noisy labels as trained on), cached per (data config, dtype, device,
    folder). Image sets are read from `run.data_dir`: where training read them, unless the
    analysis was told otherwise (--data-dir)."""
    key = (run.config.data, run.config.dtype, str(device), run.data_dir)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) >= 4:  # bound memory: analyses rarely mix more than a few data sets
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        try:
            _DATA_CACHE[key] = data_module.load(run.config.data, device=device,
                                                dtype=dtype_of(run.config.dtype),
                                                data_dir=run.data_dir)
        except BadInput as err:
            moved = (" (if the files have moved since training, say where with --data-dir)"
                     if run.data_dir == run.execution.get("data_dir") else "")
            raise BadInput(f"{run.path}: its data: {err}{moved}") from None
    return _DATA_CACHE[key]


def model_for(run: Run, dataset: data_module.Dataset, *, device: torch.device) -> nn.Module:
    """A module of the run's architecture (eval mode), to be called with torch.func.functional_call."""
    return run_model(run.config, dataset.input_shape, dataset.num_classes, device=device).eval()


def state_at(run: Run, which: int | str, *, device: torch.device) -> dict[str, torch.Tensor]:
    """The run's state dict at an epoch, "last" (the last epoch, which must be saved) or
    "snapshot" (when the mini-batch loss first fell below b)."""
    if which == "snapshot":
        snap = run.snapshot(device)
        if snap is None:
            reason = ("its mini-batch loss never fell below b"
                      if run.config.objective.takes_snapshot else "it trained with b = 0")
            raise BadInput(f"{run.path} has no first-below-flood snapshot: {reason}")
        return snap.state
    if which == "last":
        if run.status != "complete":
            raise BadInput(f"{run.path} is not finished ({run.status}, epoch {run.epochs_done} of "
                           f"{run.epochs}); its last epoch is not there yet")
        which = run.epochs_done
    return run.state_dict(int(which), device)


def split_sources(data: data_module.Dataset) -> dict[str, Source]:
    """A run's training and test splits, as the sources a slice is evaluated on (a split makes
    its own model input: the dtype is its own)."""
    return {name: as_source(data.split(name), device=data.train.y.device, dtype=None)
            for name in ("train", "test")}


def check_same_architecture(runs: Iterable[Run]) -> None:
    """Runs compared in one analysis must share model and input; one clear line when they don't."""
    runs = list(runs)
    first = runs[0].config
    for run in runs[1:]:
        c = run.config
        if (c.model, c.data.name, c.objective.loss) != (first.model, first.data.name,
                                                         first.objective.loss):
            raise BadInput(f"runs of different architectures compared: {runs[0].path.name} is "
                           f"{_arch(first)} but {run.path.name} is {_arch(c)}")


def _arch(c) -> str:
    shape = f" {c.model.depth}x{c.model.width}" if c.model.depth is not None else ""
    return f"{c.model.name}{shape} on {c.data.name} ({c.objective.loss} loss)"


def result_names(runs: Sequence[Run]) -> list[str]:
    """Each run's name in result files, their figures and CSVs: its run name (data, noise, model,
    objective, seed), which runs that differ in what the name leaves out (learning rate, width,
    epochs; a rerun into another folder) share. Those get the part of their path that tells them
    apart (checkpoints/a.h5 and checkpoints/pair2/a.h5: NAME@a and NAME@pair2-a), so that their
    results never overwrite each other; a run named once keeps its plain name. One file given
    twice is one run."""
    plain = [run.name for run in runs]
    paths = [run.path.resolve() for run in runs]
    qualified: dict[Path, str] = {}
    for name in set(plain):
        sharing = sorted({p for p, n in zip(paths, plain) if n == name})
        if len(sharing) < 2:
            continue
        parts = [p.with_suffix("").parts for p in sharing]
        # what follows the folders they share, the file's stem at least (pair.h5, pair/a.h5)
        common = min(len(os.path.commonprefix(parts)), min(map(len, parts)) - 1)
        tails = ["-".join(q[common:]) for q in parts]
        for p, tail in zip(sharing, tails):
            if tails.count(tail) > 1:  # a-b/c.h5 and a/b-c.h5: no name tells them apart
                other = next(q for q, t in zip(sharing, tails) if t == tail and q != p)
                raise BadInput(f"{p} and {other} would share the result name {name}@{tail}: "
                               "analyse them into separate --out folders")
        qualified.update({p: f"{name}@{tail}" for p, tail in zip(sharing, tails)})
    return [qualified.get(p, n) for n, p in zip(plain, paths)]
