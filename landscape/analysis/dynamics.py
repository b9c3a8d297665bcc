"""The edge-of-stability figure's data (issue 25, item 3; `landscape figures --section dynamics`):
the sharpness that runs tracked while training (`landscape train --track top_eigenvalue`), read
from their metrics only, against the optimizer's threshold (2 / lr for plain SGD; Cohen et al.,
ICLR 2021, "Gradient descent on neural networks typically occurs at the edge of stability") and,
for Adam, the preconditioned sharpness against its threshold (38 / lr; Cohen et al. 2022,
"Adaptive gradient methods at the edge of stability"). Plain (b = 0) and flooded runs of one
setting share a panel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from landscape.analysis.selection import setting_labels, setting_of
from landscape.config import RunConfig
from landscape.errors import BadInput
from landscape.figures.dynamics import SERIES, Trace
from landscape.runs.store import Run

NEEDS = "runs trained with --track top_eigenvalue (landscape train)"


def usable(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The runs that tracked the top eigenvalue, and a note on those left out; none is bad input."""
    kept = [r for r in runs if r.config.track is not None
            and "top_eigenvalue" in r.config.track.measures and r.epochs_done >= 0]
    notes = ([f"dynamics: {len(runs) - len(kept)} run(s) left out: they tracked no top "
              "eigenvalue (landscape train --track top_eigenvalue)"] if len(kept) < len(runs)
             else [])
    if not kept:
        raise BadInput(f"section dynamics needs {NEEDS}; none of the {len(runs)} run(s) has it")
    return kept, notes


def traces(runs: Sequence[Run]) -> list[Trace]:
    """One Trace per run: its tracked epochs (the rows where the top eigenvalue was measured),
    grouped by setting (runs identical but for b and the seeds), in order of appearance."""
    settings = list(dict.fromkeys(setting_of(r.config) for r in runs))
    labels = setting_labels(settings)
    out = []
    for run in runs:
        metrics = run.metrics()
        epochs = np.flatnonzero(np.isfinite(metrics["top_eigenvalue"]))
        values = {name: (metrics[name][epochs] if name in metrics
                         else np.full(len(epochs), np.nan)) for name in SERIES}
        c = run.config
        out.append(Trace(labels[setting_of(c)], c.optim.name, edge_formula(c), c.objective.flood,
                         c.objective.floods, c.seed, epochs, values))
    return out


def edge_formula(config: RunConfig) -> str:
    """The threshold the trainer recorded (measures/tracking.threshold), as a formula in lr."""
    o = config.optim
    if o.name == "adam":  # torch's default beta1 = 0.9, which the trainer's Adam keeps
        return "38 / lr"
    return "2 / lr" if not o.momentum else f"(2 + 2 beta) / lr, beta = {o.momentum:g}"
