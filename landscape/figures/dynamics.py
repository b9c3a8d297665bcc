"""The edge-of-stability figure (issue 25, item 3): the top Hessian eigenvalue per tracked epoch
against the optimizer's threshold (dashed; 2 / lr for plain SGD, Cohen et al., ICLR 2021), plain
runs (b = 0) in the paper's red, flooded ones in blues and greens; for Adam a second panel with the
preconditioned sharpness, which Cohen et al. (2022) compare with Adam's threshold (38 / lr at
beta1 = 0.9), the threshold drawn there. One row per setting. Drawn from the arrays
analysis/dynamics.py reads out of run files.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.figures.style import FORMATS, PALETTE, PLAIN, figure, log_axis, save_figure

SERIES = ("top_eigenvalue", "preconditioned_sharpness", "threshold")
TITLES = {"top_eigenvalue": "top Hessian eigenvalue",
          "preconditioned_sharpness": "preconditioned sharpness (Adam)"}
# flooded levels in order (b = 0 is PLAIN); beyond these they repeat
FLOOD_COLOURS = tuple(PALETTE[c] for c in ("blue", "green", "purple", "orange", "sky"))


@dataclass(frozen=True)
class Trace:
    """One run's tracked epochs: name (SERIES) -> [T] values, NaN where not recorded."""

    setting: str
    optimizer: str
    edge: str            # the threshold's formula, e.g. "2 / lr"
    flood: float
    flooded: bool
    seed: int
    epochs: np.ndarray   # [T]
    values: dict[str, np.ndarray]


def plot_dynamics(traces: Sequence[Trace], out_stem: str | Path,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """A row per setting: the top eigenvalue (with the threshold for SGD) and, where a setting
    trains with Adam, its preconditioned sharpness with the threshold. Writes OUT_STEM.<format>
    and OUT_STEM.csv (long format: one row per run and tracked epoch, every SERIES column)."""
    settings = list(dict.fromkeys(t.setting for t in traces))
    adam = any(t.optimizer == "adam" for t in traces)
    cols = 2 if adam else 1
    fig, axes = figure(columns=cols, rows=len(settings), cols=cols,
                       height=2.2 * len(settings) + 0.4)
    levels = sorted({t.flood for t in traces if t.flooded})
    csv: dict[str, list] = {k: [] for k in ("setting", "optimizer", "flood", "seed", "epoch",
                                            *SERIES)}
    for row, setting in enumerate(settings):
        mine = [t for t in traces if t.setting == setting]
        panels = ["top_eigenvalue"] + (["preconditioned_sharpness"] if mine[0].optimizer
                                       == "adam" else [])
        named: set[float] = set()
        for t in mine:
            colour = (FLOOD_COLOURS[levels.index(t.flood) % len(FLOOD_COLOURS)] if t.flooded
                      else PLAIN)
            label = (None if t.flood in named else
                     f"b = {t.flood:g}" + ("" if t.flooded else " (plain)"))
            named.add(t.flood)
            for col, name in enumerate(panels):
                axes[row, col].plot(t.epochs, t.values[name], color=colour, lw=0.9, marker=".",
                                    ms=2, label=label)
            for key, value in (("setting", [setting] * len(t.epochs)),
                               ("optimizer", [t.optimizer] * len(t.epochs)),
                               ("flood", np.full(len(t.epochs), t.flood)),
                               ("seed", np.full(len(t.epochs), t.seed)), ("epoch", t.epochs),
                               *((name, t.values[name]) for name in SERIES)):
                csv[key].extend(value)
        # the threshold against the quantity that equilibrates at it: H's for SGD, P^-1 H's
        # for Adam; it follows the learning rate's schedule
        edge_ax = axes[row, len(panels) - 1]
        first = max(mine, key=lambda t: len(t.epochs))
        edge_ax.plot(first.epochs, first.values["threshold"], "k--", lw=0.8,
                     label=f"threshold {first.edge}")
        for col, name in enumerate(panels):
            ax = axes[row, col]
            ax.set_title("\n".join(textwrap.wrap(setting, 60)), fontsize=6)
            ax.set_xlabel("epoch")
            ax.set_ylabel(TITLES[name])
            # the threshold often lies decades above the sharpness (until it rises to it)
            shown = np.concatenate([line.get_ydata() for line in ax.get_lines()])
            if (shown[np.isfinite(shown)] > 0).all():
                log_axis(ax.yaxis)
        edge_ax.legend(loc="best")
        for col in range(len(panels), cols):  # an SGD setting beside Adam ones
            axes[row, col].set_axis_off()
    return save_figure(fig, out_stem, csv, formats=formats)
