"""The figure of a sharpness result file (`landscape sharpness`, `landscape figures --section
sharpness`): test loss against each measure at the saved epochs, as Fig. 4 of the paper plots it
against the gradient amplitude (Sec. 5.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.errors import BadInput
from landscape.figures.epochs import drawn_epochs, of_checkpoints, skip_for, skipped
from landscape.figures.style import (
    COLOURS,
    FORMATS,
    early_stopping_marked,
    epoch_markers,
    figure,
    flooding_of,
    log_axis,
    marker_legend,
    run_labels,
    save_figure,
)
from landscape.results import SHARPNESS, read_result, text

PANELS = {"lambda_max": "top Hessian eigenvalue", "trace": "Hessian trace (Hutchinson)",
          "avg_sharpness": "average-case sharpness"}


def plot_sharpness(result_path: str | Path, out_stem: str | Path,
                   formats: Sequence[str] = FORMATS, *,
                   skip_epochs: int | None = None) -> list[Path]:
    """Test loss (y) against the top eigenvalue, the trace and the average-case sharpness (x):
    "o" = runs with flooding (fixed, adaptive or AdaFlood), "+" = without, "x" = a user's
    checkpoints (flooding not known); colour = epoch (viridis); epochs <= skip_epochs dropped
    (none with 0; default: figures.epochs.skip_for), as the paper's Fig. 4; large black markers
    at each run's early-stopping epoch (the computed epoch nearest to it). Runs are named as in
    Fig. 4 ("b = 0.2"), checkpoints by their own labels. A panel whose values are positive and
    span more than a factor 20 has a log x axis. Writes OUT_STEM.<format> and OUT_STEM.csv (the
    plotted points)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    attrs, a = read_result(result_path, SHARPNESS)
    skip_epochs = skip_for(skip_epochs, checkpoints=of_checkpoints(a))
    keep = drawn_epochs(a["epoch"], skip_epochs)
    if not keep.any():
        raise BadInput(f"{result_path}: no computed epoch after the first {skip_epochs} to plot "
                       "(see --skip-epochs)")
    shade = Normalize(vmin=float(a["epoch"][keep].min()), vmax=float(a["epoch"][keep].max()))
    colours = colormaps["viridis"](shade(a["epoch"]))
    names = [text(n) for n in a["run_name"]]
    fig, axes = figure(columns=2, rows=1, cols=3, height=2.6)
    for ax, (measure, label) in zip(axes[0], PANELS.items()):
        for r, with_flooding in enumerate(flooding_of(a)):
            mine = keep & (a["run"] == r)
            stop = mine & (a["epoch"] == a["marked_epoch"][r])
            epoch_markers(ax, a[measure][mine], a["test_loss"][mine], colours[mine],
                          a[measure][stop], a["test_loss"][stop], flooded=with_flooding)
        values = a[measure][keep]
        if (values > 0).all() and values.max() > 20 * values.min():  # spans decades
            log_axis(ax.xaxis)
        ax.set_xlabel(label)
        ax.set_ylabel("test loss")
    labels = run_labels(a["flood"], a["flooded"], json.loads(attrs["objectives"]),
                        [text(n) for n in a["label"]] if "label" in a else None)
    marker_legend(axes[0, 0], labels, flooding_of(a))
    fig.colorbar(ScalarMappable(shade, colormaps["viridis"]), ax=axes, label="epoch", shrink=0.8)
    fig.suptitle(f"sharpness of the {attrs['split']} loss (sigma {attrs['sigma']:g}, "
                 f"{attrs['probes']} probes), {skipped(skip_epochs)}"
                 + ("; large black: early-stopping epoch" if early_stopping_marked(a) else ""),
                 fontsize=7)
    plotted = np.flatnonzero(keep)
    csv = {"run": [names[r] for r in a["run"][plotted]],
           "flooded": [flooding_of(a)[r] for r in a["run"][plotted]],  # empty: not known
           **{k: a[k][plotted] for k in ("epoch", *PANELS, "trace_stderr", "avg_sharpness_stderr",
                                         "loss", "test_loss", "test_acc")},
           "early_stopping": a["epoch"][plotted] == a["marked_epoch"][a["run"][plotted]]}
    written = save_figure(fig, out_stem, csv, formats=formats)
    if "eigenvalues" in a or "density/nodes" in a:
        written += plot_spectrum(attrs, a, f"{out_stem}-spectrum", formats,
                                 run_labels(a["flood"], a["flooded"], json.loads(attrs["objectives"]),
                                            [text(n) for n in a["label"]] if "label" in a else None))
    return written


def plot_spectrum(attrs: dict, a: dict[str, np.ndarray], out_stem: str | Path,
                  formats: Sequence[str], labels: Sequence[str]) -> list[Path]:
    """The Hessian's spectrum per run: its density at the run's last computed epoch on a log
    scale (one panel per run, side by side, shared axes: with and without flooding compared at a
    glance) and the top-k eigenvalues against the epoch. Writes OUT_STEM.<format> and .csv."""
    from landscape.measures.density import Density

    runs = range(len(a["flooded"]))
    panels = (len(runs) if "density/nodes" in a else 0) + ("eigenvalues" in a)
    fig, axes = figure(columns=2, rows=1, cols=panels, height=2.4)
    csv: dict[str, list] = {k: [] for k in ("run", "epoch", "kind", "x", "y")}
    column = 0
    if "density/nodes" in a:
        for r in runs:
            ax = axes[0, column]
            last = np.flatnonzero(a["run"] == r)[-1]
            keep = np.isfinite(a["density/nodes"][last])
            if not keep.any():  # NaN/inf weights at that checkpoint (diverged): an empty panel
                ax.set_title(f"{labels[r]}, epoch {a['epoch'][last]}: not finite")
                column += 1
                continue
            grid, curve = Density(a["density/nodes"][last][keep],
                                  a["density/weights"][last][keep]).curve()
            ax.semilogy(grid, np.maximum(curve, 1e-12), color=COLOURS[flooding_of(a)[r]],
                        lw=0.9)
            ax.set_ylim(bottom=max(curve.max() * 1e-8, 1e-12))
            ax.set_title(f"{labels[r]}, epoch {a['epoch'][last]}")
            ax.set_xlabel("eigenvalue")
            csv["run"] += [labels[r]] * len(grid)
            csv["epoch"] += [int(a["epoch"][last])] * len(grid)
            csv["kind"] += ["density"] * len(grid)
            csv["x"] += grid.tolist()
            csv["y"] += curve.tolist()
            column += 1
        axes[0, 0].set_ylabel("density (log)")
        for ax in axes[0, 1:column]:
            ax.sharey(axes[0, 0])
            ax.sharex(axes[0, 0])
    if "eigenvalues" in a:
        ax = axes[0, column]
        for r in runs:
            mine = a["run"] == r
            for j in range(a["eigenvalues"].shape[1]):
                ax.plot(a["epoch"][mine], a["eigenvalues"][mine, j], "-",
                        color=COLOURS[flooding_of(a)[r]], lw=0.8,
                        alpha=1 - 0.6 * j / max(a["eigenvalues"].shape[1], 1),
                        label=labels[r] if j == 0 else None)
                csv["run"] += [labels[r]] * int(mine.sum())
                csv["epoch"] += a["epoch"][mine].tolist()
                csv["kind"] += [f"eigenvalue {j + 1}"] * int(mine.sum())
                csv["x"] += a["epoch"][mine].tolist()
                csv["y"] += a["eigenvalues"][mine, j].tolist()
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"top {a['eigenvalues'].shape[1]} Hessian eigenvalues")
        ax.legend(loc="best")
    fig.suptitle(f"Hessian of the {attrs['split']} loss: spectral density (stochastic Lanczos "
                 "quadrature) at each run's last computed epoch; top eigenvalues (Lanczos)",
                 fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)
