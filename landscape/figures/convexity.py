"""Convexity maps (Li et al. 2018, Sec. 6, Fig. 7; loss-landscape's plot_hessian_eigen) from slice
and surface files computed with `flatness --eigen`: the ratio |lambda_min / lambda_max| of the
training loss's Hessian at each point. Near 0 (dark) the landscape is convex there or its negative
curvature is negligible beside the positive; large values mark significant negative curvature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.errors import BadInput
from landscape.figures.flatness_text import describe, direction_caption, read_slices
from landscape.figures.style import FORMATS, figure, save_figure

LARGEST, SMALLEST = "train_max_eigenvalue", "train_min_eigenvalue"  # as results store them


def convexity_ratio(largest: np.ndarray, smallest: np.ndarray) -> np.ndarray:
    """|lambda_min / lambda_max| (Li et al. 2018, Sec. 6), NaN where lambda_max is 0 or the point
    is not computed."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(largest != 0, np.abs(smallest / largest), np.nan)


def plot_convexity(result_paths: Sequence[str | Path], out_stem: str | Path,
                   formats: Sequence[str] = FORMATS) -> list[Path]:
    """|lambda_min / lambda_max| against alpha for slice files, or as filled contours (one panel
    per model, levels shared) for surface files. Writes OUT_STEM.<format> and OUT_STEM.csv (long
    format: model, alpha[, beta], both eigenvalues and the ratio)."""
    results = read_slices(result_paths)
    lacking = [str(p) for p, (_, a) in zip(result_paths, results) if LARGEST not in a]
    if lacking:
        raise BadInput(f"{lacking[0]} holds no Hessian eigenvalues: compute it with --eigen")
    surfaces = int(results[0][0]["directions"]) == 2
    csv: dict[str, list] = {k: [] for k in ("model", "alpha", *(("beta",) if surfaces else ()),
                                            LARGEST, SMALLEST, "ratio")}
    for attrs, a in results:
        x, y = np.meshgrid(a["xcoordinates"], a.get("ycoordinates", [0.0]))
        csv["model"] += [describe(attrs)] * x.size
        csv["alpha"] += x.ravel().tolist()
        if surfaces:
            csv["beta"] += y.ravel().tolist()
        csv[LARGEST] += a[LARGEST].ravel().tolist()
        csv[SMALLEST] += a[SMALLEST].ravel().tolist()
        csv["ratio"] += convexity_ratio(a[LARGEST], a[SMALLEST]).ravel().tolist()
    fig = _surfaces(results) if surfaces else _slices(results)
    fig.suptitle(direction_caption(results[0][0]), fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)


def _slices(results: Sequence[tuple[dict, dict]]):
    fig, axes = figure(columns=1)
    for attrs, a in results:
        style = ":" if attrs.get("which") == "snapshot" else "-"
        axes[0, 0].plot(a["xcoordinates"], convexity_ratio(a[LARGEST], a[SMALLEST]), style,
                        label=describe(attrs))
    axes[0, 0].set_xlabel(r"perturbation $\alpha$")
    axes[0, 0].set_ylabel(r"$|\lambda_{min} / \lambda_{max}|$")
    axes[0, 0].legend(loc="upper center")
    return fig


def _surfaces(results: Sequence[tuple[dict, dict]]):
    """Filled contours on levels shared by every panel, so that models can be compared."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    ratios = [convexity_ratio(a[LARGEST], a[SMALLEST]) for _, a in results]   # each [ny, nx]
    finite = np.concatenate([r[np.isfinite(r)] for r in ratios])
    top = max(float(finite.max()), 1e-6) if len(finite) else 1.0
    levels = np.linspace(0, top, 16)
    norm = Normalize(0, top)
    fig, axes = figure(columns=2, rows=len(results), cols=1, height=2.4 * len(results) + 0.4)
    for ax, (attrs, a), ratio in zip(axes[:, 0], results, ratios):
        ax.set_title(f"{describe(attrs)}: " + r"$|\lambda_{min} / \lambda_{max}|$")
        if np.isfinite(ratio).sum() < 4:
            ax.text(0.5, 0.5, "not computed", transform=ax.transAxes, ha="center")
            continue
        ax.contourf(a["xcoordinates"], a["ycoordinates"], np.ma.masked_invalid(ratio),
                    levels=levels, norm=norm, cmap="viridis")
        ax.plot(0, 0, "k+", ms=6)  # the model itself
        ax.set_xlabel(r"$\alpha$")
        ax.set_ylabel(r"$\beta$")
        ax.set_aspect("equal")
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=axes, shrink=0.8, format="%.3g",
                 label=r"$|\lambda_{min} / \lambda_{max}|$ (levels shared by all panels)")
    return fig
