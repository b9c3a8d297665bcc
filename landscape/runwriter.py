"""Writing run files (store.py documents the layout and reads them): `create_run` makes a complete,
empty file, `RunWriter` commits epochs into its preallocated space (recording.py decides when).

Crash safety: every dataset is created and its space allocated when the file is made (under a
fresh temporary name created exclusively, then linked to its name: files.py). A commit then only
writes raw data into allocated space and finishes by writing /epochs_done, an 8-byte write that
commits it; no HDF5 metadata changes after creation. The trainer (recording.py) commits metric
rows every epoch or, where that would cost, in blocks every few seconds, and the resume state
(model and optimizer) only at its checkpoints (an interval in seconds, saved and final epochs),
into the slot not holding the latest one, which is marked -1 while it is written. Killing the trainer loses at most the epochs since
the last checkpoint: resuming recomputes them, to the same numbers.

Space: a new file's arrays must fit in the free space, and their blocks are reserved when the
file is made (posix_fallocate), so a disk filling up later cannot fail an epoch's write.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
import torch

from . import __version__
from . import descriptions
from .config import Execution, RunConfig
from .files import WriteLock, check_space, os_error, publish, reserve, temporary
from .store import FORMAT, FORMAT_VERSION, STATUSES, Layout, Snapshot, resume_slots


def _preallocated(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype,
                  chunks: tuple[int, ...] | None = None) -> h5py.Dataset:
    """A dataset whose file space exists now (sparse, unwritten), so later writes touch no metadata;
    checksummed unless it is a scalar (which cannot be chunked). Default: one chunk."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    if shape and all(shape):
        dcpl.set_chunk(chunks or shape)
        dcpl.set_fletcher32()
    return group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl)


def _checked(group: h5py.Group, name: str, data: np.ndarray, chunks: bool | tuple = True) -> None:
    """A dataset of `data` with its checksum (an empty one has no chunk to checksum)."""
    data = np.asarray(data)
    if data.size:
        group.create_dataset(name, data=data, chunks=chunks, fletcher32=True)
    else:
        group.create_dataset(name, data=data)


# Rows of a metric per chunk: a chunk is rewritten (whole, with its checksum) at every commit, and
# 64 rows keep that write within a page or two.
METRIC_CHUNK = 64


def create_run(path: Path, config: RunConfig, execution: Execution, *, device: str,
               metric_names: Iterable[str], model_layout: Layout, optim_layout: Layout,
               flipped: Mapping[str, np.ndarray],
               arrays: Mapping[str, np.ndarray] | None = None, replace: bool = False) -> None:
    """Make a complete, empty run file at `path` (built under a fresh temporary name, then given
    its name; unless `replace`, bad input if another process took the name meanwhile).
    `arrays` go under /data beside the flipped labels (AdaFlood's per-sample levels)."""
    with Maker() as maker:
        maker.create(path, config, execution, device=device, metric_names=metric_names,
                     model_layout=model_layout, optim_layout=optim_layout, flipped=flipped,
                     arrays=arrays, replace=replace)


class Maker:
    """Makes run files. Files of one layout (a stacked group's: the same metrics, epochs, saved
    epochs, snapshot and state layouts) differ only in their attributes and /data, so the first
    one's ~150 datasets are built once (40-60 ms) into a template beside it, which the others
    copy (a few ms for small models); the template is removed on leaving the block."""

    def __init__(self) -> None:
        self.templates: dict[str, Path] = {}
        self.cleanup = contextlib.ExitStack()

    def __enter__(self) -> Maker:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup.close()

    def create(self, path: Path, config: RunConfig, execution: Execution, *, device: str,
               metric_names: Iterable[str], model_layout: Layout, optim_layout: Layout,
               flipped: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray] | None = None,
               replace: bool = False) -> None:
        """As create_run."""
        path, metric_names = Path(path), list(metric_names)
        key = json.dumps([config.optim.epochs, config.save_epochs, config.objective.takes_snapshot,
                          metric_names, *([k, list(shape), str(dtype)] for layout in (
                              model_layout, optim_layout) for k, (shape, dtype) in layout.items())])
        with temporary(path) as partial:
            check_space(path, _array_bytes(config, metric_names, model_layout, optim_layout,
                                           [*flipped.values(), *(arrays or {}).values()]))
            if key not in self.templates:
                self.templates[key] = self._template(path, config, metric_names, model_layout,
                                                     optim_layout)
            with open(self.templates[key], "rb") as src, open(partial, "xb") as dst:
                shutil.copyfileobj(src, dst, 2**20)  # "x": created exclusively, never a link
            with h5py.File(partial, "r+", locking=False) as f:
                _stamp(f, config, execution, device=device, flipped=flipped, arrays=arrays)
            reserve(partial)
            publish(partial, path, replace=replace)

    def _template(self, path: Path, config: RunConfig, metric_names: list[str],
                  model_layout: Layout, optim_layout: Layout) -> Path:
        template = self.cleanup.enter_context(temporary(path))
        self.cleanup.callback(template.unlink, missing_ok=True)
        with h5py.File(template, "w-", locking=False) as f:  # w-: O_EXCL, never through a link
            _skeleton(f, config, metric_names=metric_names, model_layout=model_layout,
                      optim_layout=optim_layout)
        return template


def _array_bytes(config: RunConfig, metric_names: Iterable[str], model_layout: Layout,
                 optim_layout: Layout, arrays: Iterable[np.ndarray]) -> int:
    """The bytes of a run file's arrays: metrics, saved weights, snapshot, two resume slots."""
    def size(layout: Layout) -> int:
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                   for shape, dtype in layout.values())
    model_copies = len(config.save_epochs) + 1 + 2  # saved epochs, the snapshot, two slots
    return (len(list(metric_names)) * 8 * (config.optim.epochs + 1) + model_copies * size(
        model_layout) + 2 * size(optim_layout) + sum(np.asarray(a).nbytes for a in arrays))


def _stamp(f: h5py.File, config: RunConfig, execution: Execution, *, device: str,
           flipped: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray] | None) -> None:
    """What is the run's own in a file of its layout: the root attributes and /data."""
    f.attrs.update(
        format=FORMAT, format_version=FORMAT_VERSION, name=config.name,
        config=config.to_json(), config_digest=config.digest(),
        execution=execution.to_json(), device=device,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions=json.dumps({"landscape": __version__, "torch": torch.__version__,
                             "h5py": h5py.__version__, "numpy": np.__version__,
                             "python": platform.python_version()}),
    )
    data = f.create_group("data")
    for split, idx in flipped.items():
        _checked(data, f"flipped_{split}", np.asarray(idx, dtype=np.int64))
    for name, values in (arrays or {}).items():
        _checked(data, name, np.asarray(values))


def _skeleton(f: h5py.File, config: RunConfig, *, metric_names: Iterable[str],
              model_layout: Layout, optim_layout: Layout) -> None:
    """Every dataset of a run file but /data, allocated and empty."""
    epochs = config.optim.epochs
    saved = np.asarray(config.save_epochs, dtype=np.int64)
    status = f.create_dataset("status", data="running", dtype=h5py.string_dtype())
    status.attrs["description"] = f"the run's state: {' | '.join(STATUSES)}"
    f.create_dataset("epochs_done", data=np.int64(-1)).attrs["description"] = (
        "last committed epoch (-1: none yet; 0 is the untrained model)")
    metrics = f.create_group("metrics")
    for name in metric_names:
        _checked(metrics, name, np.full(epochs + 1, np.nan),
                 chunks=(min(epochs + 1, METRIC_CHUNK),))
        meaning, units = descriptions.metric(name)
        metrics[name].attrs.update(description=meaning, units=units)
    weights = f.create_group("weights")
    weights.attrs["order"] = json.dumps(list(model_layout))  # HDF5 lists names sorted
    _checked(weights, "epochs", saved)
    weights["epochs"].attrs["description"] = "epochs whose parameters are kept (0 always)"
    for key, (shape, dtype) in model_layout.items():
        _preallocated(weights, key, (len(saved), *shape), dtype, chunks=(1, *shape))
        weights[key].attrs["description"] = descriptions.weights(key)
    if config.objective.takes_snapshot:
        snap = f.create_group("snapshot")
        snap.create_dataset("step", data=np.int64(-1))
        snap.create_dataset("epoch", data=np.int64(-1))
        snap.create_dataset("batch_loss", data=np.float64(np.nan))
        state = snap.create_group("state")
        for key, (shape, dtype) in model_layout.items():
            _preallocated(state, key, shape, dtype)
    f.create_dataset("resume/epochs", data=np.full(2, -1, dtype=np.int64))
    for slot in ("slot0", "slot1"):
        group = f.create_group(f"resume/{slot}")
        for prefix, layout in (("model", model_layout), ("optim", optim_layout)):
            for key, (shape, dtype) in layout.items():
                _preallocated(group, f"{prefix}/{key}", shape, dtype)


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
