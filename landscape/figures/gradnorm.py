"""Fig. 4: the gradient amplitude against the test loss, per epoch.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.errors import BadInput
from landscape.figures.epochs import drawn_epochs, of_checkpoints, skip_for, skipped
from landscape.figures.style import FORMATS, figure, save_figure
from landscape.results import GRADNORM, SPLITS, read_result, text


def plot_gradnorm(result_path: str | Path, out_stem: str | Path,
                  formats: Sequence[str] = FORMATS, *, skip_epochs: int | None = None
                  ) -> list[Path]:
    """Fig. 4 of the paper from a gradnorm result file: test loss (top) and test accuracy (bottom)
    against the gradient amplitude of the training loss (left) and of the test loss (right).
    "o" = with flooding, "+" = without, "x" = a user's checkpoints (flooding not known); colour =
    epoch (viridis); epochs <= skip_epochs dropped (none with 0: epochs.drawn_epochs; default:
    epochs.skip_for);
    large black markers at each run's early-stopping epoch (the computed epoch nearest to it),
    drawn even when it falls in the dropped epochs (small data sets peak early). The amplitudes
    span orders of magnitude (a memorizing model's training gradient goes to ~0): log x axes.
    Writes OUT_STEM.<format> and OUT_STEM.csv (the plotted points)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from landscape.figures.style import (
        early_stopping_marked,
        epoch_markers,
        flooding_of,
        log_axis,
        marker_legend,
    )

    attrs, a = read_result(result_path, GRADNORM)
    computed = json.loads(attrs["splits"])
    skip_epochs = skip_for(skip_epochs, checkpoints=of_checkpoints(a))
    keep = drawn_epochs(a["epoch"], skip_epochs)
    if not keep.any():
        raise BadInput(f"{result_path}: no saved epoch after the first {skip_epochs} to plot; "
                       "lower --skip-epochs to draw the early ones")
    cmap = colormaps["viridis"]
    shade = Normalize(vmin=float(a["epoch"][keep].min()), vmax=float(a["epoch"][keep].max()))
    fig, axes = figure(columns=2, rows=2, cols=2, height=4.6)
    flooded = flooding_of(a)
    for r, with_flooding in enumerate(flooded):
        mine = keep & (a["run"] == r)
        stop = (a["run"] == r) & (a["epoch"] == a["marked_epoch"][r])
        for (row, metric), (col, grad) in itertools.product(enumerate(("test_loss", "test_acc")),
                                                            enumerate(("train_grad", "test_grad"))):
            ax = axes[row, col]
            epoch_markers(ax, a[grad][mine], a[metric][mine], cmap(shade(a["epoch"][mine])),
                          a[grad][stop], a[metric][stop], flooded=with_flooding)
            if grad.split("_")[0] in computed:
                log_axis(ax.xaxis)
            ax.set_xlabel(f"gradient amplitude, {grad.split('_')[0]} loss")
            ax.set_ylabel(metric.replace("_", " ").replace("acc", "accuracy"))
    for col, split in enumerate(SPLITS):
        if split not in computed:
            for ax in axes[:, col]:
                ax.text(0.5, 0.5, "not computed", transform=ax.transAxes, ha="center")
    # legend in grey: the markers' colours mean epochs, not runs
    marker_legend(axes[0, 0], _run_labels(a, flooded), flooded)
    fig.colorbar(ScalarMappable(shade, cmap), ax=axes, label="epoch", shrink=0.6)
    fig.suptitle(f"{attrs['normalization']}-normalized gradients (bias/BN {attrs['biasbn']}), "
                 f"{skipped(skip_epochs)}"
                 + ("\nlarge black: early-stopping epoch" if early_stopping_marked(a) else ""),
                 fontsize=7)
    return save_figure(fig, out_stem, _plotted_points(a, keep), formats=formats)


def _run_labels(a: dict[str, np.ndarray], flooded: Sequence[bool | None]) -> list[str]:
    """Each run's legend entry: its flood level, its objective where b = 0 does not say it, or a
    user checkpoint's own label."""
    if "label" in a:  # a user's checkpoints: no flood level is known
        return [text(label) for label in a["label"]]
    labels = [f"b = {b:g}" for b in a["flood"]]
    if "objective" in a:  # adaptive from b = 0 and AdaFlood are not "b = 0"
        labels = [text(o) if f and b == 0 else label for o, f, b, label
                  in zip(a["objective"], flooded, a["flood"], labels)]
    return labels


def _plotted_points(a: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The figure's numbers: the drawn epochs and every early-stopping marker."""
    names = [text(n) for n in a["run_name"]]
    plotted = np.flatnonzero(keep | (a["epoch"] == a["marked_epoch"][a["run"]]))
    return {"run": [names[r] for r in a["run"][plotted]], "flood": a["flood"][a["run"][plotted]],
            **{k: a[k][plotted] for k in ("epoch", "train_grad", "test_grad", "test_loss",
                                          "test_acc")},
            "early_stopping": a["epoch"][plotted] == a["marked_epoch"][a["run"][plotted]]}
