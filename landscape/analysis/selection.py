"""Flood-level selection (paper Sec. 4; docs/measurements.md): the b with the best validation accuracy.

For each setting (runs identical but for flood level and seed) and each trial (a seed and its data
draw), the flood level b is chosen from the trial's grid by validation accuracy, either at the last
epoch ("without early stopping") or at each run's early-stopping epoch, the first epoch of its best
validation accuracy ("with early stopping"). The chosen run's test accuracy is reported beside the
baseline's (b = 0, the plain objective), as mean and standard deviation over trials (Table 2).

Accuracies come on the labels used (noisy where label noise was added; Table 2's numbers fit noisy
test labels, docs/settings.md) and on the clean labels, named `..._clean`. Selection itself always
uses the validation labels as trained with (the paper's protocol), never the clean ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from landscape.config import RunConfig
from landscape.config.floodgrid import BASELINE
from landscape.errors import BadInput
from landscape.runs.folders import find_runs
from landscape.runs.store import Run


def early_stopping_epoch(val_acc: Sequence[float] | np.ndarray) -> int:
    """The first epoch of the best validation accuracy (row e = after e epochs; NaN rows skipped)."""
    v = np.asarray(val_acc, dtype=np.float64)
    if not np.isfinite(v).any():
        raise BadInput("no validation accuracy recorded: cannot find an early-stopping epoch")
    return int(np.argmax(np.where(np.isfinite(v), v, -np.inf)))  # argmax: the first of ties


@dataclass(frozen=True)
class Outcome:
    """One run looked at in its selection epoch."""

    flood: float
    epoch: int              # -1: the run has no such epoch (unfinished or diverged)
    val_acc: float          # on the validation labels trained with (noisy where noise was added)
    test_acc: float         # on the noisy test labels: what Table 2 reports
    test_acc_clean: float   # on the clean test labels


def outcome(flood: float, metrics: Mapping[str, np.ndarray], epochs: int, *,
            early_stopping: bool) -> Outcome:
    """The run's numbers at its early-stopping epoch, or at its last epoch `epochs` (NaN if the run
    never got there, so that it cannot be chosen)."""
    val = np.asarray(metrics["val_acc"], dtype=np.float64)
    epoch = early_stopping_epoch(val) if early_stopping else (epochs if len(val) > epochs else -1)
    if epoch < 0:
        return Outcome(flood, -1, math.nan, math.nan, math.nan)
    return Outcome(flood, epoch, float(val[epoch]), float(metrics["test_acc"][epoch]),
                   float(metrics["test_acc_clean"][epoch]))


def choose(outcomes: Iterable[Outcome]) -> Outcome:
    """The outcome with the best validation accuracy; ties go to the smaller b (less flooding)."""
    candidates = [o for o in outcomes if math.isfinite(o.val_acc)]
    if not candidates:
        raise BadInput("no flood level has a validation accuracy to choose by")
    return min(candidates, key=lambda o: (-o.val_acc, o.flood))


@dataclass(frozen=True)
class TrialChoice:
    """One trial of a setting: its baseline (b = 0) and the run chosen over its grid of b."""

    seed: int
    data_seed: int
    baseline: Outcome
    chosen: Outcome
    outcomes: tuple[Outcome, ...]  # every level's, by b

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(o.flood for o in self.outcomes)

    @property
    def chosen_b(self) -> float:
        return self.chosen.flood

    @property
    def oracle(self) -> Outcome:
        """The level a perfect choice would take: the best test accuracy at the levels' own
        selection epochs (ties to the smaller b). A bound on what choosing b can gain, not a
        result: it looks at the test set."""
        candidates = [o for o in self.outcomes if math.isfinite(o.test_acc)]
        return min(candidates, key=lambda o: (-o.test_acc, o.flood))


# Table columns: name -> value of one trial. Test accuracies are the noisy ones unless `_clean`.
COLUMNS: dict[str, Callable[[TrialChoice], float]] = {
    "without_flooding": lambda t: t.baseline.test_acc,
    "with_flooding": lambda t: t.chosen.test_acc,
    "chosen_b": lambda t: t.chosen_b,
    "without_flooding_clean": lambda t: t.baseline.test_acc_clean,
    "with_flooding_clean": lambda t: t.chosen.test_acc_clean,
}


@dataclass(frozen=True)
class SettingResult:
    """Selection over the trials of one setting."""

    config: RunConfig       # the setting, shown with b = 0 and seed 0
    label: str
    early_stopping: bool
    trials: tuple[TrialChoice, ...]

    def values(self, column: str) -> np.ndarray:
        """One value per trial of a COLUMNS entry."""
        return np.array([COLUMNS[column](t) for t in self.trials], dtype=np.float64)

    def mean_std(self, column: str) -> tuple[float, float]:
        """Mean and sample standard deviation (ddof 1; NaN for one trial) over trials."""
        v = self.values(column)
        return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else math.nan)


def setting_of(config: RunConfig) -> RunConfig:
    """The setting a run belongs to: its config without flood level, seeds and what does not change
    the trained model (save and test-evaluation policies, what was tracked)."""
    return dataclasses.replace(
        config, seed=0, save="last", eval_test="every", track=None,
        data=dataclasses.replace(config.data, seed=0),
        objective=dataclasses.replace(config.objective, flood=0.0))


def select(records: Iterable[tuple[RunConfig, Mapping[str, np.ndarray]]], *,
           early_stopping: bool) -> list[SettingResult]:
    """Choose b per setting and trial from (config, metrics) pairs; settings in order of appearance,
    trials by seed. Every trial needs a b = 0 run (the baseline)."""
    by_setting: dict[RunConfig, dict[tuple[int, int], list[Outcome]]] = {}
    for config, metrics in records:
        trials = by_setting.setdefault(setting_of(config), {})
        trials.setdefault((config.seed, config.data.seed), []).append(
            outcome(config.objective.flood, metrics, config.optim.epochs,
                    early_stopping=early_stopping))
    labels = setting_labels(list(by_setting))
    results = []
    for setting, trials in by_setting.items():
        choices = []
        for (seed, data_seed), outcomes in sorted(trials.items()):
            floods = [o.flood for o in outcomes]
            if len(set(floods)) != len(floods):
                raise BadInput(f"{labels[setting]}: seed {seed} has the same flood level twice "
                               "(the same run given twice?)")
            if BASELINE not in floods:
                raise BadInput(f"{labels[setting]}: seed {seed} has no b = 0 run (the baseline "
                               "without flooding)")
            choices.append(TrialChoice(seed, data_seed, baseline=outcomes[floods.index(BASELINE)],
                                       chosen=choose(outcomes),
                                       outcomes=tuple(sorted(outcomes, key=lambda o: o.flood))))
        results.append(SettingResult(setting, labels[setting], early_stopping, tuple(choices)))
    return results


def setting_labels(settings: list[RunConfig]) -> dict[RunConfig, str]:
    """Readable setting names: data set and noise, plus the fields in which settings differ."""
    fields = [s.fields() for s in settings]
    differing = sorted(k for k in fields[0] if k not in ("data.name", "data.noise")
                       and len({repr(f.get(k)) for f in fields}) > 1)
    out = {}
    for s, f in zip(settings, fields):
        extra = "".join(f", {k.split('.', 1)[-1]} {f[k]}" for k in differing)
        out[s] = f"{s.data.name}, noise {s.data.noise:g}{extra}"
    return out


def select_runs(paths: Iterable[str | Path], *, early_stopping: bool) -> list[SettingResult]:
    """`select` over run files and sweep folders. Unfinished runs are refused (their last epoch is
    not there yet); diverged runs take part but can only be chosen before they diverged."""
    runs = [Run(p) for p in find_runs(paths)]
    running = [r for r in runs if r.status == "running"]
    if running:
        raise BadInput(f"{len(running)} of {len(runs)} runs are unfinished (e.g. {running[0].path});"
                       " finish them with `landscape train ... --resume` or leave them out")
    return select(((r.config, r.metrics()) for r in runs), early_stopping=early_stopping)


def _cell(mean: float, std: float, *, scale: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean * scale:.{digits}f}"
    return text if not math.isfinite(std) else f"{text} ({std * scale:.{digits}f})"


def format_table(results: Sequence[SettingResult], *, fmt: Literal["md", "latex"] = "md") -> str:
    """Table 2/3-style rows: setting, trials, test accuracy (%) without and with flooding, chosen b,
    and the same accuracies on clean labels. Mean (sample std) over trials; a chosen b of 0 in every
    trial prints "-" (flooding not chosen, as in Table 3)."""
    header = ["setting", "trials", "without flooding", "with flooding", "chosen b",
              "without flooding (clean)", "with flooding (clean)"]
    rows = []
    for r in results:
        acc = {c: _cell(*r.mean_std(c), scale=100, digits=2) for c in COLUMNS if c != "chosen_b"}
        b_mean, b_std = r.mean_std("chosen_b")
        rows.append([r.label, str(len(r.trials)), acc["without_flooding"], acc["with_flooding"],
                     "-" if b_mean == 0 else _cell(b_mean, b_std, scale=1, digits=2),
                     acc["without_flooding_clean"], acc["with_flooding_clean"]])
    stopping = ("with early stopping (each run's best-validation epoch)"
                if results and results[0].early_stopping else
                "without early stopping (last epoch)")
    caption = (f"Test accuracy (%), {stopping}; b chosen by validation accuracy; mean (std) over "
               "trials; accuracies on the noisy test labels, then on the clean ones.")
    return tabular(header, rows, caption, fmt=fmt)


def tabular(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, *,
            fmt: Literal["md", "latex"] = "md", first: int = 1) -> str:
    """A table of cell texts with its caption: Markdown (caption, blank line, table) or a LaTeX
    tabular (caption as a comment; the `first` columns left-aligned, the others right)."""
    if fmt == "latex":
        body = [" & ".join(c.replace("_", r"\_").replace("%", r"\%") for c in row) + r" \\"
                for row in [header, *rows]]
        align = "l" * first + "r" * (len(header) - first)
        return "\n".join([f"% {caption}", r"\begin{tabular}{" + align + "}", r"\hline", body[0],
                          r"\hline", *body[1:], r"\hline", r"\end{tabular}"])
    if fmt != "md":
        raise BadInput(f"unknown table format {fmt!r}; choose md or latex")
    return "\n".join([caption, "", markdown_table(header, rows)])


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of the header and rows, given as cell texts."""
    lines = ["| " + " | ".join(row) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join(lines)
