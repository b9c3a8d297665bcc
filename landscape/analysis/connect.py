"""Are two models in one basin (issue 25)? The loss along the linear path between them and its
barrier (Frankle et al. 2020), and along a Bezier curve or polygonal chain fitted between them
(Garipov et al. 2018), from two run files (an epoch of each) or two of a user's checkpoint files.

measures/connectivity.py computes; this module picks the two models and their data, refuses what
cannot be connected (two architectures, one model twice), and writes one result file that a rerun
with the same inputs and parameters reuses (results.reuse_result); figures/connect.py draws it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from landscape.analysis.loading import (
    check_same_architecture,
    dataset_for,
    model_for,
    split_sources,
    state_at,
)
from landscape.analysis.usermodel import UserCheckpoints
from landscape.errors import BadInput
from landscape.measures.connectivity import LossPath, fit_curve, interpolate
from landscape.measures.options import ConnectOptions
from landscape.memory import models_at_once
from landscape.results import CONNECT, reuse_result, runs_identity, write_result
from landscape.runs.store import Run

KIND = CONNECT


def connect_runs(runs: Sequence[Run], out: str | Path, options: ConnectOptions = ConnectOptions(),
                 *, epochs: tuple[int | str, int | str] = ("last", "last"),
                 device: torch.device, overwrite: bool = False, progress: bool = True,
                 report: Callable[[str], None] | None = None) -> Path:
    """The connection of two run files' models (`epochs`: an epoch number, "last" or "snapshot"
    of each; one run file and two epochs connect two points of one training), evaluated on the
    first run's training and test splits, written to `out`. `report` hears when the second run
    trained on other data (another data seed): it is evaluated on the first one's."""
    runs = list(runs)
    if len(runs) == 1:
        runs = runs * 2
    if len(runs) != 2:
        raise BadInput(f"connect takes two models; {len(runs)} run files were given")
    check_same_architecture(runs)
    a, b = (state_at(run, e, device=device) for run, e in zip(runs, epochs))  # checks the epochs
    chosen = [run.epochs_done if e == "last" else e if e == "snapshot" else int(e)
              for run, e in zip(runs, epochs)]
    if runs[0].path.resolve() == runs[1].path.resolve() and chosen[0] == chosen[1]:
        raise BadInput(f"{runs[0].path} at epoch {chosen[0]} given twice: connect takes two "
                       "different models (give another run, or --epoch-a/--epoch-b)")
    labels = [f"{run.path.stem}@{e}" for run, e in zip(runs, chosen)]
    _refuse_identical(a, b, labels)
    identity = {**runs_identity(runs), "epochs": [str(e) for e in chosen], **options.attrs()}
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    if runs[0].config.data != runs[1].config.data and report is not None:
        report(f"{runs[1].path} trained on other data than {runs[0].path}; both models are "
               "evaluated on the latter's")
    dataset = dataset_for(runs[0], device=device)
    template = model_for(runs[0], dataset, device=device)
    stack = models_at_once(runs[0].config.model,
                           sum(p.numel() for p in template.parameters()), device)
    attrs = {"a": str(runs[0].path.resolve()), "b": str(runs[1].path.resolve()),
             "epoch_a": str(chosen[0]), "epoch_b": str(chosen[1]),
             "data_from": str(runs[0].path.resolve()), "loss": runs[0].config.objective.loss,
             "same_data": runs[0].config.data == runs[1].config.data}
    return _connect(template, a, b, split_sources(dataset), runs[0].config.objective.loss,
                    options, out, labels=labels, attrs=attrs, identity=identity, stack=stack,
                    device=device, progress=progress)


def connect_checkpoints(ck: UserCheckpoints, out: str | Path,
                        options: ConnectOptions = ConnectOptions(), *, device: torch.device,
                        overwrite: bool = False, progress: bool = True) -> Path:
    """The connection of a user's two checkpoint files (ck.files: a at t = 0, b at t = 1 in
    their natural order) on every split of the user's data."""
    if len(ck.files) != 2:
        raise BadInput(f"connect takes two models; --weights names {len(ck.files)} file"
                       f"{'s' if len(ck.files) != 1 else ' (one file given twice?)'}")
    a, b = ck.state(0), ck.state(1)
    _refuse_identical(a, b, [f.name for f in ck.files])
    identity = {**ck.identity(), **options.attrs()}
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    attrs = {"a": str(ck.files[0].resolve()), "b": str(ck.files[1].resolve()),
             "epoch_a": str(ck.epochs[0]), "epoch_b": str(ck.epochs[1]),
             "data_from": ck.specs["data"], "loss": ck.specs["loss"], "same_data": True}
    return _connect(ck.model, a, b, ck.data, ck.loss, options, out,
                    labels=[f.name for f in ck.files], attrs=attrs, identity=identity, stack=1,
                    device=device, progress=progress)


def _connect(template: nn.Module, a: dict, b: dict, data: Any, loss: Any,
             options: ConnectOptions, out: str | Path, *, labels: list[str], attrs: dict,
             identity: dict, stack: int, device: torch.device, progress: bool) -> Path:
    line = interpolate(template, a, b, data, points=options.points, bn=options.bn, loss=loss,
                       device=device, stack=stack)
    arrays: dict[str, np.ndarray] = {"t": line.t, **_path_arrays("linear", line)}
    summary = {f"linear_{k}_barrier": v for k, v in line.barriers.items()}
    if options.curve is not None:
        curve = fit_curve(template, a, b, data, kind=options.curve, epochs=options.curve_epochs,
                          lr=options.lr, momentum=options.momentum,
                          weight_decay=options.weight_decay, batch_size=options.batch_size,
                          seed=options.seed, points=options.points, bn=options.bn, loss=loss,
                          device=device, stack=stack, progress=progress)
        arrays.update(_path_arrays("curve", curve.path))
        arrays["curve/objective"] = curve.objective
        names = [n for n, _ in template.named_parameters()]  # the bend: re-evaluate or extend it
        arrays.update({f"curve/bend/{n}": curve.bend[n].cpu().numpy() for n in names})
        summary.update({f"curve_{k}_barrier": v for k, v in curve.path.barriers.items()})
    return write_result(out, kind=KIND, attrs={
        **options.attrs(), **attrs, "label_a": labels[0], "label_b": labels[1],
        "splits": [k.removesuffix("_loss") for k in line.metrics if k.endswith("_loss")],
        "model_mode": "eval", **summary, "identity": identity}, arrays=arrays)


def _refuse_identical(a: dict, b: dict, labels: list[str]) -> None:
    if all(torch.equal(a[k], b[k]) for k in a):
        raise BadInput(f"{labels[0]} and {labels[1]} hold identical weights: connect takes two "
                       "different models")


def _path_arrays(prefix: str, path: LossPath) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v for k, v in path.metrics.items()}
