"""The run store: one HDF5 file per trained model, in a documented, versioned layout.

Layout (format "landscape-run", version 1; checkpoints/README.md documents it for other tools):

    /                      attrs: format, format_version, name, config (JSON of RunConfig),
                           config_digest, execution (JSON), versions (JSON), device, created
    /status                scalar string: running | complete | diverged
    /epochs_done           scalar int64: last epoch whose row is committed (-1 before epoch 0)
    /metrics/<name>        float64 [epochs + 1]; row e = after e epochs (0 = untrained); NaN = not
                           measured
    /weights/epochs        int64 [S]: the epochs the save policy keeps (0, the initial weights, always)
    /weights/<key>         [S, *shape]: the model's state dict (parameters and buffers), one chunk an
                           epoch; slot i is valid once epochs[i] <= epochs_done
    /snapshot/step         scalar int64: global step (1-based) whose mini-batch loss first fell below
                           b, -1 if none yet; /snapshot/epoch, /snapshot/batch_loss beside it
    /snapshot/state/<key>  the model's state dict at that step (before its update)
    /resume/slot{0,1}/...  model and optimizer state after epoch e, in slot e % 2
    /data/flipped_<split>  int64: indices of the flipped labels of each split
    /data/<name>           per-sample arrays of the objective (AdaFlood: flood_levels, ...)

Crash safety: every dataset is created and its space allocated when the file is made (under a
temporary name, renamed when complete). An epoch then only writes raw data into allocated space and
finishes by writing /epochs_done, an 8-byte write that commits it; no HDF5 metadata changes after
creation. The resume state alternates between two slots, so the committed slot is never the one
being written. Killing the trainer at any moment loses at most the epoch in flight.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
import torch

from . import __version__
from .config import Execution, RunConfig
from .errors import BadInput

FORMAT = "landscape-run"
FORMAT_VERSION = 1
SWEEP_INDEX = "sweep.json"
STATUSES = ("running", "complete", "diverged")

Layout = Mapping[str, tuple[tuple[int, ...], np.dtype]]  # key -> (shape, dtype)


def layout_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {k: (tuple(t.shape), _numpy_dtype(t.dtype)) for k, t in tensors.items()}


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(str(dtype).removeprefix("torch."))


def _preallocated(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype,
                  chunks: tuple[int, ...] | None = None) -> h5py.Dataset:
    """A dataset whose file space exists now (sparse, unwritten), so later writes touch no metadata."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl)


def create_run(path: Path, config: RunConfig, execution: Execution, *, device: str,
               metric_names: Iterable[str], model_layout: Layout, optim_layout: Layout,
               flipped: Mapping[str, np.ndarray],
               arrays: Mapping[str, np.ndarray] | None = None) -> None:
    """Make a complete, empty run file at `path` (built under a temporary name, then renamed).
    `arrays` go under /data beside the flipped labels (AdaFlood's per-sample levels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    epochs = config.optim.epochs
    saved = np.asarray(config.save_epochs, dtype=np.int64)
    with h5py.File(partial, "w") as f:
        f.attrs.update(
            format=FORMAT, format_version=FORMAT_VERSION, name=config.name,
            config=config.to_json(), config_digest=config.digest(),
            execution=execution.to_json(), device=device,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            versions=json.dumps({"landscape": __version__, "torch": torch.__version__,
                                 "h5py": h5py.__version__, "numpy": np.__version__,
                                 "python": platform.python_version()}),
        )
        f.create_dataset("status", data=np.bytes_("running"), dtype="S16")
        f.create_dataset("epochs_done", data=np.int64(-1))
        metrics = f.create_group("metrics")
        for name in metric_names:
            metrics.create_dataset(name, data=np.full(epochs + 1, np.nan))
        weights = f.create_group("weights")
        weights.create_dataset("epochs", data=saved)
        for key, (shape, dtype) in model_layout.items():
            _preallocated(weights, key, (len(saved), *shape), dtype, chunks=(1, *shape))
        if config.objective.takes_snapshot:
            snap = f.create_group("snapshot")
            snap.create_dataset("step", data=np.int64(-1))
            snap.create_dataset("epoch", data=np.int64(-1))
            snap.create_dataset("batch_loss", data=np.float64(np.nan))
            state = snap.create_group("state")
            for key, (shape, dtype) in model_layout.items():
                _preallocated(state, key, shape, dtype)
        for slot in ("slot0", "slot1"):
            group = f.create_group(f"resume/{slot}")
            for prefix, layout in (("model", model_layout), ("optim", optim_layout)):
                for key, (shape, dtype) in layout.items():
                    _preallocated(group, f"{prefix}/{key}", shape, dtype)
        data = f.create_group("data")
        for split, idx in flipped.items():
            data.create_dataset(f"flipped_{split}", data=np.asarray(idx, dtype=np.int64))
        for name, values in (arrays or {}).items():
            data.create_dataset(name, data=np.asarray(values))
    os.replace(partial, path)


def _to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class RunWriter:
    """Appends epochs to a run file made by `create_run`. One writer per file at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.file = h5py.File(self.path, "r+")
        self.saved_epochs = [int(e) for e in self.file["weights/epochs"][()]]
        # Dataset handles looked up once: h5py's path lookups cost more than a small model's epoch.
        self._datasets: dict[str, h5py.Dataset] = {}
        self.file.visititems(lambda name, obj: self._datasets.__setitem__(name, obj)
                             if isinstance(obj, h5py.Dataset) else None)

    def write_epoch(self, epoch: int, metrics: Mapping[str, float], *,
                    model_state: Mapping[str, torch.Tensor],
                    optim_state: Mapping[str, torch.Tensor],
                    snapshot: tuple[int, int, float, Mapping[str, torch.Tensor]] | None = None
                    ) -> None:
        """Write epoch `epoch`'s row, state and (if taken this epoch) snapshot; then commit it."""
        d = self._datasets
        self.write_metrics(epoch, metrics)
        if epoch in self.saved_epochs:
            slot = self.saved_epochs.index(epoch)
            for key, tensor in model_state.items():
                d[f"weights/{key}"][slot] = _to_numpy(tensor)
        if snapshot is not None:
            step, snap_epoch, batch_loss, state = snapshot
            for key, tensor in state.items():
                d[f"snapshot/state/{key}"][...] = _to_numpy(tensor)
            d["snapshot/epoch"][()] = snap_epoch
            d["snapshot/batch_loss"][()] = batch_loss
            d["snapshot/step"][()] = step
        slot_group = f"resume/slot{epoch % 2}"
        for prefix, state in (("model", model_state), ("optim", optim_state)):
            for key, tensor in state.items():
                d[f"{slot_group}/{prefix}/{key}"][...] = _to_numpy(tensor)
        self.file.flush()
        d["epochs_done"][()] = epoch  # the commit
        self.file.flush()

    def write_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """An epoch's metrics, uncommitted (write_epoch commits; a diverged epoch stays so)."""
        for name, value in metrics.items():
            if f"metrics/{name}" in self._datasets:  # a file made before a metric existed
                self._datasets[f"metrics/{name}"][epoch] = value   # continues without it

    def set_status(self, status: str) -> None:
        assert status in STATUSES
        self._datasets["status"][()] = np.bytes_(status)
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Snapshot:
    step: int
    epoch: int
    batch_loss: float
    state: dict[str, torch.Tensor]


class Run:
    """A run file, read-only. Opening validates it; tensors are read on demand."""

    def __init__(self, path: str | Path, *, data_dir: str | Path | None = None) -> None:
        """`data_dir`: where an image set's files are now, instead of where training read them."""
        self.path = Path(path)
        with _open_run_file(self.path) as f:
            try:
                self.config = RunConfig.from_json(f.attrs["config"])
            except Exception as err:  # any malformed config is the file's fault
                raise BadInput(f"{self.path}: unreadable run configuration ({err})") from None
            self.execution = json.loads(f.attrs.get("execution", "{}"))
            self.data_dir = str(data_dir) if data_dir else self.execution.get("data_dir")
            self.versions = json.loads(f.attrs.get("versions", "{}"))
            self.device = str(f.attrs.get("device", ""))
            self.created = str(f.attrs.get("created", ""))
            self.status = f["status"][()].decode()
            self.epochs_done = int(f["epochs_done"][()])
            self.metric_names = tuple(f["metrics"].keys())
            self._all_saved = tuple(int(e) for e in f["weights/epochs"][()])
            self.state_keys = tuple(k for k in f["weights"].keys() if k != "epochs")
            # Files of adaptive runs from b = 0 made before such runs took snapshots have no slot.
            self.snapshot_slot = "snapshot" in f
        # An unfinished run is either being trained now or was stopped (killed, not started).
        self.in_progress = self.status == "running" and being_written(self.path)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def epochs(self) -> int:
        return self.config.optim.epochs

    @property
    def saved_epochs(self) -> tuple[int, ...]:
        """Epochs whose weights are in the file now."""
        return tuple(e for e in self._all_saved if e <= self.epochs_done)

    def _file(self) -> h5py.File:
        return _open_run_file(self.path)

    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric, rows 0..epochs_done."""
        with self._file() as f:
            return {k: f["metrics"][k][: self.epochs_done + 1] for k in self.metric_names}

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metric_names:
            raise BadInput(f"{self.path}: no metric {name!r}")
        with self._file() as f:
            return f["metrics"][name][: self.epochs_done + 1]

    def state_dict(self, epoch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The model's state dict after `epoch` epochs (0 = initial weights)."""
        if epoch not in self.saved_epochs:
            shown = ", ".join(map(str, self.saved_epochs)) or "none"
            raise BadInput(f"{self.path}: epoch {epoch} was not saved (saved epochs: {shown}); "
                           "train with --save-every/--save-epochs/--save all to keep it")
        slot = self._all_saved.index(epoch)
        with self._file() as f:
            # np.asarray: a 0-d tensor (BatchNorm's num_batches_tracked) reads as a numpy scalar
            return {k: torch.from_numpy(np.asarray(f["weights"][k][slot])).to(device)
                    for k in self.state_keys}

    def snapshot(self, device: torch.device | str = "cpu") -> Snapshot | None:
        """The model when its mini-batch loss first fell below b, if that happened."""
        with self._file() as f:
            if "snapshot" not in f:
                return None
            step, epoch = int(f["snapshot/step"][()]), int(f["snapshot/epoch"][()])
            if step < 0 or epoch > self.epochs_done:
                return None
            state = {k: torch.from_numpy(np.asarray(f["snapshot/state"][k][()])).to(device)
                     for k in self.state_keys}
            return Snapshot(step, epoch, float(f["snapshot/batch_loss"][()]), state)

    def resume_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(model state, optimizer state) after epoch `epochs_done`."""
        if self.epochs_done < 0:
            raise BadInput(f"{self.path}: nothing to resume from (no epoch committed)")
        with self._file() as f:
            group = f[f"resume/slot{self.epochs_done % 2}"]

            def read(prefix: str) -> dict[str, torch.Tensor]:
                out: dict[str, torch.Tensor] = {}
                if prefix in group:
                    group[prefix].visititems(lambda k, v: out.__setitem__(
                        k, torch.from_numpy(np.asarray(v[()]))) if isinstance(v, h5py.Dataset)
                        else None)
                return out

            return read("model"), read("optim")

    def flipped(self, split: str) -> np.ndarray:
        with self._file() as f:
            return f[f"data/flipped_{split}"][()]

    def data_array(self, name: str) -> np.ndarray:
        """A per-sample array stored under /data when the run was made (e.g. flood_levels)."""
        with self._file() as f:
            if name not in f["data"]:
                raise BadInput(f"{self.path}: no /data/{name} (made by another objective?)")
            return f["data"][name][()]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.status}, epoch {self.epochs_done}/{self.epochs})"


def being_written(path: Path) -> bool:
    """Whether another process holds the file open for writing, as HDF5's file lock tells (never,
    where locking is off, e.g. HDF5_USE_FILE_LOCKING=FALSE on some network file systems)."""
    try:
        h5py.File(path, "r").close()
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _open_run_file(path: Path) -> h5py.File:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a run file")
    try:
        f = h5py.File(path, "r")
    except BlockingIOError:
        # The trainer holds the file open for writing (a run in progress): read what it has flushed,
        # which is consistent after every epoch (the commit is /epochs_done, written last).
        f = h5py.File(path, "r", locking=False)
    except OSError as err:
        raise BadInput(f"{path} is not a readable HDF5 file (corrupt or truncated?): "
                       f"{str(err).splitlines()[0]}") from None
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        f.close()
        raise BadInput(f"{path} is an HDF5 file but not a landscape run file")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        f.close()
        newer = version > FORMAT_VERSION
        raise BadInput(f"{path} has run-file format version {version}; this landscape reads version "
                       f"{FORMAT_VERSION}" + ("; upgrade landscape" if newer else
                                              "; retrain with this version"))
    return f


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run files named by paths: files as given; a sweep folder's runs in index order; any other
    folder's *.h5 files, recursively and sorted, leaving out the analyses' result files."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            index = p / SWEEP_INDEX
            if index.is_file():
                found.extend(p / name for name in read_sweep_index(p)["runs"])
            else:
                found.extend(sorted(q for q in p.rglob("*.h5") if not _analysis_result(q)))
        elif p.exists():
            found.append(p)
        else:
            raise BadInput(f"{p}: no such file or folder")
    if not found:
        raise BadInput("no run files found in " + ", ".join(map(str, paths)))
    return found


def file_format(path: Path) -> str | None:
    """An HDF5 file's `format` attribute ("landscape-run", "landscape-slice", ...), read without
    the file lock (a run may be in training); OSError if it is no readable HDF5 file."""
    with h5py.File(path, "r", locking=False) as f:
        return f.attrs.get("format")


def _analysis_result(path: Path) -> bool:
    """Whether an .h5 file is one of the analyses' result files (`landscape-slice`, ...), which a
    folder of runs may hold beside them. Unreadable files count as runs, to be reported as such."""
    try:
        fmt = file_format(path)
    except OSError:
        return False
    return isinstance(fmt, str) and fmt.startswith("landscape-") and fmt != FORMAT


def open_runs(paths: Iterable[str | Path], *, data_dir: str | Path | None = None) -> list[Run]:
    return [Run(p, data_dir=data_dir) for p in find_runs(paths)]


def write_sweep_index(folder: Path, runs: list[Path], grid: dict) -> None:
    """The sweep's index: its run files (relative names) and grid, written atomically."""
    index = {"format": "landscape-sweep", "format_version": FORMAT_VERSION,
             "runs": [str(Path(r).relative_to(folder)) for r in runs], "grid": grid}
    tmp = folder / (SWEEP_INDEX + ".partial")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, folder / SWEEP_INDEX)


def read_sweep_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / SWEEP_INDEX).read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"{folder / SWEEP_INDEX}: unreadable sweep index ({err})") from None
    if index.get("format") != "landscape-sweep" or not isinstance(index.get("runs"), list):
        raise BadInput(f"{folder / SWEEP_INDEX} is not a landscape sweep index")
    return index
