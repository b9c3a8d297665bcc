"""Where runs are: run files named one by one, sweep folders (their index, sweep.json: the run
files in order and the grid) and other folders of run files, read past the analyses' result
files that may lie beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import h5py

from landscape.errors import BadInput
from landscape.files import write_text
from landscape.runs.store import FORMAT, FORMAT_VERSION, Run

SWEEP_INDEX = "sweep.json"


def find_runs(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Run files named by paths: files as given; a sweep folder's runs in index order; any other
    folder's *.h5 files, recursively and sorted, leaving out the analyses' result files."""
    found: list[Path] = []
    if isinstance(paths, (str, Path)):  # one path, not its characters
        paths = [paths]
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


def open_runs(paths: Iterable[str | Path] | str | Path, *,
              data_dir: str | Path | None = None) -> list[Run]:
    """The runs an analysis measures. A diverged run is bad input, named with the epoch it
    diverged in: its last epochs hold NaN/inf, and its curves would end in nothing."""
    runs = [Run(p, data_dir=data_dir) for p in find_runs(paths)]
    for run in runs:
        if run.status == "diverged":
            raise BadInput(f"{run.path} diverged in epoch {run.epochs_done + 1} (NaN/inf loss); "
                           "analyse the other runs, or retrain it with --overwrite")
    return runs


def write_sweep_index(folder: Path, runs: list[Path], grid: dict) -> None:
    """The sweep's index: its run files (relative names) and grid, written atomically."""
    index = {"format": "landscape-sweep", "format_version": FORMAT_VERSION,
             "runs": [str(Path(r).relative_to(folder)) for r in runs], "grid": grid}
    write_text(folder / SWEEP_INDEX, json.dumps(index, indent=1))


def read_sweep_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / SWEEP_INDEX).read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"{folder / SWEEP_INDEX}: unreadable sweep index ({err})") from None
    if index.get("format") != "landscape-sweep" or not isinstance(index.get("runs"), list):
        raise BadInput(f"{folder / SWEEP_INDEX} is not a landscape sweep index")
    return index
