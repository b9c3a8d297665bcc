"""The models a flatness slice evaluates (flatness.py): the paper's three from run files (for a
run with b > 0 its first-below-flood snapshot and its last epoch, for b = 0 its last epoch), or a
user's checkpoints (usercheckpoints.py), each with what identifies it in its result file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from landscape.analysis.loading import (
    dataset_for,
    model_for,
    result_names,
    split_sources,
    state_at,
)
from landscape.config import ModelConfig
from landscape.errors import BadInput
from landscape.flooding import Loss
from landscape.measures.sources import Source
from landscape.runs.store import Run


@dataclass(frozen=True)
class Fig5Model:
    """One model of Fig. 5: a run's first-below-flood snapshot or its last epoch."""

    run: Run
    which: str  # "snapshot" | "last"

    @property
    def role(self) -> str:
        """snapshot (dotted blue), flooded (solid blue) or plain (solid vermillion) in Fig. 5."""
        if self.which == "snapshot":
            return "snapshot"
        return "flooded" if self.run.config.objective.floods else "plain"


def fig5_models(runs: Sequence[Run]) -> list[Fig5Model]:
    """The paper's models from runs: b > 0 gives the snapshot and the last epoch, b = 0 the last;
    an adaptive run from b = 0 gives its snapshot where b rose far enough for one to be taken."""
    def models(run: Run) -> tuple[str, ...]:
        o = run.config.objective
        snapshot = o.flood > 0 or (o.takes_snapshot and run.snapshot() is not None)
        return ("snapshot", "last") if snapshot else ("last",)

    return [Fig5Model(run, which) for run in runs for which in models(run)]


@dataclass
class SlicedModel:
    """One model to slice, from a run or a user's checkpoint file: what identifies it in its
    result file (`attrs`), and what evaluating it takes."""

    name: str                       # file stem: OUT/<name>.slice.h5
    attrs: dict                     # identity; compared with an existing file's (but `ignored`)
    template: nn.Module
    state: dict[str, torch.Tensor]
    sources: dict[str, Source]
    loss: Loss
    model_config: ModelConfig | None = None  # ours: the stacking rule knows it
    ignored: tuple[str, ...] = ()   # attrs that may differ (where the run file lives now)
    trajectory: Sequence[Callable[[], dict[str, torch.Tensor]]] | None = None  # its saved
    trajectory_epochs: Sequence[int] = ()   # states up to it, for pca directions, and their epochs


def run_models(runs: Sequence[Run], *, device: torch.device, snapshots: bool = True,
               report: Callable[[str], None] | None = None) -> list[SlicedModel]:
    """The paper's models of `runs` (fig5_models; without snapshots, the last epochs only),
    each last epoch with its run's saved epochs as its trajectory. A flooded run whose loss never
    fell below b has no snapshot: it is left out and `report`ed (default: a warning), the others
    are sliced; bad input (an unfinished run...) before any work, and when nothing is left."""
    out = []
    names = dict(zip(runs, result_names(runs)))  # runs named alike: told apart by their paths
    for point in fig5_models(runs):
        if point.which == "snapshot" and not snapshots:
            continue
        run = point.run
        data = dataset_for(run, device=device)
        try:
            state = state_at(run, point.which, device=device)
        except BadInput as missing:
            if point.which != "snapshot":
                raise
            (report or _warn)(f"{missing}; its snapshot is left out")
            continue
        snap = run.snapshot() if point.which == "snapshot" else None
        attrs = {"run": str(run.path.resolve()), "run_name": names[run],
                 "run_digest": run.config.digest(), "which": point.which,
                 "role": point.role, "flood": run.config.objective.flood,
                 "objective": run.config.objective.label,
                 "epoch": snap.epoch if snap else run.epochs_done,
                 "step": snap.step if snap else -1, "dtype": run.config.dtype,
                 "model_mode": "eval", "train_points": len(data.train),
                 "test_points": len(data.test)}
        origin = names[run].partition("@")[2]
        if origin:  # the legend tells apart runs that the flood level and epoch would not
            attrs["origin"] = origin
        saved = list(run.saved_epochs) if point.which == "last" else None
        out.append(SlicedModel(f"{names[run]}.{point.which}", attrs,
                         model_for(run, data, device=device), state, split_sources(data),
                         run.config.objective.loss, run.config.model, ("run", "run_name"),
                         None if saved is None else
                         [lambda e=e: run.state_dict(e, device) for e in saved], saved or ()))
    if not out:
        raise BadInput("none of the runs has a model to slice")
    return out


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)
