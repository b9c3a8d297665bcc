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
from typing import Sequence

import numpy as np

from landscape.analysis.selection import setting_labels, setting_of
from landscape.errors import BadInput
from landscape.figures.curves import LOSSES, Curves
from landscape.runs.store import Run


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


