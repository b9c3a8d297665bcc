"""Fig. 2: learning curves (training and test loss) per flood level, drawn from the arrays
analysis/curves.py averages out of run files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.config.floodgrid import BASELINE
from landscape.figures.style import FORMATS, figure, save_figure

LOSSES = ("train_loss", "test_loss")
TITLES = {"train_loss": "training loss", "test_loss": "test loss"}


@dataclass(frozen=True)
class Curves:
    """One setting's curves over flood levels `flood`: loss name -> [B, epochs + 1] mean over
    trials, and its sample standard deviation (NaN where fewer than two trials measured it)."""

    label: str
    flood: np.ndarray   # [B]
    trials: np.ndarray  # [B] runs averaged per flood level
    loss: dict[str, np.ndarray]
    spread: dict[str, np.ndarray]


def _trials_text(settings: Sequence[Curves]) -> str:
    counts = sorted({int(n) for s in settings for n in s.trials})
    if counts == [1]:
        return "one trial per flood level"
    many = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean over {many} trials per flood level; band: one sample standard deviation"


FEW = 3  # up to this many flood levels besides b = 0 are named in the legend, not a colour bar


def plot_curves(settings: Sequence[Curves], out_stem: str | Path,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """The learning-curve figure of `settings` (analysis.curves.learning_curves): a row per
    setting, training loss left, test loss right. Writes OUT_STEM.<format> and OUT_STEM.csv (the
    mean, its standard deviation and the number of trials per flood level and epoch)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    flooded = np.unique(np.concatenate([s.flood[s.flood != BASELINE] for s in settings]))
    named = len(flooded) <= FEW
    shade = Normalize(*((flooded.min(), flooded.max()) if len(flooded) > 1 else (0.0, 1.0)))
    cmap = colormaps["viridis"]
    colour = ({b: c for b, c in zip(flooded, ("#0072B2", "#009E73", "#CC79A7"))} if named
              else {b: cmap(shade(b)) for b in flooded})
    fig, axes = figure(columns=2, rows=len(settings), cols=2, height=2.1 * len(settings) + 0.5,
                       sharex="row")
    csv: dict[str, list] = {k: [] for k in ("setting", "flood", "epoch", "trials", *LOSSES,
                                            *(f"{k}_std" for k in LOSSES))}
    for row, s in enumerate(settings):
        epochs = np.arange(s.loss["test_loss"].shape[1])
        for i, b in enumerate(s.flood):
            style = (dict(color="black", ls=":", lw=1.4, zorder=3, label="b = 0") if b == BASELINE
                     else dict(color=colour[b], lw=0.9, label=f"b = {b:g}" if named else None))
            for col, k in enumerate(LOSSES):
                ax = axes[row, col]
                ax.plot(epochs, s.loss[k][i], **style)
                ax.fill_between(epochs, s.loss[k][i] - s.spread[k][i],
                                s.loss[k][i] + s.spread[k][i], color=style["color"], alpha=0.2,
                                lw=0)  # NaN spread (one trial): no band
                if k == "train_loss" and named and b != BASELINE:
                    ax.axhline(b, color=colour[b], ls="--", lw=0.5)  # the level it floats at
            for key, value in (("setting", [s.label] * len(epochs)), ("flood", np.full(len(epochs), b)),
                               ("epoch", epochs), ("trials", np.full(len(epochs), s.trials[i])),
                               *((k, s.loss[k][i]) for k in LOSSES),
                               *((f"{k}_std", s.spread[k][i]) for k in LOSSES)):
                csv[key].extend(value)
        for col, k in enumerate(LOSSES):
            ax = axes[row, col]
            ax.set_title(f"{s.label}: {TITLES[k]}" if len(settings) > 1 else TITLES[k])
            ax.set_xlabel("epoch" if row == len(settings) - 1 else "")
            ax.set_ylabel(TITLES[k])
            later = np.nanmax(s.loss[k][:, 1:]) if s.loss[k].shape[1] > 1 else np.nan
            if np.isfinite(later) and np.nanmax(s.loss[k][:, 0]) > 1.5 * later:
                # The untrained model's loss (e.g. ln 10 on MNIST) would flatten every later
                # difference between flood levels into one line at the bottom: cut it off.
                ax.set_ylim(0, 1.05 * later)
        if BASELINE in s.flood or named:
            axes[row, 0].legend(loc="upper right")
    if not named:
        fig.colorbar(ScalarMappable(shade, cmap), ax=axes, label="flood level b", shrink=0.8)
    fig.suptitle(_trials_text(settings), fontsize=7)
    return save_figure(fig, out_stem, csv, formats=formats)
