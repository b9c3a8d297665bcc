"""Landscape measures recorded while the trainer trains (issue 25, item 1; config/tracking.py).

After every N-th epoch each member of a group is measured by the functions that
`landscape.Tracker` calls (measures/tracking.measure), at that member's weights in the stacked
ensemble and on its fixed subset of its own training rows (the noisy labels it trains on): a
tracked value is what the measure gives afterwards on that epoch's saved weights. Beside them:
- `threshold`, the optimizer's edge of stability at the member's learning rate: 2 / lr for plain
  SGD (Cohen et al., ICLR 2021, "Gradient descent on neural networks typically occurs at the
  edge of stability"), (2 + 2 beta) / lr with heavy-ball momentum, 38 / lr for Adam;
- for Adam, `preconditioned_sharpness`, lambda_1(P^-1 H) of its last step (Cohen et al. 2022,
  "Adaptive gradient methods at the edge of stability"), NaN at epoch 0 (no step yet);
- `track_seconds`, the wall time the group's measurements took, against `seconds` (training
  and evaluation, which it excludes): the cost of tracking, bounded by N and the subset.
Every value is a function of the weights and the optimizer state after the epoch, so that a
resumed run recomputes the same numbers; training itself is untouched (the measures use their
own seeded generators and evaluate in eval mode).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from landscape.config import RunConfig
from landscape.flooding import check_loss
from landscape.measures.stack import Ensemble
from landscape.measures.tracking import (
    PRECONDITIONED,
    adam,
    checked_options,
    fixed_rows,
    measure,
    preconditioned_sharpness,
    step_inverse,
    threshold,
)
from landscape.training.members import MemberData

if TYPE_CHECKING:  # the loop imports this module
    from landscape.training.loop import Epoch

THRESHOLD = "threshold"
SECONDS = "track_seconds"


def metric_names(config: RunConfig) -> tuple[str, ...]:
    """The metrics tracking adds to a run file (none when the config tracks nothing)."""
    if config.track is None:
        return ()
    return (*config.track.measures, THRESHOLD,
            *((PRECONDITIONED,) if config.optim.name == "adam" else ()), SECONDS)


def tracked_rows(config: RunConfig, split) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): the rows of a training split (a data.Split) that `config` tracks on."""
    assert config.track is not None and config.track.samples is not None
    return fixed_rows(split, config.track.samples, config.track.seed)


class Tracking:
    """The tracked metrics of a group after an epoch: name -> [K] float64, NaN where not due."""

    def __init__(self, config: RunConfig, data: MemberData) -> None:
        assert config.track is not None
        self.track, self.names = config.track, metric_names(config)
        self.loss = check_loss(config.objective.loss)  # the measures' name of the run's loss
        self.options = checked_options(self.track.measures, {}, self.track.seed)
        subsets = [tracked_rows(config, draw.train) for draw in data.draws]  # one per draw
        self.data = [subsets[int(w)] for w in data.which]

    def __call__(self, epoch: int, ensemble: Ensemble, optimizer: torch.optim.Optimizer,
                 ratio: torch.Tensor, members: torch.Tensor) -> dict[str, torch.Tensor]:
        """Measure the `members` [K] (bool) after `epoch` if it is due (diverged ones are NaN).
        ratio [K]: each member's learning rate over the optimizer's (optimizer.MemberOptimizer)."""
        out = {name: torch.full((ensemble.size,), math.nan, dtype=torch.float64)
               for name in self.names}
        if not self.track.due(epoch):
            return out
        tic = time.perf_counter()
        out[THRESHOLD][:] = threshold(optimizer) / ratio  # each is inversely proportional to lr
        inverse = None
        if adam(optimizer) and optimizer.state:  # [K, ...] P^-1 of every member's last step
            group = optimizer.param_groups[0]
            inverse = {n: step_inverse(group, optimizer.state[p])
                       for n, p in ensemble.params.items()}
        for k in members.nonzero().flatten().tolist():
            state = ensemble.member_state(k)
            values = measure(ensemble.template, self.data[k], self.track.measures, self.options,
                             loss=self.loss, params=state)
            if inverse is not None:
                values[PRECONDITIONED] = preconditioned_sharpness(
                    ensemble.template, self.data[k], {n: v[k] for n, v in inverse.items()},
                    loss=self.loss, params=state, **self.options[PRECONDITIONED])
            for name, value in values.items():
                out[name][k] = value
        out[SECONDS][:] = time.perf_counter() - tic
        return out


class Cost:
    """Tracking's share of the time so far, for the progress line: `watch` the epochs on their
    way to the writer, `text()` says it (the first member's times: a group shares them)."""

    def __init__(self) -> None:
        self.tracking = self.training = 0.0

    def watch(self, epochs: Iterable[Epoch]) -> Iterator[Epoch]:
        for epoch in epochs:
            m = epoch.metrics
            if SECONDS in m:
                self.tracking += float(torch.nan_to_num(m[SECONDS][0]))
                self.training += float(torch.nan_to_num(m["seconds"][0]))
            yield epoch

    def text(self) -> str:
        return (f"tracking {self.tracking / self.training:.0%} of the training time"
                if self.training > 0 else "")
