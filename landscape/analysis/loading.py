"""What every analysis needs from a run: its data, its model and the weights at a chosen point.

Models are rebuilt from the run's config and evaluated functionally on state dicts (no module is
mutated); the data set is regenerated from the config (synthetic) or re-read (image sets).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np
import torch
from torch import nn

from .. import data as data_module
from ..errors import BadInput
from ..files import publish, temporary
from ..models import build_model, output_units
from ..sources import Source, as_source
from ..store import Run

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
                                                dtype=getattr(torch, run.config.dtype),
                                                data_dir=run.data_dir)
        except BadInput as err:
            moved = (" (if the files have moved since training, say where with --data-dir)"
                     if run.data_dir == run.execution.get("data_dir") else "")
            raise BadInput(f"{run.path}: its data: {err}{moved}") from None
    return _DATA_CACHE[key]


def model_for(run: Run, dataset: data_module.Dataset, *, device: torch.device) -> nn.Module:
    """A module of the run's architecture (eval mode), to be called with torch.func.functional_call."""
    c = run.config
    model = build_model(c.model, dataset.input_shape, output_units(dataset.num_classes,
                                                                   c.objective.loss))
    return model.to(device=device, dtype=getattr(torch, c.dtype)).eval()


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


def refuse_unless_fits(need: int, device: torch.device, what: str) -> None:
    """Bad input, with the estimate, before any work, when `need` bytes exceed what `device` has
    free (ensemble.free_memory, as `train` checks a run), rather than failing hours in or being
    killed by the kernel."""
    from ..ensemble import free_memory

    free = free_memory(device)
    if need > free:
        raise BadInput(f"{what} needs about {need / 2**30:.3g} GiB of memory but {device} has "
                       f"{free / 2**30:.3g} GiB free; choose smaller sizes")


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


def write_result(path: str | Path, *, kind: str, attrs: Mapping[str, Any],
                 arrays: Mapping[str, np.ndarray]) -> Path:
    """An analysis result file, written atomically: arrays as datasets, parameters as attributes
    (dicts and lists as JSON) so that a result can be traced and a stale one detected."""
    path = Path(path)
    # A fresh name created exclusively (never through a link), replacing the result atomically.
    with temporary(path) as partial:
        with h5py.File(partial, "w-", locking=False) as f:
            f.attrs["format"] = f"landscape-{kind}"
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")
            for key, value in attrs.items():
                f.attrs[key] = (json.dumps(value) if isinstance(value, (dict, list, tuple))
                                else ("" if value is None else value))
            for key, value in arrays.items():
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    value = value.astype(h5py.string_dtype())
                f.create_dataset(key, data=value)
        publish(partial, path, replace=True)
    return path


def text(value) -> str:
    """A string read back from an HDF5 array (bytes or str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def read_result(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(attrs, arrays) of a result file written by write_result; bad input if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such result file")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != f"landscape-{kind}":
                raise BadInput(f"{path} is not a landscape {kind} result file")
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            arrays: dict[str, np.ndarray] = {}
            f.visititems(lambda k, v: arrays.__setitem__(k, v[()])
                         if isinstance(v, h5py.Dataset) else None)
    except OSError as err:
        raise BadInput(f"{path} is not a readable HDF5 file: {str(err).splitlines()[0]}") from None
    return attrs, arrays


def stored(value):
    """An attribute as it reads back from HDF5: numpy scalars as Python values, and dicts and
    lists as the JSON write_result makes of them."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value.item() if isinstance(value, np.generic) else value


def runs_identity(runs: Iterable[Run]) -> dict[str, list]:
    """What identifies the runs a result was computed from: their files, configs and progress."""
    runs = list(runs)
    return {"runs": [str(run.path.resolve()) for run in runs],
            "config_digests": [run.config.digest() for run in runs],
            "epochs_done": [run.epochs_done for run in runs]}


def reuse_result(path: str | Path, kind: str, identity: Mapping[str, Any], *,
                 overwrite: bool) -> bool:
    """One rule for the analyses' result files: True when `path` holds a result of the same
    `identity` (what determines it: inputs and parameters), to be reused as it is; bad input when
    it holds another, unless `overwrite`. The identity is kept in the file (write_result's
    attrs["identity"])."""
    path = Path(path)
    if overwrite or not path.exists():
        return False
    attrs, _ = read_result(path, kind)
    old = json.loads(attrs.get("identity", "{}") or "{}")
    new = json.loads(json.dumps(identity))  # as it will read back
    differ = [k for k in new if old.get(k) != new[k]] or [k for k in old if k not in new]
    if differ:
        k = differ[0]
        raise BadInput(f"{path} holds a result computed from other inputs or parameters ({k}: "
                       f"{old.get(k)!r} in the file vs {new.get(k)!r} asked); pass --overwrite "
                       "to replace it, or choose another --out or --name")
    return True
