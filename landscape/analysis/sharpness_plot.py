"""The figure of a sharpness result file (`landscape sharpness`, `landscape figures --section
sharpness`): test loss against each measure at the saved epochs, as Fig. 4 of the paper plots it
against the gradient amplitude (Sec. 5.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput
from .gradnorm import SKIP_EPOCHS
from .loading import read_result, text
from .plotting import (FORMATS, epoch_markers, figure, log_axis, marker_legend, run_labels,
                       save_figure)
from .sharpness import KIND

PANELS = {"lambda_max": "top Hessian eigenvalue", "trace": "Hessian trace (Hutchinson)",
          "avg_sharpness": "average-case sharpness"}


def plot_sharpness(result_path: str | Path, out_stem: str | Path,
                   formats: Sequence[str] = FORMATS, *,
                   skip_epochs: int = SKIP_EPOCHS) -> list[Path]:
    """Test loss (y) against the top eigenvalue, the trace and the average-case sharpness (x):
    "o" = runs with flooding (fixed, adaptive or AdaFlood), "+" = without; colour = epoch
    (viridis); epochs <= skip_epochs dropped, as the paper's Fig. 4; large black markers at each
    run's early-stopping epoch (the computed epoch nearest to it). Runs are named as in Fig. 4
    ("b = 0.2"). A panel whose values are positive and span more than a factor 20 has a log x
    axis. Writes OUT_STEM.<format> and OUT_STEM.csv (the plotted points)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    attrs, a = read_result(result_path, KIND)
    keep = a["epoch"] > skip_epochs
    if not keep.any():
        raise BadInput(f"{result_path}: no computed epoch after the first {skip_epochs} to plot "
                       "(see --skip-epochs)")
    shade = Normalize(vmin=float(a["epoch"][keep].min()), vmax=float(a["epoch"][keep].max()))
    colours = colormaps["viridis"](shade(a["epoch"]))
    names = [text(n) for n in a["run_name"]]
    fig, axes = figure(columns=2, rows=1, cols=3, height=2.6)
    for ax, (measure, label) in zip(axes[0], PANELS.items()):
        for r, with_flooding in enumerate(a["flooded"]):
            mine = keep & (a["run"] == r)
            stop = mine & (a["epoch"] == a["marked_epoch"][r])
            epoch_markers(ax, a[measure][mine], a["test_loss"][mine], colours[mine],
                          a[measure][stop], a["test_loss"][stop], flooded=bool(with_flooding))
        values = a[measure][keep]
        if (values > 0).all() and values.max() > 20 * values.min():  # spans decades
            log_axis(ax.xaxis)
        ax.set_xlabel(label)
        ax.set_ylabel("test loss")
    labels = run_labels(a["flood"], a["flooded"], json.loads(attrs["objectives"]),
                        [text(n) for n in a["label"]] if "label" in a else None)
    marker_legend(axes[0, 0], labels, a["flooded"])
    fig.colorbar(ScalarMappable(shade, colormaps["viridis"]), ax=axes, label="epoch", shrink=0.8)
    fig.suptitle(f"sharpness of the {attrs['split']} loss (sigma {attrs['sigma']:g}, "
                 f"{attrs['probes']} probes); large black: early-stopping epoch", fontsize=7)
    plotted = np.flatnonzero(keep)
    csv = {"run": [names[r] for r in a["run"][plotted]],
           "flooded": a["flooded"][a["run"][plotted]],
           **{k: a[k][plotted] for k in ("epoch", *PANELS, "trace_stderr", "avg_sharpness_stderr",
                                         "loss", "test_loss", "test_acc")},
           "early_stopping": a["epoch"][plotted] == a["marked_epoch"][a["run"][plotted]]}
    return save_figure(fig, out_stem, csv, formats=formats)
