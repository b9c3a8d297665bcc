"""Analysis result files: one HDF5 file per result (`format` = "landscape-<kind>"), written
atomically, read back, and reused when the same inputs and parameters ask for it again.

Free of torch: the analyses write these files and the figures read them.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import h5py
import numpy as np

from landscape.errors import BadInput
from landscape.files import publish, temporary

if TYPE_CHECKING:
    from landscape.runs.store import Run

# the kinds of result file, one per analysis
SLICE, GRADNORM, SHARPNESS, MSE, MEMORIZATION = "slice", "gradnorm", "sharpness", "mse", "memorization"
CONNECT = "connect"  # two models: the linear path and a fitted curve between them
GENERALIZATION = "generalization"  # models x measures, and each measure's ranking against the gap
SPLITS = ("train", "test")  # the splits an analysis measures and its figure draws
# Theorem 1's two panels: R^ on fresh samples (unbiased), on g's own training set (biased low)
PANELS = ("pool", "train")


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

