"""Continuing a run to more epochs than it was made for (`train ... --epochs 20 --resume` on a
10-epoch run): sound where the first epochs of the longer run are those of the shorter one.

They are, in everything the trainer computes: the learning rate of an epoch depends on its
milestones only (OptimConfig.lr_at), the batch order and augmentation on (seed, epoch), the
adaptive flood level on the accuracies so far (schedule.py). Two things depend on the total:
- which epochs the save policy keeps ("log" spaces them by it; "every:N" and "epochs:E" keep the
  last one besides; "last" keeps only the last): the extended run keeps what the longer run
  would, so the epochs kept below the shorter run's last must be the same; its last one is kept
  only where the longer run keeps it too;
- the test set, measured at the last epoch whatever the test policy: with policy "best" it is
  cleared there where the longer run would not have measured it;
and AdaFlood's auxiliary models train for the run's number of epochs, so its per-sample levels
depend on it: such runs are not continued.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from landscape.config import RunConfig
from landscape.runs.store import Run


def only_longer(stored: RunConfig, asked: RunConfig) -> bool:
    """Whether `asked` is `stored` but for its number of epochs."""
    return dataclasses.replace(stored, optim=dataclasses.replace(
        stored.optim, epochs=asked.optim.epochs)) == asked


def extension_problem(run: Run, config: RunConfig) -> str | None:
    """Why `run` cannot continue to `config` (its config with more epochs) and hold what a run of
    `config` from scratch would; None when it can."""
    old = run.config
    if config.objective.kind == "adaflood":
        return ("AdaFlood's auxiliary models train for the run's number of epochs, so its "
                "per-sample levels depend on it")
    below = [e for e in config.save_epochs if e < old.epochs]
    kept = [e for e in old.save_epochs if e < old.epochs]
    if below != kept:
        return (f"--save {old.save} keeps other epochs before epoch {old.epochs} in a run of "
                f"{config.optim.epochs} epochs ({_listed(below)}, not {_listed(kept)})")
    if run.format_version < 2:
        return "its file has run-file format 1, from an earlier landscape"
    if run.status == "complete" and not run.resume_epochs:
        return "its resume state was removed when it finished (--drop-resume-state)"
    return None


def _listed(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs[:8])) + (", ..." if len(epochs) > 8 else "")


def untested(run: Run, config: RunConfig) -> tuple[int, ...]:
    """The committed epochs whose test metrics the longer run would not have measured: the
    shorter run's last, if the longer one neither tests every epoch nor keeps that one, and its
    validation accuracy was no new best there (loop.Group.measure)."""
    last = run.epochs
    if run.epochs_done < last or config.eval_test == "every" or last in config.save_epochs:
        return ()
    val = run.metric("val_acc")
    before = val[:last][np.isfinite(val[:last])]
    improved = val[last] > (before.max() if before.size else -np.inf)
    return () if improved else (last,)
