"""Performance and gradients (paper Sec. 5.2, Fig. 4): the gradient amplitude of the full training
and test loss at every saved epoch, against test loss and accuracy.

The amplitude is the l2 norm of the filter-normalized gradient (measures/gradients.py;
docs/measurements.md) of the mean surrogate loss over a whole split, the model in eval mode
(BatchNorm with the checkpoint's running statistics), accumulated over row chunks at bounded memory
(measures/evaluation.mean_loss). Several saved epochs are stacked as one Ensemble where that pays
(GPUs; memory.models_at_once). This module reads run files and writes the result file;
figures/gradnorm.py draws it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from landscape import distributed
from landscape.analysis.loading import (
    check_same_architecture,
    dataset_for,
    model_for,
    result_names,
    split_sources,
)
from landscape.analysis.selection import early_stopping_epoch
from landscape.errors import BadInput
from landscape.measures.gradients import amplitudes
from landscape.measures.options import Normalization
from landscape.memory import models_at_once
from landscape.progress import progress_bar
from landscape.results import GRADNORM, SPLITS, reuse_result, runs_identity, write_result
from landscape.runs.store import Run

KIND = GRADNORM


def run_amplitudes(run: Run, *, device: torch.device, normalization: Normalization,
                   splits: Sequence[str] = SPLITS, epochs: Sequence[int] | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Per saved epoch of one run: `<split>_grad` (NaN for splits not asked), train and test loss
    and accuracy. Returns 1-D arrays over the epochs, with "epoch"."""
    epochs = list(run.saved_epochs if epochs is None else epochs)
    missing = [e for e in epochs if e not in run.saved_epochs]
    if missing:
        raise BadInput(f"{run.path}: epoch(s) {', '.join(map(str, missing))} were not saved (saved: "
                       f"{_ranges(run.saved_epochs)}); train with --save-every/--save-epochs/--save all")
    dataset = dataset_for(run, device=device)
    template = model_for(run, dataset, device=device)
    members = models_at_once(run.config.model,
                             sum(p.numel() for p in template.parameters()), device)
    # states are read one chunk at a time: a long run's saved epochs need not all fit in memory
    out: dict[str, list] = {}
    with progress_bar(range(0, len(epochs), members), enabled=progress, label=run.name) as bar:
        for start in bar:
            states = [run.state_dict(e, device) for e in epochs[start:start + members]]
            part = amplitudes(template, states, split_sources(dataset), run.config.objective.loss,
                              normalization, splits=splits, members=members)
            for k, v in part.items():
                out.setdefault(k, []).append(v)
    values = {k: np.concatenate(v) for k, v in out.items()}
    values["epoch"] = np.asarray(epochs, dtype=np.int64)
    return values


def gradnorm(runs: Sequence[Run], out: str | Path, *, device: torch.device,
             normalization: Normalization = Normalization(), splits: Sequence[str] = SPLITS,
             epochs: Sequence[int] | None = None, progress: bool = True,
             overwrite: bool = False) -> Path:
    """Gradient amplitudes of the saved epochs (all, or `epochs` and, where saved, each run's
    early-stopping epoch, so that its marker is exact) of every run, written to `out` (an HDF5
    result: long-format rows over (run, epoch), per-run arrays, the parameters as attributes).
    A result of the same runs and parameters at `out` is reused; another is refused unless
    `overwrite` (loading.reuse_result).

    Under torchrun each rank computes a share of the (run, epoch) pairs; rank 0 gathers them into
    the file (docs/guides/scale-out.md)."""
    runs = list(runs)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise BadInput(f"unknown split(s) {bad or list(splits)}; use train and/or test")
    check_same_architecture(runs)
    names = result_names(runs)  # runs no path can tell apart: refused before any work
    for run in runs:
        if len(run.saved_epochs) == 0:
            raise BadInput(f"{run.path}: no saved epochs yet")
    identity = {**runs_identity(runs), **normalization.attrs(), "splits": list(splits),
                "epochs": None if epochs is None else sorted(epochs)}
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    world = distributed.join()
    stopping = [early_stopping_epoch(run.metric("val_acc")) for run in runs]
    wanted = [run.saved_epochs if epochs is None else sorted(
        set(epochs) | ({stop} if stop in run.saved_epochs else set()))
        for run, stop in zip(runs, stopping)]
    # this rank's (run, epoch) pairs: contiguous, so mostly whole runs (each run's data loads once)
    mine = distributed.share([(i, e) for i, w in enumerate(wanted) for e in w], world)
    with distributed.exchange(world) as computed:
        device = distributed.rank_device(device, world)
        computed.value = [(i, run_amplitudes(runs[i], device=device, normalization=normalization,
                                             splits=splits, epochs=[e for j, e in mine if j == i],
                                             progress=progress and world.rank == 0))
                          for i in dict.fromkeys(i for i, _ in mine)]
    rows, arrays = _gathered(runs, names, stopping, computed.values)
    with distributed.exchange(world):  # rank 0 writes; no rank returns before the file exists
        if world.rank == 0:
            attrs = {**normalization.attrs(), "splits": list(splits),
                     "runs": [str(run.path) for run in runs],
                     "config_digests": [run.config.digest() for run in runs],
                     "epochs": [[int(e) for e in r["epoch"]] for r in rows],
                     "split_sizes": [{s: len(dataset_for(run, device=device).split(s))
                                      for s in SPLITS} for run in runs],
                     "model_mode": "eval", "identity": identity}
            write_result(out, kind=KIND, attrs=attrs, arrays=arrays)
    return Path(out)




def _gathered(runs: Sequence[Run], names: Sequence[str], stopping: Sequence[int],
              shares: Sequence[list]
              ) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Every rank's (run index, values) shares as each run's rows (in rank order, so in epoch
    order) and the result file's arrays: long-format rows over (run, epoch) and per-run arrays."""
    rows: list[dict[str, np.ndarray]] = []
    marked = []
    for index, stop in enumerate(stopping):
        parts = [part for shared in shares for i, part in shared if i == index]
        values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        values["run"] = np.full(len(values["epoch"]), index, dtype=np.int64)
        rows.append(values)
        marked.append(_nearest(values["epoch"].tolist(), stop))
    arrays = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    arrays.update(
        run_name=np.array(names),  # runs named alike: told apart by their paths
        run_path=np.array([str(run.path) for run in runs]),
        flood=np.array([run.config.objective.flood for run in runs]),
        flooded=np.array([run.config.objective.floods for run in runs]),
        objective=np.array([run.config.objective.label for run in runs]),
        early_stopping_epoch=np.array(stopping, dtype=np.int64),
        marked_epoch=np.array(marked, dtype=np.int64))
    return rows, arrays


def _ranges(epochs: Sequence[int]) -> str:
    """A short listing of many epochs: "0, 10, 20, ..., 500"."""
    shown = list(map(str, epochs))
    return ", ".join(shown if len(shown) <= 8 else shown[:3] + ["..."] + shown[-2:]) or "none"


def _nearest(computed: Sequence[int], epoch: int) -> int:
    """The computed epoch closest to `epoch` (the earlier one on ties): where its marker can go."""
    return min(computed, key=lambda e: (abs(e - epoch), e))
