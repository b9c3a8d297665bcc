"""Learning curves (paper Fig. 2 and Fig. 6, with the training loss as in Fig. 1(c)-(d)): the training
and test loss per epoch for each flood level of a sweep, coloured by b on a colour bar, the b = 0
baseline black dotted; one row per setting, the mean over trials with a band of one sample
standard deviation either side, the number of trials in the title. With at most three flood levels
besides b = 0 each is named in the legend and drawn with its b as a thin dashed line. Where the
untrained model's loss (epoch 0) lies far above all later ones, the y axis covers the later ones
and cuts epoch 0 off.

Runs need the test loss at every epoch (`landscape train --eval-test every`); sweeps default to
`best`, which measures it only where validation accuracy improves. Such settings are left out with a
note, and having none left is bad input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput
from ..store import Run
from .plotting import FORMATS, figure, save_figure
from .selection import BASELINE, setting_labels, setting_of

LOSSES = ("train_loss", "test_loss")
TITLES = {"train_loss": "training loss", "test_loss": "test loss"}


@dataclass(frozen=True)
class Curves:
    """One setting's curves over flood levels `flood`: loss name -> [B, epochs + 1] mean over
    trials, and its sample standard deviation (NaN where fewer than two trials measured it)."""

    label: str
    flood: np.ndarray   # [B]
    trials: np.ndarray  # [B] runs averaged per flood level
    loss: dict[str, np.ndarray]
    spread: dict[str, np.ndarray]


def usable(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The runs whose test loss was measured every epoch, and a note per setting left out; a
    diverged run is left out with a note of its own (its last epochs are NaN/inf: a mean over
    seeds would end in nothing)."""
    notes = [f"learning curves: {run.path} diverged in epoch {run.epochs_done + 1} (NaN/inf "
             "loss); left out" for run in runs if run.status == "diverged"]
    runs = [run for run in runs if run.status != "diverged"]
    lacking: dict[str, list[Run]] = {}
    for run in runs:
        if run.config.eval_test != "every":
            lacking.setdefault(run.path.parent.name or str(run.path), []).append(run)
    notes += [f"learning curves: {len(rs)} run(s) in {where} left out: trained with --eval-test "
             f"{rs[0].config.eval_test}, so their test loss is measured only at some epochs; "
             "retrain with --eval-test every" for where, rs in lacking.items()]
    kept = [r for r in runs if r.config.eval_test == "every"]
    if not kept and notes and not lacking:
        raise BadInput(f"no run to draw: {'; '.join(notes)}")
    if not kept:
        raise BadInput("no run has its test loss at every epoch (sweeps default to --eval-test "
                       "best); train with --eval-test every for learning curves")
    return kept, notes


def learning_curves(runs: Sequence[Run]) -> list[Curves]:
    """Per setting (runs identical but for b and seed), the mean over seeds of each loss per epoch."""
    by_setting: dict = {}
    seen: dict[tuple, Run] = {}
    for run in runs:
        c = run.config
        key = (setting_of(c), c.objective.flood, c.seed, c.data.seed)
        if key in seen:  # e.g. a sweep and a pair trained with the same arguments
            raise BadInput(f"{seen[key].path} and {run.path} are the same run (flood level "
                           f"{c.objective.flood:g}, seed {c.seed}); give only one of them")
        seen[key] = run
        by_setting.setdefault(key[0], []).append(run)
    labels = setting_labels(list(by_setting))  # the names `landscape table` gives the settings
    out = []
    for setting, members in by_setting.items():
        flood = np.array(sorted({r.config.objective.flood for r in members}))
        epochs = max(r.epochs for r in members) + 1
        values = {k: [[] for _ in flood] for k in LOSSES}  # per b, one row per trial
        for run in members:
            row = int(np.searchsorted(flood, run.config.objective.flood))
            metrics = run.metrics()
            for k in LOSSES:
                padded = np.full(epochs, np.nan)
                padded[:len(metrics[k])] = metrics[k]
                values[k][row].append(padded)
        loss, spread = {}, {}
        with warnings.catch_warnings():  # epochs no trial (or one) measured: NaN, as meant
            warnings.simplefilter("ignore", RuntimeWarning)
            for k in LOSSES:
                stacked = [np.array(v) for v in values[k]]                 # [trials, epochs] each
                loss[k] = np.array([np.nanmean(v, 0) for v in stacked])    # [B, epochs]
                spread[k] = np.array([np.nanstd(v, 0, ddof=1) if len(v) > 1
                                      else np.full(epochs, np.nan) for v in stacked])
        trials = np.array([len(v) for v in values[LOSSES[0]]])
        out.append(Curves(labels[setting], flood, trials, loss, spread))
    return out


def _trials_text(settings: Sequence[Curves]) -> str:
    counts = sorted({int(n) for s in settings for n in s.trials})
    if counts == [1]:
        return "one trial per flood level"
    many = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean over {many} trials per flood level; band: one sample standard deviation"


FEW = 3  # up to this many flood levels besides b = 0 are named in the legend, not a colour bar


def plot_curves(runs: Sequence[Run], out_stem: str | Path,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """The learning-curve figure of `runs` (all with test loss every epoch; see `usable`): a row per
    setting, training loss left, test loss right. Writes OUT_STEM.<format> and OUT_STEM.csv (the
    mean, its standard deviation and the number of trials per flood level and epoch)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    settings = learning_curves(runs)
    flooded = np.unique(np.concatenate([s.flood[s.flood != BASELINE] for s in settings]))
    named = len(flooded) <= FEW
    shade = Normalize(*((flooded.min(), flooded.max()) if len(flooded) > 1 else (0.0, 1.0)))
    cmap = colormaps["viridis"]
    colour = ({b: c for b, c in zip(flooded, ("#0072B2", "#009E73", "#CC79A7"))} if named
              else {b: cmap(shade(b)) for b in flooded})
    fig, axes = figure(columns=2, rows=len(settings), cols=2, height=2.1 * len(settings) + 0.5,
                       sharex="row")
    csv: dict[str, list] = {k: [] for k in ("setting", "flood", "epoch", "trials", *LOSSES,
                                            *(f"{k}_std" for k in LOSSES))}
    for row, s in enumerate(settings):
        epochs = np.arange(s.loss["test_loss"].shape[1])
        for i, b in enumerate(s.flood):
            style = (dict(color="black", ls=":", lw=1.4, zorder=3, label="b = 0") if b == BASELINE
                     else dict(color=colour[b], lw=0.9, label=f"b = {b:g}" if named else None))
            for col, k in enumerate(LOSSES):
                ax = axes[row, col]
                ax.plot(epochs, s.loss[k][i], **style)
                ax.fill_between(epochs, s.loss[k][i] - s.spread[k][i],
                                s.loss[k][i] + s.spread[k][i], color=style["color"], alpha=0.2,
                                lw=0)  # NaN spread (one trial): no band
                if k == "train_loss" and named and b != BASELINE:
                    ax.axhline(b, color=colour[b], ls="--", lw=0.5)  # the level it floats at
            for key, value in (("setting", [s.label] * len(epochs)), ("flood", np.full(len(epochs), b)),
                               ("epoch", epochs), ("trials", np.full(len(epochs), s.trials[i])),
                               *((k, s.loss[k][i]) for k in LOSSES),
                               *((f"{k}_std", s.spread[k][i]) for k in LOSSES)):
                csv[key].extend(value)
        for col, k in enumerate(LOSSES):
            ax = axes[row, col]
            ax.set_title(f"{s.label}: {TITLES[k]}" if len(settings) > 1 else TITLES[k])
            ax.set_xlabel("epoch" if row == len(settings) - 1 else "")
            ax.set_ylabel(TITLES[k])
            later = np.nanmax(s.loss[k][:, 1:]) if s.loss[k].shape[1] > 1 else np.nan
            if np.isfinite(later) and np.nanmax(s.loss[k][:, 0]) > 1.5 * later:
                # The untrained model's loss (e.g. ln 10 on MNIST) would flatten every later
                # difference between flood levels into one line at the bottom: cut it off.
                ax.set_ylim(0, 1.05 * later)
        if BASELINE in s.flood or named:
            axes[row, 0].legend(loc="upper right")
    if not named:
        fig.colorbar(ScalarMappable(shade, cmap), ax=axes, label="flood level b", shrink=0.8)
    fig.suptitle(_trials_text(settings), fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)
