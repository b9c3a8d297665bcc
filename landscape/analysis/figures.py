"""The paper's figures from stored data (`landscape figures`): no training, no model evaluation.

PATHS are sorted by what they hold (run files and sweep folders; result files by their format;
other folders are searched for both):

| section | figure | reads |
|---|---|---|
| 2   | learning curves (Fig. 2 / 6, Fig. 1(c)-(d)) | runs with the test loss every epoch |
| 5.1 | memorization (Fig. 3) | memorization result files, else runs (sweeps over b), from which the result is made here (it only reads metrics) |
| 5.2 | gradients (Fig. 4) | gradnorm result files (`landscape gradnorm`) |
| 5.3 | flatness (Fig. 5) | slice result files (`landscape flatness`), one figure per folder: `fig5_flatness-slice`, `fig5_flatness-surface` (numbered when there are several); for files made with `--eigen`, also the convexity map `convexity-slice`, `convexity-surface` (Li et al. 2018, Sec. 6) |
| 5.4 | Theorem 1 (MSE) | mse result files (`landscape mse`) |
| sharpness | test loss vs Hessian eigenvalue, trace, average-case sharpness (beyond the paper) | sharpness result files (`landscape sharpness`) |
| connect | loss and error along the linear path and the fitted curve between two models (beyond the paper) | connect result files (`landscape connect`) |
| dynamics | the top Hessian eigenvalue per epoch against the edge of stability 2 / lr, plain against flooded (and Adam's preconditioned sharpness; beyond the paper) | runs trained with `--track top_eigenvalue` |

Sections 5.2-5.4 and sharpness need their result files because making them evaluates models.
"all" means the paper's sections (2 to 5.4); sharpness, connect and dynamics are drawn when
asked for by name. Every section asked for must find its inputs, or nothing is drawn and one line
names what is missing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from landscape.analysis import curves, dynamics, memorization, mse
from landscape.errors import BadInput
from landscape.figures.connect import plot_connect
from landscape.figures.convexity import LARGEST, plot_convexity
from landscape.figures.curves import plot_curves
from landscape.figures.dynamics import plot_dynamics
from landscape.figures.flatness import plot_flatness
from landscape.figures.gradnorm import plot_gradnorm
from landscape.figures.memorization import plot_memorization
from landscape.figures.mse import plot_mse
from landscape.figures.sharpness import plot_sharpness
from landscape.results import CONNECT, GRADNORM, MEMORIZATION, MSE, SHARPNESS, SLICE
from landscape.runs.folders import SWEEP_INDEX, file_format, find_runs
from landscape.runs.store import FORMAT as RUN_FORMAT
from landscape.runs.store import Run

PAPER_SECTIONS = ("2", "5.1", "5.2", "5.3", "5.4")  # what "all" draws
SECTIONS = PAPER_SECTIONS + ("sharpness", "connect", "dynamics")
RESULT_SECTION = {f"landscape-{MEMORIZATION}": "5.1", f"landscape-{GRADNORM}": "5.2",
                  f"landscape-{SLICE}": "5.3", f"landscape-{MSE}": "5.4",
                  f"landscape-{SHARPNESS}": "sharpness", f"landscape-{CONNECT}": "connect"}
STEMS = {"2": "fig2_learning_curves", "5.1": "fig3_memorization", "5.2": "fig4_gradients",
         "5.3": "fig5_flatness", "5.4": "thm1_mse", "sharpness": "sharpness",
         "connect": "connect", "dynamics": "dynamics"}
NEEDS = {"2": "runs with the test loss at every epoch (landscape train --eval-test every)",
         "5.1": "sweeps over b or a memorization result file (landscape memorization)",
         "5.2": "gradnorm result files (landscape gradnorm)",
         "5.3": "slice result files (landscape flatness)",
         "5.4": "mse result files (landscape mse)",
         "sharpness": "sharpness result files (landscape sharpness)",
         "connect": "connect result files (landscape connect)",
         "dynamics": dynamics.NEEDS}


@dataclass
class Inputs:
    runs: list[Path] = field(default_factory=list)
    results: dict[str, list[Path]] = field(default_factory=lambda: {s: [] for s in SECTIONS})


def file_kind(path: Path) -> str:
    """"run" or the section a result file belongs to; bad input for anything else."""
    try:
        fmt = file_format(path)
    except OSError:
        raise BadInput(f"{path} is not a readable HDF5 file") from None
    if fmt == RUN_FORMAT:
        return "run"
    if fmt not in RESULT_SECTION:
        raise BadInput(f"{path} is neither a landscape run file nor a result file of "
                       "memorization, gradnorm, flatness, mse, sharpness or connect")
    return RESULT_SECTION[fmt]


def classify(paths: Sequence[str | Path]) -> Inputs:
    """Sort PATHS into runs and result files per section (each file once)."""
    inputs, seen = Inputs(), set()
    for p in map(Path, paths):
        if p.is_dir() and not (p / SWEEP_INDEX).is_file():
            files = sorted(p.rglob("*.h5"))
        elif p.exists():
            files = [p] if p.is_file() else find_runs([p])
        else:
            raise BadInput(f"{p}: no such file or folder")
        for file in files:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            kind = file_kind(file)
            (inputs.runs if kind == "run" else inputs.results[kind]).append(file)
    return inputs


def plan(inputs: Inputs, sections: Sequence[str], out: Path, *, skip_epochs: int | None = None
         ) -> dict[str, Callable[[Path, Sequence[str]], list[str]]]:
    """One builder per section, or bad input naming every section whose inputs are missing. The
    memorization result of runs is made here (it reads metrics only), so that its errors, too,
    come before any figure is drawn; it is this command's own output, redrawn as the figures are
    (overwrite). `skip_epochs`: the epochs the per-epoch figures (5.2, sharpness) leave out
    (None: each figure's default, figures.epochs.skip_for)."""
    runs = [Run(p) for p in inputs.runs]
    builders, missing = {}, []
    for s in sections:
        results = inputs.results[s]
        if s == "2" and any(r.config.eval_test == "every" for r in runs):
            builders[s] = _curves_builder(*curves.usable(runs))
        elif s == "dynamics" and runs:
            builders[s] = _dynamics_builder(*dynamics.usable(runs))
        elif s == "5.1" and (results or runs):
            builders[s] = _results_builder(s, results or [
                memorization.memorization(inputs.runs, out / f"{STEMS[s]}.h5", overwrite=True)])
        elif s not in ("2", "5.1", "dynamics") and results:
            builders[s] = _results_builder(
                s, results, {"skip_epochs": skip_epochs} if s in PER_EPOCH else {})
        else:
            missing.append(f"section {s} needs {NEEDS[s]}")
    if missing:
        raise BadInput("missing inputs: " + "; ".join(missing))
    return builders


def _written(section: str, paths: list[Path], source: str) -> str:
    return f"section {section}: {', '.join(str(p) for p in paths)} (from {source})"


def _curves_builder(runs: list[Run], notes: list[str]):
    def build(out: Path, formats: Sequence[str]) -> list[str]:
        written = plot_curves(curves.learning_curves(runs), out / STEMS["2"], formats)
        return notes + [_written("2", written, f"{len(runs)} runs")]
    return build


def _dynamics_builder(runs: list[Run], notes: list[str]):
    def build(out: Path, formats: Sequence[str]) -> list[str]:
        written = plot_dynamics(dynamics.traces(runs), out / STEMS["dynamics"], formats)
        return notes + [_written("dynamics", written, f"{len(runs)} runs")]
    return build


PLOTS = {"5.1": plot_memorization, "5.2": plot_gradnorm, "5.3": plot_flatness,
         "5.4": plot_mse, "sharpness": plot_sharpness, "connect": plot_connect}
REPORTS = {"5.1": memorization.report, "5.4": mse.report}
PER_EPOCH = ("5.2", "sharpness")  # figures of every computed epoch, less the first skip_epochs


def _results_builder(section: str, results: list[Path], options: dict | None = None):
    def build(out: Path, formats: Sequence[str]) -> list[str]:
        if section == "5.3":  # the slices of one `landscape flatness` call share a folder
            groups: dict[Path, list[Path]] = {}
            for p in results:
                groups.setdefault(p.parent, []).append(p)
            # named by what they draw: fig5_flatness-slice, fig5_flatness-surface (-1, -2, ...)
            kinds = []
            for folder, paths in groups.items():
                with _damaged(f"the slice result files in {folder}"):
                    kinds.append(_slice_kind(paths))
            jobs = [(paths, f"{len(paths)} {kind}s in {folder}", f"-{kind}")
                    for (folder, paths), kind in zip(groups.items(), kinds)]
        else:
            kinds = [""] * len(results)
            jobs = [(p, str(p), "") for p in results]
        lines = []
        for i, (source, text, kind) in enumerate(jobs):
            alike = [j for j, k in enumerate(kinds) if k == kinds[i]]
            number = f"-{alike.index(i) + 1}" if len(alike) > 1 else ""
            stem = out / f"{STEMS[section]}{kind}{number}"
            with _damaged(text):
                lines.append(_written(section, PLOTS[section](source, stem, formats,
                                                              **(options or {})), text))
                if section in REPORTS:
                    lines.append(REPORTS[section](source))
                if section == "5.3" and _has_eigenvalues(source):  # flatness --eigen
                    lines.append(_written(section, plot_convexity(
                        source, out / f"convexity{kind}{number}", formats), text))
        return lines
    return build


@contextlib.contextmanager
def _damaged(what: str):
    """A result file's datasets as its writer made them, or bad input naming the file: the
    figures index one array by another, and a dataset deleted or reshaped since (by hand, or a
    file of another tool under our format name) shows as a missing key or mismatched shapes."""
    try:
        yield
    except (KeyError, IndexError, ValueError, TypeError) as err:
        if os.environ.get("LANDSCAPE_DEBUG"):  # the same errors could be a plotting bug: show it
            raise
        text = str(err).splitlines()[0] if str(err) else ""
        raise BadInput(f"{what}: a result file with a dataset or attribute missing or of another "
                       f"shape than its writer made ({type(err).__name__}: {text}); make it "
                       "again with its command (LANDSCAPE_DEBUG=1 shows where it failed)") from err


def _has_eigenvalues(paths: list[Path]) -> bool:
    """Whether a folder's slices hold the Hessian's extreme eigenvalues (a convexity map)."""
    from landscape.figures.flatness_text import read_slices

    return all(LARGEST in arrays for _, arrays in read_slices(paths))


def _slice_kind(paths: list[Path]) -> str:
    """"slice" or "surface": what a folder of flatness result files draws."""
    from landscape.figures.flatness_text import read_slices

    return "surface" if int(read_slices(paths[:1])[0][0]["directions"]) == 2 else "slice"


def build_figures(paths: Sequence[str | Path], sections: Sequence[str], out: str | Path, *,
                  formats: Sequence[str], skip_epochs: int | None = None) -> list[str]:
    """Every figure of `sections` from PATHS into `out`; returns what was written, in lines.
    `skip_epochs`: as gradnorm's and sharpness's --skip-epochs."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise BadInput(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)} or all")
    out = Path(out)
    builders = plan(classify(paths), sections, out, skip_epochs=skip_epochs)
    return [line for s in sections for line in builders[s](out, formats)]
