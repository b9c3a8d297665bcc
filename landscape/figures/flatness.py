"""The figure of paper Sec. 5.3 (Fig. 5) from stored slice files, and contour plots of surfaces.

Fig. 5's styles: the first-below-flood snapshot dotted blue, the last epoch with flooding solid
blue, the last epoch without flooding solid vermillion (plotting.PLAIN, the palette's red).
Further runs (another b, another seed) take the palette's next colours, their snapshots dotted in
their own colour. Surfaces: filled contours on levels shared by every panel, one colour bar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.figures.flatness_text import describe, direction_caption, read_slices
from landscape.figures.style import FLOODED, FORMATS, PALETTE, PLAIN, figure, save_figure
from landscape.results import SPLITS


def _colours(results: Sequence[tuple[dict, dict]]) -> list[str]:
    """One colour per run: the first flooded run blue, the first plain run red, others after."""
    spare = iter(c for name, c in PALETTE.items() if c not in (FLOODED, PLAIN) and name != "yellow")
    by_run: dict[str, str] = {}
    for attrs, _ in results:
        if attrs["run"] not in by_run:
            flooded = attrs.get("role", "plain") != "plain"
            first = FLOODED if flooded else PLAIN
            by_run[attrs["run"]] = first if first not in by_run.values() else next(spare)
    return [by_run[attrs["run"]] for attrs, _ in results]


def plot_flatness(result_paths: Sequence[str | Path], out_stem: str | Path,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """Fig. 5 from slice result files (train loss and test loss against alpha), or, for surface
    files, contour plots (one row per model, train and test loss). Writes OUT_STEM.<format> and
    OUT_STEM.csv (the plotted numbers, long format with a "model" column)."""
    results = read_slices(result_paths)
    if int(results[0][0]["directions"]) == 2:
        return _plot_surfaces(results, out_stem, formats)
    fig, axes = figure(columns=2, cols=2)
    csv: dict[str, list] = {k: [] for k in ("model", "alpha", "train_loss", "train_acc",
                                            "test_loss", "test_acc")}
    for (attrs, a), colour in zip(results, _colours(results)):
        style = ":" if attrs["which"] == "snapshot" else "-"
        for ax, split in zip(axes[0], SPLITS):
            ax.plot(a["xcoordinates"], a[f"{split}_loss"], style, color=colour,
                    label=describe(attrs))
        csv["model"] += [describe(attrs)] * len(a["xcoordinates"])
        csv["alpha"] += a["xcoordinates"].tolist()
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            csv[key] += a[key].tolist()
    for ax, split in zip(axes[0], SPLITS):
        ax.set_xlabel(r"perturbation $\alpha$")
        ax.set_ylabel(f"{split} loss")
    axes[0, 0].legend(loc="upper center")
    fig.suptitle(direction_caption(results[0][0]), fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)


def _axis(attrs: dict, i: int, default: str) -> str:
    """An axis label: the principal component and its share of variance for pca directions."""
    if "explained_variance" not in attrs:
        return default
    share = json.loads(attrs["explained_variance"])[i]
    return f"PC{i + 1} ({100 * share:.1f}% of the path's variance)"


def _plot_surfaces(results: Sequence[tuple[dict, dict]], out_stem: str | Path,
                   formats: Sequence[str]) -> list[Path]:
    """Filled contours, one row per model (training loss left, test loss right), on one set of
    levels and one colour bar for every panel, so that flatness can be compared across models."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm

    fig, axes = figure(columns=2, rows=len(results), cols=2, height=2.4 * len(results) + 0.4)
    computed = np.concatenate([a[f"{split}_loss"][np.isfinite(a[f"{split}_loss"])].ravel()
                               for _, a in results for split in SPLITS])
    # loss rises fast away from the minimum: levels spaced in log keep the basin visible
    low, high = max(computed.min(), 1e-6) if len(computed) else 1e-6, max(computed.max(), 1e-5)
    levels = np.geomspace(low, high, 16)
    norm = BoundaryNorm(levels, ncolors=256, extend="neither")
    csv: dict[str, list] = {k: [] for k in ("model", "alpha", "beta", "train_loss", "test_loss")}
    for row, (attrs, a) in enumerate(results):
        x, y = a["xcoordinates"], a["ycoordinates"]
        for ax, split in zip(axes[row], SPLITS):
            z = a[f"{split}_loss"]                                   # [ny, nx]
            ax.set_title(f"{describe(attrs)}: {split} loss")
            if np.isfinite(z).sum() < 4:
                ax.text(0.5, 0.5, "not computed", transform=ax.transAxes, ha="center")
                continue
            ax.contourf(x, y, np.ma.masked_invalid(np.clip(z, low, high)), levels=levels,
                        norm=norm, cmap="viridis")
            ax.contour(x, y, np.ma.masked_invalid(z), levels=levels, colors="white",
                       linewidths=0.3)
            ax.plot(0, 0, "k+", ms=6)  # the model itself
            if "path/x" in a:  # pca directions: the optimization path in their plane
                ax.plot(a["path/x"], a["path/y"], "-o", color=PALETTE["orange"], ms=2, lw=0.8)
            ax.set_xlabel(_axis(attrs, 0, r"$\alpha$"))
            ax.set_ylabel(_axis(attrs, 1, r"$\beta$"))
            ax.set_aspect("equal")
        grid_x, grid_y = np.meshgrid(x, y)
        csv["model"] += [describe(attrs)] * grid_x.size
        csv["alpha"] += grid_x.ravel().tolist()
        csv["beta"] += grid_y.ravel().tolist()
        csv["train_loss"] += a["train_loss"].ravel().tolist()
        csv["test_loss"] += a["test_loss"].ravel().tolist()
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=axes, label="loss (levels shared by all "
                 "panels)", shrink=0.8, format="%.3g")
    fig.suptitle(direction_caption(results[0][0]), fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)
