"""Theorem 1's figure: the MSE of the flooded and plain risk estimates against b.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.figures.style import FLOODED, FORMATS, PALETTE, PLAIN, figure, save_figure
from landscape.results import MSE, PANELS, read_result


def plot_mse(result_path: str | Path, out_stem: str | Path,
             formats: Sequence[str] = FORMATS) -> list[Path]:
    """MSE(R^) and MSE(R~) against b, R marked: left with R^ on fresh samples, right with R^ on g's
    own training set, where the band between the training loss and R is shaded. Writes
    OUT_STEM.<format> and OUT_STEM.csv (the plotted numbers)."""
    attrs, a = read_check(result_path)
    risk, train_loss, flood = attrs["risk"], attrs["train_loss"], a["flood"]
    fig, axes = figure(columns=2, cols=2, height=2.4)
    hat, tilde = r"$\widehat{R}$", r"$\widetilde{R}$"
    titles = (f"{hat} on fresh samples (n = {attrs['sample_size']})",
              f"{hat} on g's training set (bootstrap, n = {attrs['sample_size']})")
    for ax, name, title in zip(axes[0], PANELS, titles):
        plain = float(a[f"{name}/mse_plain"])
        if name == "train":
            ax.axvspan(min(train_loss, risk), max(train_loss, risk), color=PALETTE["sky"],
                       alpha=0.2, lw=0, label="b between train and test loss")
        ax.plot(flood, a[f"{name}/mse_flooded"], color=FLOODED, label=f"MSE({tilde}), flooded")
        ax.axhline(plain, color=PLAIN, ls="--", label=f"MSE({hat})")
        ax.axvline(risk, color="black", ls=":", lw=1, label="$R$ (pool)")
        ax.set_ylim(0, 2.5 * plain)
        ax.set_xlim(flood.min(), flood.max())
        ax.set_xlabel("flood level b")
        ax.set_title(title + ("" if attrs["claims"][name]["holds"] else " (claim FAILS)"))
    axes[0, 0].set_ylabel("mean squared error")
    for ax in axes[0]:
        ax.legend(loc="upper left")
    csv = {"panel": np.repeat(PANELS, len(flood)), "flood": np.tile(flood, len(PANELS)),
           "mse_flooded": np.concatenate([a[f"{p}/mse_flooded"] for p in PANELS]),
           "mse_plain": np.repeat([float(a[f"{p}/mse_plain"]) for p in PANELS], len(flood)),
           "gain": np.concatenate([a[f"{p}/gain"] for p in PANELS]),
           "below": np.concatenate([a[f"{p}/below"] for p in PANELS]),
           "risk": np.full(len(PANELS) * len(flood), risk),
           "train_loss": np.full(len(PANELS) * len(flood), train_loss)}
    return save_figure(fig, out_stem, csv, formats=formats)


def read_check(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(attrs with "claims" parsed, arrays) of a result file of theorem1_check."""
    attrs, arrays = read_result(path, MSE)
    return {**attrs, "claims": json.loads(attrs["claims"])}, arrays
