"""The figure of a connection result (analysis/connect.py): loss and error (1 - accuracy) against
t on the linear path between two models and on the curve fitted between them, train solid and
test dashed, the barrier heights in the caption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from landscape.figures.style import FORMATS, PALETTE, figure, save_figure
from landscape.results import CONNECT, read_result

PATHS = {"linear": PALETTE["vermillion"], "curve": PALETTE["blue"]}
SPLIT_STYLE = {"train": "-", "test": "--"}


def plot_connect(result_path: str | Path, out_stem: str | Path,
                 formats: Sequence[str] = FORMATS) -> list[Path]:
    """Two panels (loss, error) against t from a connect result file; writes OUT_STEM.<format>
    and OUT_STEM.csv (the plotted numbers, long format with "path" and "split" columns)."""
    attrs, arrays = read_result(result_path, CONNECT)
    splits = json.loads(attrs["splits"])
    t = arrays["t"]
    fig, axes = figure(columns=2, cols=2)
    csv: dict[str, list] = {k: [] for k in ("path", "split", "t", "loss", "error")}
    caption = []
    for path, colour in PATHS.items():
        if f"{path}/{splits[0]}_loss" not in arrays:
            continue
        name = "linear" if path == "linear" else str(attrs["curve"])
        for split in splits:
            loss, error = arrays[f"{path}/{split}_loss"], 1 - arrays[f"{path}/{split}_acc"]
            for ax, values in zip(axes[0], (loss, error)):
                ax.plot(t, values, SPLIT_STYLE.get(split, ":"), color=colour,
                        label=f"{name}, {split}")
            csv["path"] += [name] * len(t)
            csv["split"] += [split] * len(t)
            csv["t"] += t.tolist()
            csv["loss"] += loss.tolist()
            csv["error"] += error.tolist()
        caption.append(f"{name} barrier: {attrs[f'{path}_{splits[0]}_loss_barrier']:.3g} "
                       f"({splits[0]} loss), {attrs[f'{path}_{splits[0]}_error_barrier']:.3g} "
                       "(error)")
    for ax, what in zip(axes[0], ("loss", "error")):
        ax.set_xlabel("t")
        ax.set_ylabel(what)
        ax.set_xlim(0, 1)
    axes[0, 0].legend(loc="best")
    fig.suptitle(f"t = 0: {attrs['label_a']}; t = 1: {attrs['label_b']}\n" + "; ".join(caption),
                 fontsize=6)
    return save_figure(fig, out_stem, csv, formats=formats)


def barrier_lines(result_path: str | Path) -> list[str]:
    """The barrier heights of a connect result, one line per path, for the command's report."""
    attrs, _ = read_result(result_path, CONNECT)
    splits = json.loads(attrs["splits"])
    lines = []
    for path in PATHS:
        if f"{path}_{splits[0]}_loss_barrier" in attrs:
            name = "linear path" if path == "linear" else f"{attrs['curve']} curve"
            lines.append(f"{name} barrier: " + "; ".join(
                f"{split} loss {float(attrs[f'{path}_{split}_loss_barrier']):.4g}, error "
                f"{float(attrs[f'{path}_{split}_error_barrier']):.4g}" for split in splits))
    return lines
