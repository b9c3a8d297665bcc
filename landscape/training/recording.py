"""Writing a group's epochs to its run files: the trainer's loop (loop.py) does no I/O.

What is written when:
- metric rows are committed every epoch while that costs less than COMMIT_SHARE of the time
  (a commit costs ~1 ms a member: every epoch when a member's epoch takes 50 ms or more), else
  kept in memory and committed in blocks at least every METRICS_EVERY seconds and with every
  checkpoint (small stacked models, where two flushes per member and epoch were most of the
  time); a reader of a run in progress sees its epochs at most that late;
- the resume state (model and optimizer) at most every `checkpoint_every` seconds, at every saved
  epoch (with its weights) but 0 and at the last one; every epoch for 0 and for version-1 files;
- a snapshot with the commit after the epoch that took it.
The whole group checkpoints together, so that a resume finds its members at one epoch. A kill
loses the epochs since the last checkpoint; resuming recomputes them, to the same numbers.
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import torch

from landscape.errors import raise_pending
from landscape.runs.store import Snapshot
from landscape.runs.writer import RunWriter
from landscape.training.loop import Epoch

# Each commit costs a member two flushes of its file (~1 ms): rows are committed every epoch while
# commits take at most COMMIT_SHARE of the elapsed time, and at least every METRICS_EVERY seconds.
COMMIT_SHARE = 0.02
METRICS_EVERY = 5.0


def record(epochs: Iterable[Epoch], writers: list[RunWriter], *, committed: int,
           checkpoint_every: float) -> list[str]:
    """Write the group's epochs as they come; return each member's final status, "complete" or
    "diverged". `committed`: the last epoch the files hold (-1 when starting afresh)."""
    log = _Log(writers, committed)
    every_epoch = checkpoint_every == 0 or any(w.checkpoints_every_epoch for w in writers)
    last_checkpoint = last_commit = time.monotonic()
    start, spent = time.perf_counter(), 0.0  # the time in commits, against the elapsed time
    for epoch in epochs:
        raise_pending()  # a Ctrl-C or SIGTERM that a finalizer swallowed (errors.py)
        log.add(epoch)
        for k in epoch.diverged.nonzero().flatten().tolist():
            log.diverge(k, epoch)
        now = time.monotonic()
        saved = epoch.epoch in writers[0].saved_epochs
        # Not at epoch 0 (unless every epoch): a resume from there is a fresh start.
        checkpoint = every_epoch or (epoch.epoch > 0 and (
            saved or epoch.last or now - last_checkpoint >= checkpoint_every))
        cheap = spent <= COMMIT_SHARE * (time.perf_counter() - start)
        if checkpoint or saved or cheap or now - last_commit >= METRICS_EVERY:
            tic = time.perf_counter()
            log.commit(epoch, checkpoint=checkpoint, saved=saved)
            spent += time.perf_counter() - tic
            last_commit = now
            if checkpoint:
                last_checkpoint = now
    for k, writer in enumerate(writers):
        if log.status[k] == "running":
            writer.set_status("complete")
            log.status[k] = "complete"
    return log.status


class _Log:
    """The epochs measured but not yet committed, and each member's last committed one."""

    def __init__(self, writers: list[RunWriter], committed: int) -> None:
        self.writers = writers
        self.committed = [committed] * len(writers)
        self.status = ["running"] * len(writers)
        self.epochs: list[int] = []
        self.metrics: list[dict[str, torch.Tensor]] = []
        self.snapshots: dict[int, Snapshot] = {}
        self.names: tuple[str, ...] = ()

    def add(self, epoch: Epoch) -> None:
        self.names = tuple(epoch.metrics)
        self.epochs.append(epoch.epoch)
        self.metrics.append(epoch.metrics)
        self.snapshots.update(epoch.snapshots)

    def table(self) -> dict[str, np.ndarray]:
        """name -> [epochs held, K] float64."""
        return {name: torch.stack([m[name] for m in self.metrics]).numpy()
                for name in self.names}

    def rows(self, k: int, last: int, table: dict[str, np.ndarray]
             ) -> tuple[int, dict[str, np.ndarray]]:
        """(first epoch, name -> values) of member k's uncommitted rows up to epoch `last`."""
        pick = [i for i, e in enumerate(self.epochs) if self.committed[k] < e <= last]
        first = self.epochs[pick[0]] if pick else last + 1
        return first, {name: values[pick, k] for name, values in table.items()}

    def diverge(self, k: int, epoch: Epoch) -> None:
        """Member k's loss turned non-finite: the epochs before are committed, this one's row is
        written uncommitted, and the run is marked diverged; it writes nothing more."""
        writer = self.writers[k]
        first, rows = self.rows(k, epoch.epoch - 1, self.table())
        if first < epoch.epoch:
            writer.commit(epoch.epoch - 1, rows, first=first,
                          snapshot=self._snapshot(k, epoch.epoch - 1))
        writer.write_metrics(epoch.epoch, {n: float(v[k]) for n, v in epoch.metrics.items()})
        writer.set_status("diverged")
        self.status[k] = "diverged"

    def commit(self, epoch: Epoch, *, checkpoint: bool, saved: bool) -> None:
        group, table = epoch.group, self.table()
        for k, writer in enumerate(self.writers):
            if self.status[k] != "running":
                continue
            first, rows = self.rows(k, epoch.epoch, table)
            state = group.member_state(k) if checkpoint or saved else None
            writer.commit(epoch.epoch, rows, first=first, weights=state if saved else None,
                          resume=(state, group.optim_state(k)) if checkpoint else None,
                          snapshot=self._snapshot(k, epoch.epoch))
            self.committed[k] = epoch.epoch
        self.epochs, self.metrics = [], []

    def _snapshot(self, k: int, last: int) -> Snapshot | None:
        snapshot = self.snapshots.get(k)
        if snapshot is not None and snapshot.epoch <= last:
            return self.snapshots.pop(k)
        return None
