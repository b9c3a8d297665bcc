"""Performance and gradients (paper Sec. 5.2, Fig. 4): the gradient amplitude of the full training
and test loss at every saved epoch, against test loss and accuracy.

The amplitude is the l2 norm of the filter-normalized gradient (filternorm.py; docs/measurements.md) of
the mean surrogate loss over a whole split, the model in eval mode (BatchNorm with the checkpoint's
running statistics), accumulated over row chunks at bounded memory (evaluation.mean_loss).
Several saved epochs are stacked as one Ensemble where that pays (GPUs; evaluation.models_at_once).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..ensemble import Ensemble
from ..errors import BadInput
from ..flooding import Loss
from ..progress import progress_bar
from ..sources import Source
from ..store import Run
from ..evaluation import mean_loss, models_at_once, rows_of
from .filternorm import Normalization, amplitude
from .loading import (check_same_architecture, dataset_for, model_for, read_result,
                      reuse_result, runs_identity, split_sources, text, write_result)
from .options import SKIP_EPOCHS, drawn_epochs, skipped
from .plotting import FORMATS, figure, save_figure
from .selection import early_stopping_epoch

KIND = "gradnorm"
SPLITS = ("train", "test")


def amplitudes(template: nn.Module, states: Sequence[Mapping[str, torch.Tensor]],
               sources: Mapping[str, Source], loss: Loss, normalization: Normalization, *,
               splits: Sequence[str], members: int = 1, progress: bool = False,
               label: str = "") -> dict[str, np.ndarray]:
    """Per state dict: `<name>_loss` and `<name>_acc` on every source, and `<name>_grad`, the
    gradient amplitude of its mean loss, for the sources named in `splits` (NaN for the others).
    `members` states are stacked as one Ensemble. Returns 1-D arrays over the states."""
    first = next(iter(states[0].values()))
    rows = {name: rows_of(template, source, members, first.device, gradients=True)
            for name, source in sources.items()}
    out = {f"{name}_{m}": np.full(len(states), np.nan) for name in sources
           for m in ("grad", "loss", "acc")}
    starts = range(0, len(states), members)
    with progress_bar(starts, enabled=progress, label=label) as bar:
        for start in bar:
            chunk = [dict(s) for s in states[start:start + members]]
            ensemble = Ensemble(template, chunk, device=first.device, dtype=first.dtype)
            theta = {n: p.detach() for n, p in ensemble.params.items()}
            where = slice(start, start + len(chunk))
            for name, source in sources.items():
                split_loss, split_acc, grads = mean_loss(ensemble, source, loss, rows[name],
                                                         gradients=name in splits)
                if grads is not None:
                    out[f"{name}_grad"][where] = amplitude(grads, theta, normalization,
                                                           batch=1).double().cpu().numpy()
                out[f"{name}_loss"][where] = split_loss.numpy()
                out[f"{name}_acc"][where] = split_acc.numpy()
    return out


def run_amplitudes(run: Run, *, device: torch.device, normalization: Normalization,
                   splits: Sequence[str] = SPLITS, epochs: Sequence[int] | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Per saved epoch of one run: `<split>_grad` (NaN for splits not asked), train and test loss
    and accuracy. Returns 1-D arrays over the epochs, with "epoch"."""
    epochs = list(run.saved_epochs if epochs is None else epochs)
    missing = [e for e in epochs if e not in run.saved_epochs]
    if missing:
        raise BadInput(f"{run.path}: epoch(s) {', '.join(map(str, missing))} were not saved (saved: "
                       f"{_ranges(run.saved_epochs)}); train with --save-every/--save-epochs/--save all")
    dataset = dataset_for(run, device=device)
    template = model_for(run, dataset, device=device)
    members = models_at_once(run.config.model,
                             sum(p.numel() for p in template.parameters()), device)
    # states are read one chunk at a time: a long run's saved epochs need not all fit in memory
    out: dict[str, list] = {}
    with progress_bar(range(0, len(epochs), members), enabled=progress, label=run.name) as bar:
        for start in bar:
            states = [run.state_dict(e, device) for e in epochs[start:start + members]]
            part = amplitudes(template, states, split_sources(dataset), run.config.objective.loss,
                              normalization, splits=splits, members=members)
            for k, v in part.items():
                out.setdefault(k, []).append(v)
    values = {k: np.concatenate(v) for k, v in out.items()}
    values["epoch"] = np.asarray(epochs, dtype=np.int64)
    return values


def gradnorm(runs: Sequence[Run], out: str | Path, *, device: torch.device,
             normalization: Normalization = Normalization(), splits: Sequence[str] = SPLITS,
             epochs: Sequence[int] | None = None, progress: bool = True,
             overwrite: bool = False) -> Path:
    """Gradient amplitudes of the saved epochs (all, or `epochs` and, where saved, each run's
    early-stopping epoch, so that its marker is exact) of every run, written to `out` (an HDF5
    result: long-format rows over (run, epoch), per-run arrays, the parameters as attributes).
    A result of the same runs and parameters at `out` is reused; another is refused unless
    `overwrite` (loading.reuse_result).

    Under torchrun each rank computes a share of the (run, epoch) pairs; rank 0 gathers them into
    the file (README: Scale-out)."""
    runs = list(runs)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise BadInput(f"unknown split(s) {bad or list(splits)}; use train and/or test")
    check_same_architecture(runs)
    for run in runs:
        if len(run.saved_epochs) == 0:
            raise BadInput(f"{run.path}: no saved epochs yet")
    identity = {**runs_identity(runs), **normalization.attrs(), "splits": list(splits),
                "epochs": None if epochs is None else sorted(epochs)}
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    world = distributed.join()
    stopping = [early_stopping_epoch(run.metric("val_acc")) for run in runs]
    wanted = [run.saved_epochs if epochs is None else sorted(
        set(epochs) | ({stop} if stop in run.saved_epochs else set()))
        for run, stop in zip(runs, stopping)]
    # this rank's (run, epoch) pairs: contiguous, so mostly whole runs (each run's data loads once)
    mine = distributed.share([(i, e) for i, w in enumerate(wanted) for e in w], world)
    with distributed.exchange(world) as computed:
        device = distributed.rank_device(device, world)
        computed.value = [(i, run_amplitudes(runs[i], device=device, normalization=normalization,
                                             splits=splits, epochs=[e for j, e in mine if j == i],
                                             progress=progress and world.rank == 0))
                          for i in dict.fromkeys(i for i, _ in mine)]
    rows: list[dict[str, np.ndarray]] = []
    marked = []
    for index, stop in enumerate(stopping):
        parts = [part for shared in computed.values for i, part in shared if i == index]
        values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # in rank order
        values["run"] = np.full(len(values["epoch"]), index, dtype=np.int64)
        rows.append(values)
        marked.append(_nearest(values["epoch"].tolist(), stop))
    arrays = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    arrays.update(
        run_name=np.array([run.name for run in runs]),
        run_path=np.array([str(run.path) for run in runs]),
        flood=np.array([run.config.objective.flood for run in runs]),
        flooded=np.array([run.config.objective.floods for run in runs]),
        objective=np.array([run.config.objective.label for run in runs]),
        early_stopping_epoch=np.array(stopping, dtype=np.int64),
        marked_epoch=np.array(marked, dtype=np.int64))
    with distributed.exchange(world):  # rank 0 writes; no rank returns before the file exists
        if world.rank == 0:
            attrs = {**normalization.attrs(), "splits": list(splits),
                     "runs": [str(run.path) for run in runs],
                     "config_digests": [run.config.digest() for run in runs],
                     "epochs": [[int(e) for e in r["epoch"]] for r in rows],
                     "split_sizes": [{s: len(dataset_for(run, device=device).split(s))
                                      for s in SPLITS} for run in runs],
                     "model_mode": "eval", "identity": identity}
            write_result(out, kind=KIND, attrs=attrs, arrays=arrays)
    return Path(out)


def refuse_empty_figure(epochs: Sequence[int], skip_epochs: int) -> None:
    """Bad input before any work when no epoch to compute lies after the ones the figure drops."""
    if skip_epochs < 0:
        raise BadInput(f"--skip-epochs must be >= 0, got {skip_epochs}")
    if epochs and not drawn_epochs(np.asarray(epochs), skip_epochs).any():
        raise BadInput(f"no epoch after the first {skip_epochs} to plot (the last is "
                       f"{max(epochs)}); lower --skip-epochs to draw the early ones")


def _ranges(epochs: Sequence[int]) -> str:
    """A short listing of many epochs: "0, 10, 20, ..., 500"."""
    shown = list(map(str, epochs))
    return ", ".join(shown if len(shown) <= 8 else shown[:3] + ["..."] + shown[-2:]) or "none"


def _nearest(computed: Sequence[int], epoch: int) -> int:
    """The computed epoch closest to `epoch` (the earlier one on ties): where its marker can go."""
    return min(computed, key=lambda e: (abs(e - epoch), e))


def plot_gradnorm(result_path: str | Path, out_stem: str | Path,
                  formats: Sequence[str] = FORMATS, *, skip_epochs: int = SKIP_EPOCHS) -> list[Path]:
    """Fig. 4 of the paper from a gradnorm result file: test loss (top) and test accuracy (bottom)
    against the gradient amplitude of the training loss (left) and of the test loss (right).
    "o" = with flooding, "+" = without; colour = epoch (viridis); epochs <= skip_epochs dropped
    (none with 0: options.drawn_epochs);
    large black markers at each run's early-stopping epoch (the computed epoch nearest to it),
    drawn even when it falls in the dropped epochs (small data sets peak early). The amplitudes
    span orders of magnitude (a memorizing model's training gradient goes to ~0): log x axes.
    Writes OUT_STEM.<format> and OUT_STEM.csv (the plotted points)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .plotting import epoch_markers, log_axis, marker_legend

    attrs, a = read_result(result_path, KIND)
    computed = json.loads(attrs["splits"])
    keep = drawn_epochs(a["epoch"], skip_epochs)
    if not keep.any():
        raise BadInput(f"{result_path}: no saved epoch after the first {skip_epochs} to plot; "
                       "lower --skip-epochs to draw the early ones")
    cmap = colormaps["viridis"]
    shade = Normalize(vmin=float(a["epoch"][keep].min()), vmax=float(a["epoch"][keep].max()))
    fig, axes = figure(columns=2, rows=2, cols=2, height=4.6)
    names = [text(n) for n in a["run_name"]]
    # Files from before the `flooded` array: only a fixed b > 0 floods.
    flooded = a.get("flooded", a["flood"] > 0).astype(bool)
    for r, with_flooding in enumerate(flooded):
        mine = keep & (a["run"] == r)
        stop = (a["run"] == r) & (a["epoch"] == a["marked_epoch"][r])
        for (row, metric), (col, grad) in itertools.product(enumerate(("test_loss", "test_acc")),
                                                            enumerate(("train_grad", "test_grad"))):
            ax = axes[row, col]
            epoch_markers(ax, a[grad][mine], a[metric][mine], cmap(shade(a["epoch"][mine])),
                          a[grad][stop], a[metric][stop], flooded=with_flooding)
            if grad.split("_")[0] in computed:
                log_axis(ax.xaxis)
            ax.set_xlabel(f"gradient amplitude, {grad.split('_')[0]} loss")
            ax.set_ylabel(metric.replace("_", " ").replace("acc", "accuracy"))
    for col, split in enumerate(SPLITS):
        if split not in computed:
            for ax in axes[:, col]:
                ax.text(0.5, 0.5, "not computed", transform=ax.transAxes, ha="center")
    # legend in grey: the markers' colours mean epochs, not runs
    labels = [f"b = {b:g}" for b in a["flood"]]
    if "objective" in a:  # adaptive from b = 0 and AdaFlood are not "b = 0"
        labels = [text(o) if f and b == 0 else label for o, f, b, label
                  in zip(a["objective"], flooded, a["flood"], labels)]
    if "label" in a:  # a user's checkpoints: no flood level is known
        labels = [text(label) for label in a["label"]]
    marker_legend(axes[0, 0], labels, flooded)
    fig.colorbar(ScalarMappable(shade, cmap), ax=axes, label="epoch", shrink=0.6)
    fig.suptitle(f"{attrs['normalization']}-normalized gradients (bias/BN {attrs['biasbn']}), "
                 f"{skipped(skip_epochs)}\nlarge black: early-stopping epoch",
                 fontsize=7)
    plotted = np.flatnonzero(keep | (a["epoch"] == a["marked_epoch"][a["run"]]))
    csv = {"run": [names[r] for r in a["run"][plotted]], "flood": a["flood"][a["run"][plotted]],
           **{k: a[k][plotted] for k in ("epoch", "train_grad", "test_grad", "test_loss",
                                         "test_acc")},
           "early_stopping": a["epoch"][plotted] == a["marked_epoch"][a["run"][plotted]]}
    return save_figure(fig, out_stem, csv, formats=formats)
