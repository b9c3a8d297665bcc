"""Making run files (store.py documents the layout, writer.py appends to them): `create_run`
makes one complete, empty file; `Maker` makes many, copying a template per layout; `extend_run`
(more epochs) and `drop_resume_state` (a finished run, smaller) rewrite one.

Every dataset is created and its space allocated when the file is made, under a fresh temporary
name created exclusively and then linked to its name (files.py), so later commits write only raw
data. A new file's arrays must fit in the free space, and their blocks are reserved when it is made
(posix_fallocate), so a disk filling up later cannot fail an epoch's write.
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

from landscape import __version__
from landscape.config import RunConfig
from landscape.config.execution import Execution
from landscape.files import WriteLock, check_space, publish, reserve, temporary
from landscape.runs import descriptions
from landscape.runs.store import FORMAT, FORMAT_VERSION, STATUSES, Layout


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
RESUME_EPOCHS = "resume/epochs"


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
    _metrics(f, metric_names, epochs)
    _weights(f, saved, model_layout)
    if config.objective.takes_snapshot:
        snap = f.create_group("snapshot")
        snap.create_dataset("step", data=np.int64(-1))
        snap.create_dataset("epoch", data=np.int64(-1))
        snap.create_dataset("batch_loss", data=np.float64(np.nan))
        state = snap.create_group("state")
        for key, (shape, dtype) in model_layout.items():
            _preallocated(state, key, shape, dtype)
    f.create_dataset(RESUME_EPOCHS, data=np.full(2, -1, dtype=np.int64))
    for slot in ("slot0", "slot1"):
        group = f.create_group(f"resume/{slot}")
        for prefix, layout in (("model", model_layout), ("optim", optim_layout)):
            for key, (shape, dtype) in layout.items():
                _preallocated(group, f"{prefix}/{key}", shape, dtype)


def _metrics(f: h5py.File, names: Iterable[str], epochs: int) -> h5py.Group:
    """/metrics: a row per epoch 0..epochs, NaN until measured."""
    metrics = f.create_group("metrics")
    for name in names:
        _checked(metrics, name, np.full(epochs + 1, np.nan),
                 chunks=(min(epochs + 1, METRIC_CHUNK),))
        meaning, units = descriptions.metric(name)
        metrics[name].attrs.update(description=meaning, units=units)
    return metrics


def _weights(f: h5py.File, saved: np.ndarray, model_layout: Layout) -> h5py.Group:
    """/weights: the epochs kept and, per state-dict key, a slot for each (allocated, empty)."""
    weights = f.create_group("weights")
    weights.attrs["order"] = json.dumps(list(model_layout))  # HDF5 lists names sorted
    _checked(weights, "epochs", saved)
    weights["epochs"].attrs["description"] = "epochs whose parameters are kept (0 always)"
    for key, (shape, dtype) in model_layout.items():
        _preallocated(weights, key, (len(saved), *shape), dtype, chunks=(1, *shape))
        weights[key].attrs["description"] = descriptions.weights(key)
    return weights


# Rewriting a run file: into a new file under a temporary name, then given the run's name, so
# that the file really shrinks or grows (HDF5 never returns the space of deleted objects) and a
# kill leaves the old file whole. The run's WriteLock is held meanwhile.

def extend_run(path: Path, config: RunConfig, *, untested: Iterable[int] = ()) -> None:
    """Make the run file at `path` one of `config`, which asks for more epochs than the file's
    config and is otherwise the same: its metric rows, the weights of the epochs `config` keeps
    too, the snapshot, resume state and /data carried over, the new epochs empty and the run
    unfinished, to be resumed. `untested`: committed epochs whose test metrics the longer run
    would not have measured (they were measured as the last epoch), cleared to NaN."""
    def build(src: h5py.File, dst: h5py.File) -> None:
        saved = np.asarray(config.save_epochs, dtype=np.int64)
        old_saved = [int(e) for e in src["weights/epochs"][()]]
        done = int(src["epochs_done"][()])
        for name in src:
            if name not in ("metrics", "weights"):
                src.copy(src[name], dst, name)
        dst["status"][()] = "running"
        metrics = _metrics(dst, list(src["metrics"]), config.optim.epochs)
        for name in src["metrics"]:
            rows = src["metrics"][name][:done + 1]
            if name.startswith("test_"):
                rows[[e for e in untested if e <= done]] = np.nan
            metrics[name][:done + 1] = rows
        order = json.loads(src["weights"].attrs["order"])
        layout = {k: (src["weights"][k].shape[1:], src["weights"][k].dtype) for k in order}
        weights = _weights(dst, saved, layout)
        for slot, epoch in enumerate(saved.tolist()):
            if epoch <= done and epoch in old_saved:
                for key in order:
                    weights[key][slot] = src["weights"][key][old_saved.index(epoch)]
        dst.attrs.update(config=config.to_json(), config_digest=config.digest())

    with h5py.File(path, "r", locking=False) as f:  # at most: the new arrays beside the old
        model = sum(int(np.prod(d.shape[1:])) * d.dtype.itemsize
                    for k, d in f["weights"].items() if k != "epochs")
        extra = (len(f["metrics"]) * 8 * (config.optim.epochs + 1)
                 + len(config.save_epochs) * model)
    _rewrite(path, build, extra=extra)


def drop_resume_state(path: Path) -> None:
    """Remove a finished run's resume state (two copies of the model and optimizer: most of a
    file that keeps few epochs). /resume/epochs stays, naming no epoch: the run cannot be
    continued, and is otherwise whole."""
    def build(src: h5py.File, dst: h5py.File) -> None:
        for name in src:
            if name != "resume":
                src.copy(src[name], dst, name)
        dst.create_dataset(RESUME_EPOCHS, data=np.full(2, -1, dtype=np.int64))

    _rewrite(path, build, extra=0)


def _rewrite(path: Path, build, *, extra: int) -> None:
    """Rebuild the run file at `path` with `build(old, new)` (the root attributes are copied
    first), needing about `extra` bytes more than it has."""
    path = Path(path)
    lock = WriteLock(path)
    try:
        with temporary(path) as partial:
            check_space(path, path.stat().st_size + extra)
            with h5py.File(path, "r", locking=False) as src, \
                    h5py.File(partial, "w-", locking=False) as dst:
                dst.attrs.update(src.attrs)
                build(src, dst)
            reserve(partial)
            publish(partial, path, replace=True)
    finally:
        lock.release()
