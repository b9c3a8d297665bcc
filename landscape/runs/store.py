"""The run store: one HDF5 file per trained model, in a documented, versioned layout.

Layout (format "landscape-run", version 2; docs/run-files.md documents it for other tools):

    /                      attrs: format, format_version, name, config (JSON of RunConfig),
                           config_digest, execution (JSON), versions (JSON), device, created
    /status                scalar string (variable-length; version 1: S16): running | complete |
                           diverged
    /epochs_done           scalar int64: last epoch whose row is committed (-1 before epoch 0)
    /metrics/<name>        float64 [epochs + 1]; row e = after e epochs (0 = untrained); NaN = not
                           measured
    /weights/epochs        int64 [S]: the epochs the save policy keeps (0, the initial weights, always)
    /weights/<key>         [S, *shape]: the model's state dict (parameters and buffers), one chunk an
                           epoch; slot i is valid once epochs[i] <= epochs_done
    /snapshot/step         scalar int64: global step (1-based) whose mini-batch loss first fell below
                           b, -1 if none yet; /snapshot/epoch, /snapshot/batch_loss beside it
    /snapshot/state/<key>  the model's state dict at that step (before its update)
    /resume/slot{0,1}/...  model and optimizer state after the epochs in /resume/epochs
    /resume/epochs         int64 [2]: the epoch each slot holds, -1 while empty or being written
                           (version 1 has none: slot e % 2 held epoch e, every epoch); a finished
                           run trained with --drop-resume-state has no slots, and -1 twice here
    /data/flipped_<split>  int64: indices of the flipped labels of each split
    /data/<name>           per-sample arrays of the objective (AdaFlood: flood_levels, ...)

Writing (runwriter.py): every dataset is created and its space reserved when the file is made, and
a commit only writes raw data into that space, committed by /epochs_done (crash safety, kill and
resume are described there; when the trainer commits: recording.py).

Integrity: the arrays (metrics, weights, snapshot and resume state, /data) carry HDF5's fletcher32
checksum, so a corrupted byte is an error naming the dataset, never other numbers; the scalars
and attributes are validated when a file is opened. Files written before the checksums open as
they are. A reader may catch a metric's chunk while the trainer rewrites it: a checksum that fails
is read again before it counts as corruption.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
import torch
from torch import nn

from landscape.config import RunConfig
from landscape.device import dtype_of
from landscape.errors import BadInput
from landscape.files import being_written

FORMAT = "landscape-run"
FORMAT_VERSION = 2
# Version 1 (the first release) lacks /resume/epochs: its slot e % 2 holds epoch e, written every
# epoch. resume_slots() is the one place that reads either; writers continue a file in its version.
READABLE_VERSIONS = (1, 2)
STATUSES = ("running", "complete", "diverged")
FOLDER_NAMES = ("SWEEP_INDEX", "find_runs", "file_format", "open_runs", "write_sweep_index",
                "read_sweep_index")

Layout = Mapping[str, tuple[tuple[int, ...], np.dtype]]  # key -> (shape, dtype)


def layout_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {k: (tuple(t.shape), _numpy_dtype(t.dtype)) for k, t in tensors.items()}


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(str(dtype).removeprefix("torch."))


def resume_slots(f: h5py.File, epochs_done: int) -> list[int]:
    """The epoch whose resume state each slot holds, -1 for none: what a version-2 file records
    (an epoch after epochs_done is of a commit that did not finish: none), or, in version 1,
    the last two committed epochs in slots e % 2."""
    if "resume/epochs" in f:
        return [int(e) if 0 <= e <= epochs_done else -1 for e in f["resume/epochs"][()]]
    slots = [-1, -1]
    for e in (epochs_done - 1, epochs_done):
        if e >= 0:
            slots[e % 2] = e
    return slots


class _Metrics(dict):
    def __init__(self, path: Path, values: dict) -> None:
        super().__init__(values)
        self.path = path

    def __missing__(self, name: str):
        raise BadInput(f"{self.path}: no metric {name!r} (a corrupt or edited run file?)")


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
            self.execution = self._json_attr(f, "execution")
            self.data_dir = str(data_dir) if data_dir else self.execution.get("data_dir")
            self.versions = self._json_attr(f, "versions")
            self.device = str(f.attrs.get("device", ""))
            self.created = str(f.attrs.get("created", ""))
            status, done = self._read(f, "status"), self._read(f, "epochs_done")
            self.status = status.decode(errors="replace") if isinstance(status, bytes) else str(
                status)
            if not isinstance(done, (int, np.integer)):
                raise self._fault(f"epochs_done {done!r} is not an integer")
            self.epochs_done = int(done)
            self.metric_names = tuple(f["metrics"].keys()) if "metrics" in f else ()
            self._all_saved = tuple(int(e) for e in self._read(f, "weights/epochs"))
            # the state dict's own order where the file keeps it (HDF5 lists names sorted)
            stored = [k for k in f["weights"].keys() if k != "epochs"]
            order = f["weights"].attrs.get("order")
            self.state_keys = tuple(json.loads(order) if order is not None and sorted(
                json.loads(order)) == sorted(stored) else stored)
            # Files of adaptive runs from b = 0 made before such runs took snapshots have no slot.
            self.snapshot_slot = "snapshot" in f
            self.format_version = int(f.attrs["format_version"])  # checked by _open_run_file
            self._validate(f)
        # An unfinished run is either being trained now or was stopped (killed, not started).
        self.in_progress = self.status == "running" and being_written(self.path)

    def _fault(self, what: str) -> BadInput:
        return BadInput(f"{self.path}: {what} (a corrupt or edited run file)")

    def _json_attr(self, f: h5py.File, key: str) -> dict:
        try:
            value = json.loads(f.attrs.get(key, "{}"))
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise self._fault(f"attribute {key!r} is not a JSON object")
        return value

    def _read(self, f: h5py.File, name: str, index=()):
        """Dataset `name`[index]; a checksum that fails twice more (not a chunk caught while the
        trainer rewrote it) is corruption, as is a missing dataset."""
        if name not in f:
            raise self._fault(f"no dataset /{name}")
        for attempt in range(3):
            try:
                return f[name][index]
            except OSError as err:
                if attempt == 2:
                    raise self._fault(f"dataset /{name} fails its checksum or cannot be read "
                                      f"({str(err).splitlines()[0]})") from None
                time.sleep(0.05)

    def _validate(self, f: h5py.File) -> None:
        """The scalars and shapes that carry no checksum, against the run's config."""
        epochs = self.epochs
        if self.status not in STATUSES:
            raise self._fault(f"status {self.status!r} is none of {', '.join(STATUSES)}")
        if not -1 <= self.epochs_done <= epochs:
            raise self._fault(f"epochs_done {self.epochs_done} is outside -1..{epochs}")
        for name in self.metric_names:
            if f["metrics"][name].shape != (epochs + 1,):
                raise self._fault(f"metric {name!r} has shape {f['metrics'][name].shape}, "
                                  f"not ({epochs + 1},)")
        if list(self._all_saved) != sorted(set(self._all_saved)) or not all(
                0 <= e <= epochs for e in self._all_saved):
            raise self._fault("weights/epochs is not an increasing list of epochs")
        if "resume/epochs" in f and (f["resume/epochs"].shape != (2,)
                                     or f["resume/epochs"].dtype.kind != "i"):
            raise self._fault("resume/epochs is not two integers")
        for key in self.state_keys:
            if f["weights"][key].shape[:1] != (len(self._all_saved),):
                raise self._fault(f"weights/{key} does not hold {len(self._all_saved)} epochs")

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

    def dataset(self, *, device: torch.device | str = "cpu"):
        """The exact data this run trained and was measured on (a data.Dataset: train, val and
        test splits with noisy and clean labels), rebuilt from the recorded config: a synthetic
        draw is deterministic in config.data.seed (numpy SeedSequence(seed).spawn(3) gives the
        train, validation and test generators; each draws its points, then its label flips),
        an image set is re-read from `data_dir` and split by the same seeded permutation. The
        flipped labels are checked against the ones the file recorded (/data/flipped_<split>)."""
        from landscape import data

        dataset = data.load(self.config.data, device=device, dtype=dtype_of(self.config.dtype),
                            data_dir=self.data_dir)
        with self._file() as f:
            for split in ("train", "val", "test"):
                key = f"data/flipped_{split}"
                if key in f:
                    stored = np.sort(self._read(f, key))
                    if not np.array_equal(stored, np.flatnonzero(
                            dataset.split(split).flipped.cpu().numpy())):
                        raise BadInput(f"{self.path}: the {split} split rebuilt from the config "
                                       "is not the one the run trained on (its flipped labels "
                                       "differ): other data files or another version's generator")
        return dataset

    def model(self, epoch: int | None = None, *, device: torch.device | str = "cpu") -> nn.Module:
        """The run's model in eval mode and the run's dtype, holding the weights after `epoch`
        epochs (default: the last saved epoch): what the measurements take, e.g.
        `landscape.loss_slice(run.model(), run.dataset().train, loss=run.config.objective.loss)`."""
        from landscape import data
        from landscape.models import run_model

        if not self.saved_epochs:
            raise BadInput(f"{self.path}: no saved epochs yet")
        module = run_model(self.config, data.input_shape(self.config.data),
                           self.config.data.num_classes, device=device).eval()
        module.load_state_dict(self.state_dict(self.saved_epochs[-1] if epoch is None else epoch,
                                               device))
        return module

    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric, rows 0..epochs_done; a missing one is bad input, not a KeyError."""
        rows = slice(0, self.epochs_done + 1)
        with self._file() as f:
            return _Metrics(self.path, {k: self._read(f, f"metrics/{k}", rows)
                                        for k in self.metric_names})

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metric_names:
            raise BadInput(f"{self.path}: no metric {name!r}")
        with self._file() as f:
            return self._read(f, f"metrics/{name}", slice(0, self.epochs_done + 1))

    def state_dict(self, epoch: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The model's state dict after `epoch` epochs (0 = initial weights)."""
        if epoch not in self.saved_epochs:
            shown = ", ".join(map(str, self.saved_epochs)) or "none"
            raise BadInput(f"{self.path}: epoch {epoch} was not saved (saved epochs: {shown}); "
                           "train with --save-every/--save-epochs/--save all to keep it")
        slot = self._all_saved.index(epoch)
        with self._file() as f:
            # np.asarray: a 0-d tensor (BatchNorm's num_batches_tracked) reads as a numpy scalar
            return {k: torch.from_numpy(np.asarray(self._read(f, f"weights/{k}", slot))).to(device)
                    for k in self.state_keys}

    def snapshot(self, device: torch.device | str = "cpu") -> Snapshot | None:
        """The model when its mini-batch loss first fell below b, if that happened."""
        with self._file() as f:
            if "snapshot" not in f:
                return None
            step, epoch = int(self._read(f, "snapshot/step")), int(self._read(f, "snapshot/epoch"))
            if step < 0 or epoch > self.epochs_done:
                return None
            state = {k: torch.from_numpy(np.asarray(self._read(f, f"snapshot/state/{k}"))).to(
                device) for k in self.state_keys}
            return Snapshot(step, epoch, float(self._read(f, "snapshot/batch_loss")), state)

    @property
    def resume_epochs(self) -> tuple[int, ...]:
        """The committed epochs whose resume state the file holds (at most two), increasing."""
        with self._file() as f:
            return tuple(sorted(e for e in resume_slots(f, self.epochs_done) if e >= 0))

    def resume_state(self, epoch: int | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(model state, optimizer state) after `epoch`: the latest checkpoint (default) or the
        one before it (resume_epochs)."""
        if self.epochs_done < 0:
            raise BadInput(f"{self.path}: nothing to resume from (no epoch committed)")
        with self._file() as f:
            slots = resume_slots(f, self.epochs_done)
        kept = sorted(e for e in slots if e >= 0)
        epoch = (kept[-1] if kept else -1) if epoch is None else epoch
        if epoch < 0 or epoch not in slots:
            raise BadInput(f"{self.path}: no resume state after epoch {epoch} (the file keeps "
                           f"epochs {', '.join(map(str, kept)) or 'none'})")
        slot = f"resume/slot{slots.index(epoch)}"
        with self._file() as f:
            def read(prefix: str) -> dict[str, torch.Tensor]:
                names: list[str] = []
                if f"{slot}/{prefix}" in f:
                    f[f"{slot}/{prefix}"].visititems(
                        lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
                return {k: torch.from_numpy(np.asarray(self._read(f, f"{slot}/{prefix}/{k}")))
                        for k in names}

            return read("model"), read("optim")

    def flipped(self, split: str) -> np.ndarray:
        with self._file() as f:
            return self._read(f, f"data/flipped_{split}")

    def data_array(self, name: str) -> np.ndarray:
        """A per-sample array stored under /data when the run was made (e.g. flood_levels)."""
        with self._file() as f:
            if name not in f["data"]:
                raise BadInput(f"{self.path}: no /data/{name} (made by another objective?)")
            return self._read(f, f"data/{name}")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.status}, epoch {self.epochs_done}/{self.epochs})"


def _open_run_file(path: Path) -> h5py.File:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a run file")
    try:
        # Without HDF5's lock, which would block a writer (files.py). The trainer writes only raw
        # data into allocated space and commits by /epochs_done, written last: what a reader sees
        # is consistent at every commit.
        f = h5py.File(path, "r", locking=False)
    except OSError as err:
        raise BadInput(f"{path} is not a readable HDF5 file (corrupt or truncated?): "
                       f"{str(err).splitlines()[0]}") from None
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        f.close()
        raise BadInput(f"{path} is an HDF5 file but not a landscape run file")
    version = f.attrs.get("format_version", -1)
    if not isinstance(version, (int, np.integer)) or isinstance(version, (bool, np.bool_)):
        f.close()
        raise BadInput(f"{path}: format_version {version!r} is not an integer (a corrupt or "
                       "edited run file)")
    if version not in READABLE_VERSIONS:
        f.close()
        newer = version > FORMAT_VERSION
        raise BadInput(f"{path} has run-file format version {version}; this landscape reads version "
                       f"{FORMAT_VERSION}" + ("; upgrade landscape" if newer else
                                              "; retrain with this version"))
    return f


def __getattr__(name: str):
    """The folder functions' names here, where earlier releases had them (folders.py now)."""
    if name in FOLDER_NAMES:
        from landscape.runs import folders

        return getattr(folders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
