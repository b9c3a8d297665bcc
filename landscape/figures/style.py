"""One paper-ready figure style, and saving a figure together with the numbers behind it.

Sizes follow two-column papers (one column 3.25 in, two columns 6.75 in); text is 8 pt; colours come
from the Okabe-Ito palette (colour-blind safe); PDFs embed TrueType fonts and stay vector. Figures
are built with matplotlib's object API (no pyplot state), so library code never opens a window.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from landscape.errors import BadInput
from landscape.figures.epochs import of_checkpoints
from landscape.files import replaced

if TYPE_CHECKING:  # matplotlib takes a second to import: commands check --format before it
    from matplotlib.figure import Figure

WIDTH = {1: 3.25, 2: 6.75}  # inches
PALETTE = {"blue": "#0072B2", "vermillion": "#D55E00", "green": "#009E73", "orange": "#E69F00",
           "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000"}
FLOODED, PLAIN = PALETTE["blue"], PALETTE["vermillion"]  # the paper's blue/red convention
# Fig. 4's markers and the spectra's colours by a run's flooding: with, without, or not known (a
# user's checkpoints: no flood level is recorded, so neither the paper's "o" nor its "+" is true)
MARKERS = {True: "o", False: "+", None: "x"}
COLOURS = {True: FLOODED, False: PLAIN, None: PALETTE["black"]}
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
      "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "axes.linewidth": 0.6,
      "pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": 300, "axes.spines.top": False,
      "axes.spines.right": False, "legend.frameon": False}
FORMATS = ("pdf", "png")


def figure(*, columns: int = 1, rows: int = 1, cols: int = 1, height: float | None = None,
           **subplot_kw) -> tuple[Figure, np.ndarray]:
    """A figure one or two paper columns wide with a grid of axes (always a 2-D array)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(RC)
    width = WIDTH[columns]
    fig = Figure(figsize=(width, height or width / cols * 0.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **subplot_kw)
    return fig, axes


def log_axis(axis) -> None:
    """A log scale whose values can be read: a labelled tick at every decade and minor ticks at
    2-9 times each, labelled at 2 and 5 where fewer than two decades are shown; within less than
    one decade (where the scale is nearly linear) a few labelled round values instead. One decade
    label alone says nothing about the points."""
    from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator

    def decades() -> float:
        low, high = sorted(axis.get_view_interval())
        return float(np.log10(high / low)) if low > 0 else np.inf

    class Minor(Locator):
        def __call__(self):
            low, high = sorted(axis.get_view_interval())
            if decades() >= 1:
                return LogLocator(base=10, subs=np.arange(2, 10), numticks=99).tick_values(
                    low, high)
            values = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
            exponent = np.log10(values[values > 0])
            return values[values > 0][~np.isclose(exponent, np.round(exponent))]  # not decades

    def minor_label(value: float, _position) -> str:
        if decades() < 1:
            return f"{value:.3g}"
        mantissa = round(value / 10 ** np.floor(np.log10(value) + 1e-9))
        return f"{value:.3g}" if decades() < 2 and mantissa in (2, 5) else ""

    axis.axes.set(**{f"{axis.axis_name}scale": "log"})
    axis.set_major_locator(LogLocator(base=10, numticks=99))
    axis.set_minor_locator(Minor())
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:.3g}"))
    axis.set_minor_formatter(FuncFormatter(minor_label))


def run_labels(flood: np.ndarray, flooded: np.ndarray, objectives: Sequence[str] | None = None,
               user: Sequence[str] | None = None) -> list[str]:
    """Legend names of analysed runs: "b = 0.2"; the objective's name for flooding without a
    fixed b (adaptive from b = 0, AdaFlood); a user's own names for their checkpoints."""
    if user is not None:
        return [str(u) for u in user]
    labels = [f"b = {b:g}" for b in flood]
    if objectives is not None:
        labels = [str(o) if f and b == 0 else label
                  for o, f, b, label in zip(objectives, flooded, flood, labels)]
    return labels


def flooding_of(a: Mapping[str, np.ndarray]) -> list[bool | None]:
    """Each run's flooding in a per-epoch result (gradnorm, sharpness): True or False, or None
    for a user's checkpoints (figures.epochs.of_checkpoints). Files from before the `flooded`
    array: only a fixed b > 0 floods."""
    if of_checkpoints(a):
        return [None] * len(a["label"])
    return [bool(f) for f in a.get("flooded", a["flood"] > 0)]


def early_stopping_marked(a: Mapping[str, np.ndarray]) -> bool:
    """Whether any run of a per-epoch result has an early-stopping epoch to mark (a user's
    checkpoints have none: their caption must not promise the marker)."""
    return bool((a["marked_epoch"] >= 0).any())


def epoch_markers(ax, x, y, colours, stop_x, stop_y, *, flooded: bool | None) -> None:
    """One run's points of a Fig. 4-style scatter: "o" (hollow, as the paper's) with flooding,
    "+" without, "x" where not known, coloured by epoch; its early-stopping point (stop_x,
    stop_y) also as a larger black marker of the same kind, hollow and drawn beneath, so that
    the point stays visible."""
    for xs, ys, colour, size, width, z in ((x, y, colours, 12, 0.7, 3),
                                           (stop_x, stop_y, "black", 90, 1.6, 2)):
        style = dict(facecolors="none", edgecolors=colour) if flooded else dict(color=colour)
        ax.scatter(xs, ys, marker=MARKERS[flooded], s=size, linewidths=width, zorder=z, **style)


def marker_legend(ax, labels: Sequence[str], flooded: Sequence[bool | None]) -> None:
    """A legend of the runs' markers, in grey: in these scatters colour means epoch, not run."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="none", color="grey", mfc="none", marker=MARKERS[f],
                      label=label) for label, f in dict.fromkeys(zip(labels, flooded))]
    ax.legend(handles=handles, loc="best")


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in (text.split(",") if isinstance(text, str) else text)
                    if f.strip())
    bad = [f for f in formats if f not in ("pdf", "png", "svg")]
    if bad or not formats:
        raise BadInput(f"unknown figure format(s) {bad or text!r}; use pdf, png, svg")
    return formats


def save_figure(fig: Figure, stem: str | Path, data: Mapping[str, Sequence] | None = None, *,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write STEM.<format> for each format and, with `data`, STEM.csv: the plotted numbers as
    equal-length columns (use a long format with a "series" column for several curves)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:  # each file whole or not at all: a killed drawing leaves no stub
        with replaced(with_extension(stem, fmt), "wb") as f:
            fig.savefig(f, format=fmt)
        written.append(with_extension(stem, fmt))
    if data is not None:
        written.append(write_csv(with_extension(stem, "csv"), data))
    return written


def with_extension(stem: str | Path, extension: str) -> Path:
    """STEM.extension; unlike Path.with_suffix it keeps dots in the stem (run names hold
    "noise0.1")."""
    stem = Path(stem)
    return stem.with_name(f"{stem.name}.{extension}")


def write_csv(path: Path, columns: Mapping[str, Sequence]) -> Path:
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"figure data columns differ in length: "
                         f"{ {k: len(v) for k, v in arrays.items()} }")
    with replaced(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(arrays)
        writer.writerows(zip(*(v.tolist() for v in arrays.values())))
    return path
