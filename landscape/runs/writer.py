"""Writing run files (store.py documents the layout and reads them, maker.py makes them):
`RunWriter` commits epochs into a file's preallocated space (recording.py decides when).

Crash safety: every dataset is created and its space allocated when the file is made (under a
fresh temporary name created exclusively, then linked to its name: files.py). A commit then only
writes raw data into allocated space and finishes by writing /epochs_done, an 8-byte write that
commits it; no HDF5 metadata changes after creation. The trainer (recording.py) commits metric
rows every epoch or, where that would cost, in blocks every few seconds, and the resume state
(model and optimizer) only at its checkpoints (an interval in seconds, saved and final epochs),
into the slot not holding the latest one, which is marked -1 while it is written. Killing the
trainer loses at most the epochs since the last checkpoint: resuming recomputes them, to the same
numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
import torch

from landscape.files import WriteLock, os_error
from landscape.runs.store import STATUSES, Snapshot, resume_slots


def _to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class _Rows:
    """Consecutive elements of a 1-D dataset, written through HDF5's low-level call: h5py's
    indexing costs ~0.4 ms a write, which for small stacked models was most of an epoch."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.id = dataset.id

    def write(self, first: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float64)
        space = self.id.get_space()
        space.select_hyperslab((first,), (len(values),))
        self.id.write(h5py.h5s.create_simple((len(values),)), space, values)


def _put(dataset: h5py.h5d.DatasetID, values, slot: int | None = None) -> None:
    """Write a whole dataset (or its slot `slot` along the first axis) through HDF5's low-level
    call, which costs a tenth of h5py's indexing for the small tensors of small models."""
    values = np.asarray(_to_numpy(values), dtype=dataset.dtype, order="C")  # keeps 0-d as 0-d
    if slot is None:
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, values)
        return
    space = dataset.get_space()
    space.select_hyperslab((slot,) + (0,) * values.ndim, (1,) + values.shape)
    dataset.write(h5py.h5s.create_simple((1,) + values.shape), space, values)


class _Datasets(dict):
    """The datasets written at every commit, by path, each looked up once (h5py's path lookups
    cost more than a small model's epoch). The others (weights, snapshot, resume slots) are looked
    up when written: every object h5py holds slows down closing any file (h5py visits them all),
    which with a stacked chunk's files open at once cost ~20 ms a file."""

    def __init__(self, file: h5py.File) -> None:
        super().__init__()
        self.file = file

    def __missing__(self, name: str) -> h5py.h5d.DatasetID:
        self[name] = dataset = self.file[name].id
        return dataset


def close_all(writers: Iterable[RunWriter]) -> None:
    """Close writers, every one's cached handles released first: closing a file costs h5py time
    for each object still open in any file."""
    writers = list(writers)
    for writer in writers:
        writer.release()
    for writer in writers:
        writer.close()


class RunWriter:
    """Appends epochs to a run file made by `create_run`. One writer per file at a time: it holds
    the file's WriteLock (bad input if another process does); readers never take it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = WriteLock(self.path)
        try:
            self.file = h5py.File(self.path, "r+", locking=False)
        except OSError as err:
            self.lock.release()
            raise os_error(err, self.path) from None
        self.saved_epochs = [int(e) for e in self.file["weights/epochs"][()]]
        self._datasets = _Datasets(self.file)
        self._rows = {name: _Rows(self.file[f"metrics/{name}"]) for name in self.file["metrics"]}
        # A version-1 file keeps its layout: its resume state is written every epoch, slot e % 2.
        self.version = int(self.file.attrs["format_version"])
        self.slots = resume_slots(self.file, int(self.file["epochs_done"][()]))

    @property
    def checkpoints_every_epoch(self) -> bool:
        """Whether every epoch must carry its resume state (files of version 1)."""
        return self.version < 2

    def resume_from(self, epoch: int) -> None:
        """Training continues after `epoch` (-1: afresh): the slots of later epochs will be
        rewritten, so they no longer count (their epochs are recomputed, to the same numbers)."""
        self.slots = [e if e <= epoch else -1 for e in self.slots]
        if self.version >= 2:
            _put(self._datasets["resume/epochs"], self.slots)

    def commit(self, epoch: int, rows: Mapping[str, np.ndarray], *, first: int,
               weights: Mapping[str, torch.Tensor] | None = None,
               resume: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
               snapshot: Snapshot | None = None) -> None:
        """Write the metric rows of epochs first..epoch, the weights of `epoch` (a saved epoch),
        the snapshot and the resume state (model, optimizer) after `epoch` (a checkpoint); then
        commit them: epochs_done = epoch. A version-1 file needs the resume state every epoch."""
        try:
            self._commit(epoch, rows, first, weights, resume, snapshot)
        except OSError as err:  # a full disk: the epochs stay uncommitted
            raise os_error(err, self.path) from None

    def _commit(self, epoch, rows, first, weights, resume, snapshot) -> None:
        d = self._datasets
        if self.checkpoints_every_epoch:
            assert resume is not None, "a version-1 file needs its resume state every epoch"
        self._write_rows(first, rows)
        if weights is not None:
            slot = self.saved_epochs.index(epoch)
            self._put_all("weights", weights, slot)
        if snapshot is not None:
            self._put_all("snapshot/state", snapshot.state)
            _put(d["snapshot/epoch"], snapshot.epoch)
            _put(d["snapshot/batch_loss"], snapshot.batch_loss)
            _put(d["snapshot/step"], snapshot.step)
        if resume is not None:
            self._write_resume(epoch, *resume)
        self.file.flush()
        _put(d["epochs_done"], epoch)  # the commit
        self.file.flush()

    def _write_resume(self, epoch, model_state, optim_state) -> None:
        d = self._datasets
        if self.version < 2:
            slot = epoch % 2
        else:  # the slot not holding the latest state, marked empty until it is whole
            slot = 0 if self.slots[0] <= self.slots[1] else 1  # every epoch: slot e % 2, as v1
            self.slots[slot] = -1
            _put(d["resume/epochs"], self.slots)
            self.file.flush()
        for prefix, state in (("model", model_state), ("optim", optim_state)):
            self._put_all(f"resume/slot{slot}/{prefix}", state)
        self.slots[slot] = epoch
        if self.version >= 2:
            self.file.flush()  # the state is whole before its slot names it
            _put(d["resume/epochs"], self.slots)

    def _write_rows(self, first: int, rows: Mapping[str, np.ndarray]) -> None:
        for name, values in rows.items():
            writer = self._rows.get(name)
            if writer is not None and len(values):  # a file made before a metric existed
                writer.write(first, values)         # continues without it

    def write_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """An epoch's metrics, uncommitted (a diverged epoch stays so; `commit` commits)."""
        try:
            self._write_rows(epoch, {name: np.array([v]) for name, v in metrics.items()})
        except OSError as err:
            raise os_error(err, self.path) from None

    def set_status(self, status: str) -> None:
        assert status in STATUSES
        try:
            dataset = self.file["status"]  # fixed-length bytes in files of version 1
            fixed = h5py.check_string_dtype(dataset.dtype).length is not None
            dataset[()] = np.bytes_(status) if fixed else status
            self.file.flush()
        except OSError as err:
            raise os_error(err, self.path) from None

    def _put_all(self, group: str, tensors: Mapping[str, torch.Tensor],
                 slot: int | None = None) -> None:
        """Write tensors into the datasets of a group written only now and then, opened for this
        write through HDF5's low-level calls (a sixth of h5py's lookup each)."""
        if not tensors:
            return
        parent = h5py.h5g.open(self.file.id, group.encode())
        for key, tensor in tensors.items():
            _put(h5py.h5d.open(parent, key.encode()), tensor, slot)

    def release(self) -> None:
        """Drop the cached dataset handles (a closed writer's first step; see close_all)."""
        self._datasets.clear()
        self._rows.clear()

    def close(self) -> None:
        self.release()
        try:
            self.file.close()
        except OSError:  # a disk that filled up: what was committed before stays valid
            pass
        finally:
            self.lock.release()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
