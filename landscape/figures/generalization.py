"""The figures of a generalization result (analysis/generalization.py, `landscape
generalization`): each measure against the generalization gap, and psi per hyperparameter axis
with Psi (Jiang et al. 2020, Eq. 4-5) per measure, from the stored arrays only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.errors import BadInput
from landscape.figures.style import FORMATS, PALETTE, figure, save_figure
from landscape.results import GENERALIZATION, read_result, text

# markers for the values of the axis drawn as the marker (the first varying axis after b)
SHAPES = ("o", "s", "^", "D", "v", "P", "X", "*")
TARGET_LABEL = {"gap": "gap", "test_loss": "test loss"}
WHICH = {"last": "last epoch", "early_stopping": "early-stopping epoch",
         "checkpoint": "the checkpoints"}


def _read(result_path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    attrs, a = read_result(result_path, GENERALIZATION)
    if not a["done"].all():
        raise BadInput(f"{result_path}: {int((~a['done']).sum())} models are not measured yet; "
                       "rerun `landscape generalization` with the same inputs to finish it")
    return attrs, a


def plot_measures(result_path: str | Path, out_stem: str | Path, which: str,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """One panel per measure: the gap (y) against the measure (x) of each model looked at in
    its `which` epoch; colour = b (or the first varying axis), marker = the next varying axis;
    Kendall's tau in each title (of the measure in its expected direction: "reversed" for a
    flatness or a margin, measures/generalization.Entry). A panel whose values are positive and span more than a factor
    20 has a log x axis. Writes OUT_STEM.<format> and OUT_STEM.csv (one row per model)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.ticker import LogLocator, NullFormatter

    attrs, a = _read(result_path)
    names = json.loads(attrs["measure_names"])
    axes = json.loads(attrs["axes"])
    reversed_ = json.loads(attrs.get("reversed", "[]"))
    rows = np.array([text(w) for w in a["which"]]) == which
    if not rows.any():
        raise BadInput(f"{result_path} has no models at the {which} epoch")
    colour_axis = "b" if "b" in axes else axes[0]
    shade = a[f"axis/{colour_axis}"][rows]
    marker_axis = next((x for x in axes if x != colour_axis), None)
    kinds = sorted(set(a[f"axis/{marker_axis}"][rows].tolist())) if marker_axis else [None]
    taus = _statistic(a, which, "gap", "tau")
    cols = min(4, len(names))
    fig, panels = figure(columns=2, rows=math.ceil(len(names) / cols), cols=cols,
                         height=1.7 * math.ceil(len(names) / cols) + 0.4)
    numeric = shade.dtype.kind == "f"
    norm = Normalize(float(np.nanmin(shade)), float(np.nanmax(shade))) if numeric else None
    palette = colormaps["viridis"]
    for ax, name in zip(panels.flat, names):
        x, y = a[f"measure/{name}"][rows], a["gap"][rows]
        for k, kind in enumerate(kinds):
            mine = (np.ones(len(x), bool) if marker_axis is None
                    else a[f"axis/{marker_axis}"][rows] == kind)
            colours = palette(norm(shade[mine])) if numeric else PALETTE["blue"]
            ax.scatter(x[mine], y[mine], c=colours, marker=SHAPES[k % len(SHAPES)], s=9,
                       linewidths=0.4, label=None if kind is None else f"{marker_axis} "
                       + (f"{kind:g}" if isinstance(kind, float) else str(kind)))
        finite = x[np.isfinite(x)]
        if len(finite) and (finite > 0).all() and finite.max() > 20 * finite.min():
            ax.set_xscale("log")  # few major ticks: a panel is an inch wide
            ax.xaxis.set_major_locator(LogLocator(numticks=4))
            ax.xaxis.set_minor_formatter(NullFormatter())
        tau = taus.get(name)
        flipped = " (reversed)" if name in reversed_ else ""
        ax.set_title(name.replace("_", " ") + ("" if tau is None else f"\ntau{flipped} {tau:.2f}"),
                     fontsize=6)
        ax.tick_params(labelsize=5)
    for ax in panels.flat[len(names):]:
        ax.set_visible(False)
    for ax in panels[:, 0]:
        ax.set_ylabel("gap (test - train error)")
    if marker_axis is not None:
        panels.flat[0].legend(fontsize=5, loc="best")
    if numeric:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm, palette), ax=panels, label=colour_axis, shrink=0.3)
    fig.suptitle(f"measures against the generalization gap, {WHICH.get(which, which)} "
                 f"({int(rows.sum())} models)", fontsize=7)
    csv = {"name": [text(n) for n in a["name"][rows]], "epoch": a["epoch"][rows],
           **{f"axis_{x}": a[f"axis/{x}"][rows] for x in [*axes, "seed"]},
           **{k: a[k][rows] for k in ("train_error", "test_error", "gap", "train_loss",
                                      "test_loss")},
           **{n: a[f"measure/{n}"][rows] for n in names}}
    return save_figure(fig, out_stem, csv, formats=formats)


def _statistic(a: dict[str, np.ndarray], which: str, target: str, stat: str) -> dict[str, float]:
    prefix = f"ranking/{which}/{target}"
    if f"{prefix}/measure" not in a:
        return {}
    return {text(m): float(v[0]) for m, v in zip(a[f"{prefix}/measure"], a[f"{prefix}/{stat}"])}


def plot_psi(result_path: str | Path, out_stem: str | Path, which: str, target: str = "gap",
             formats: Sequence[str] = FORMATS) -> list[Path]:
    """psi per axis and Psi per measure (bars, with their bootstrap intervals as error bars),
    measures ordered by Psi as the ranked table, those ranked reversed marked "(rev.)". Writes OUT_STEM.<format> and OUT_STEM.csv
    (measure, statistic, estimate, low, high)."""
    attrs, a = _read(result_path)
    axes = json.loads(attrs["axes"])
    prefix = f"ranking/{which}/{target}"
    if f"{prefix}/measure" not in a:
        raise BadInput(f"{result_path} has no ranking against the {target} at the {which} epoch")
    measures = [text(m) for m in a[f"{prefix}/measure"]]
    psi, total = a[f"{prefix}/psi"], a[f"{prefix}/psi_mean"]  # [M, A, 3], [M, 3]
    order = sorted(range(len(measures)), key=lambda i: (np.isnan(total[i, 0]),
                                                         -np.nan_to_num(total[i, 0])))
    series = {**{f"psi {x}": psi[:, j] for j, x in enumerate(axes)}, "Psi": total}
    colours = [PALETTE[c] for c in ("sky", "orange", "green", "purple", "yellow", "vermillion")]
    fig, panels = figure(columns=2, height=3.4)  # room for the measures' names below
    ax = panels[0, 0]
    width = 0.8 / len(series)
    csv: dict[str, list] = {k: [] for k in ("measure", "statistic", "estimate", "low", "high")}
    for s, (label, values) in enumerate(series.items()):
        v = values[order]
        offsets = np.arange(len(order)) + (s - (len(series) - 1) / 2) * width
        colour = PALETTE["black"] if label == "Psi" else colours[s % len(colours)]
        ax.bar(offsets, v[:, 0], width, color=colour, label=label,
               yerr=np.abs(np.stack([v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]])),
               error_kw={"linewidth": 0.5, "capsize": 1})
        for i, row in zip(order, v):
            csv["measure"].append(measures[i])
            csv["statistic"].append(label)
            csv["estimate"].append(row[0])
            csv["low"].append(row[1])
            csv["high"].append(row[2])
    ax.axhline(0, color=PALETTE["black"], linewidth=0.5)
    reversed_ = json.loads(attrs.get("reversed", "[]"))
    ax.set_xticks(np.arange(len(order)), [measures[i].replace("_", " ")
                                          + (" (rev.)" if measures[i] in reversed_ else "")
                                          for i in order], rotation=60, ha="right", fontsize=5)
    ax.set_ylabel("granulated tau")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=6, ncols=len(series), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"psi per axis and Psi (Jiang et al. 2020) against the "
                 f"{TARGET_LABEL.get(target, target)}, {WHICH.get(which, which)}; error bars: "
                 "bootstrap intervals over seeds", fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)


