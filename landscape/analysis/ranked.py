"""A generalization result's rankings as its file stores them (analysis/generalization.py writes,
figures/generalization.py draws), and the tables and CSV made from a finished result: per (epoch
kind, target), ranking/KIND/TARGET/{measure, tau, psi_mean, sign_error_mean, sign_error_worst}
(estimate, low, high per measure), psi [measures, axes, 3], skipped and undefined [measures, axes]
and worst_environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from landscape.analysis.ranking import Interval, MeasureRanking, ranking_table
from landscape.errors import BadInput
from landscape.figures.style import with_extension, write_csv
from landscape.files import write_text
from landscape.results import GENERALIZATION, read_result, text

KINDS = ("last", "early_stopping", "checkpoint")  # the epochs a row is looked at
TARGETS = {"gap": "test error - train error", "test_loss": "test loss"}
OUTCOMES = ("train_error", "test_error", "train_loss", "test_loss")
STATISTICS = ("tau", "psi_mean", "sign_error_mean", "sign_error_worst")


def _triple(interval: Interval) -> tuple[float, float, float]:
    return interval.estimate, interval.low, interval.high


def stored_arrays(rankings: Mapping[tuple[str, str], Sequence[MeasureRanking]],
                  axes: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays that store rankings per (epoch kind, target)."""
    stored = {}
    for (which, target), ranked in rankings.items():
        prefix = f"ranking/{which}/{target}"
        stored[f"{prefix}/measure"] = np.array([r.measure for r in ranked])
        for stat in STATISTICS:
            stored[f"{prefix}/{stat}"] = np.array([_triple(getattr(r, stat)) for r in ranked])
        stored[f"{prefix}/psi"] = np.array([[_triple(r.psi[a]) for a in axes] for r in ranked])
        stored[f"{prefix}/skipped"] = np.array([[r.skipped[a] for a in axes] for r in ranked])
        stored[f"{prefix}/undefined"] = np.array([[r.undefined[a] for a in axes] for r in ranked])
        stored[f"{prefix}/worst_environment"] = np.array([r.worst_environment for r in ranked])
    return stored


def ranked_pairs(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """The (epoch kind, target) pairs a result file holds rankings for, in the file's order."""
    return [(which, target) for which in KINDS
            for target in TARGETS if f"ranking/{which}/{target}/measure" in arrays]


def stored_rankings(arrays: Mapping[str, np.ndarray], which: str, target: str,
                    axes: Sequence[str], level: float) -> tuple[MeasureRanking, ...]:
    """The rankings of one (epoch kind, target) as _write stored them (`level`: the intervals')."""
    p = f"ranking/{which}/{target}"

    def interval(row: np.ndarray) -> Interval:
        return Interval(float(row[0]), float(row[1]), float(row[2]), level)

    def per_axis(key: str, i: int) -> dict[str, int]:
        return {x: int(arrays[f"{p}/{key}"][i, j]) for j, x in enumerate(axes)}

    return tuple(MeasureRanking(
        text(measure), interval(arrays[f"{p}/tau"][i]),
        {x: interval(arrays[f"{p}/psi"][i, j]) for j, x in enumerate(axes)},
        interval(arrays[f"{p}/psi_mean"][i]), interval(arrays[f"{p}/sign_error_mean"][i]),
        interval(arrays[f"{p}/sign_error_worst"][i]), per_axis("skipped", i),
        per_axis("undefined", i), text(arrays[f"{p}/worst_environment"][i]))
        for i, measure in enumerate(arrays[f"{p}/measure"]))


def write_reports(result: str | Path, stem: str | Path) -> list[Path]:
    """From a finished result file: STEM.csv (one row per model: name, epoch kind and epoch,
    hyperparameters, errors, losses, gap, every measure) and the ranked tables of every (epoch
    kind, target), STEM-ranking.md and STEM-ranking.tex."""
    attrs, a = read_result(result, GENERALIZATION)
    if not bool(attrs.get("complete")):
        raise BadInput(f"{result}: not finished; rerun `landscape generalization` on the same "
                       "inputs to finish it")
    names, axes = json.loads(attrs["measure_names"]), json.loads(attrs["axes"])
    level = float(json.loads(attrs["ranking"])["level"])
    which = np.array([text(w) for w in a["which"]])
    reversed_ = json.loads(attrs.get("reversed", "[]"))
    flipped = (f"; ranked reversed (larger is flatter or a wider margin, expected to shrink the "
               f"gap): {', '.join(reversed_)}" if reversed_ else "")
    stem = Path(stem)
    columns = {"name": [text(n) for n in a["name"]], "which": which, "epoch": a["epoch"],
               **{x: [text(v) for v in a[f"axis/{x}"]] if a[f"axis/{x}"].dtype.kind in "OSU"
                  else a[f"axis/{x}"] for x in [*axes, "seed"]},
               **{k: a[k] for k in (*OUTCOMES, "gap")}, **{n: a[f"measure/{n}"] for n in names}}
    written = [write_csv(with_extension(stem, "csv"), columns)]
    for fmt in ("md", "latex"):
        parts = [ranking_table(stored_rankings(a, kind, target, axes, level), fmt=fmt,
                               title=f"Each measure against the {TARGETS[target]} at the "
                                     f"{kind.replace('_', '-')} epoch of "
                                     f"{int((which == kind).sum())} models{flipped}.")
                 for kind, target in ranked_pairs(a)]
        path = Path(f"{stem}-ranking.{'tex' if fmt == 'latex' else 'md'}")
        write_text(path, "\n\n".join(parts) + "\n")
        written.append(path)
    return written
