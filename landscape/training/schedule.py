"""The adaptive flood level: b changes during training with the validation accuracy.

The heuristic of a reproduction study of the paper (B. Kim, Seoul National University of Science
and Technology, slides "Improvements - Question 2"): once the training error is zero, raise b by
alpha when the validation accuracy has improved by more than lambda since b last changed, lower it
by alpha when it has fallen by more than lambda, and clip it to [0, b_max]. The study's pseudo-code leaves details open; the rule here is
exact. With b_e the level used while training epoch e (1-based), train_acc_e and x_e = val_acc_e
measured after epoch e (on the labels trained with), and x' the reference accuracy:

    b_1 = b0 (the run's --flood, default 0); x' = 0; inactive.
    after epoch e:
      active once 1 - train_acc_e = 0 at some epoch <= e (and from then on, whatever the error)
      if active and x_e > x' + lambda:  x' = x_e; b_{e+1} = min(b_e + alpha, b_max)
      elif active and x_e < x' - lambda: x' = x_e; b_{e+1} = max(b_e - alpha, 0)
      else:                              b_{e+1} = b_e

Where we chose:
- "Training error reaches zero" is zero error on the training labels as trained with (the noisy
  ones under label noise, i.e. memorization, as in the paper's title), measured on the whole
  training set after the epoch. The rule starts at that epoch and stays on: flooding lifts the
  training error again, which must not switch it off.
- "Since the last change": x' is the validation accuracy at the last epoch where the rule fired
  (raised or lowered b, even if clipping left b where it was), 0 before the first time, as the
  study's `x' <- 0` says; so the first active epoch always raises b by alpha.
- "By more than lambda" is strict on both sides (the study raises on x >= x' + lambda, which with
  lambda = 0 would raise b every epoch the accuracy stays put). Accuracies are counts over n in
  float32, so differences within EPS count as equal: with lambda = 0.01 on 100 validation points a
  change of one point is not enough and two are.
- A run that never reaches zero training error trains at b0 throughout.

The state after epoch e is a pure function of b0 and the sequences train_acc_1..e, val_acc_1..e,
which the run file stores, so a resumed run replays it (`replay`) and continues exactly. The level
of each epoch is stored as the metric `flood_level`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from landscape.config import ObjectiveConfig

EPS = 1e-6  # accuracies equal up to float32 rounding of count / n (n up to ~10^5) compare equal


@dataclass(frozen=True)
class AdaptiveRule:
    step: float          # alpha
    threshold: float     # lambda
    max_level: float     # b_max

    @classmethod
    def of(cls, objective: ObjectiveConfig) -> AdaptiveRule | None:
        """The rule of a (resolved) objective; None when its b is fixed."""
        if objective.schedule != "adaptive":
            return None
        return cls(objective.schedule_step, objective.schedule_threshold, objective.schedule_max)


@dataclass(frozen=True)
class LevelState:
    level: float             # b for the next epoch
    reference: float = 0.0   # x': validation accuracy when the rule last fired
    active: bool = False     # the training error has been zero


def update(state: LevelState, rule: AdaptiveRule, *, train_acc: float,
           val_acc: float) -> LevelState:
    """The state after an epoch that ended with these accuracies (the rule in the module doc)."""
    active = state.active or train_acc >= 1.0 - EPS
    if active and val_acc > state.reference + rule.threshold + EPS:
        return LevelState(_tidy(min(state.level + rule.step, rule.max_level)), val_acc, True)
    if active and val_acc < state.reference - rule.threshold - EPS:
        return LevelState(_tidy(max(state.level - rule.step, 0.0)), val_acc, True)
    return LevelState(state.level, state.reference, active)


def _tidy(level: float) -> float:
    """0.30000000000000004 -> 0.3: sums of steps keep the levels readable in metrics and names."""
    return round(level, 12)


def replay(start: float, rule: AdaptiveRule, train_acc: Sequence[float],
           val_acc: Sequence[float]) -> list[LevelState]:
    """The states after epochs 1..E from the accuracies measured after them ([E] each)."""
    states, state = [], LevelState(start)
    for train, val in zip(train_acc, val_acc, strict=True):
        state = update(state, rule, train_acc=float(train), val_acc=float(val))
        states.append(state)
    return states


def levels(start: float, rule: AdaptiveRule, train_acc: Sequence[float],
           val_acc: Sequence[float]) -> np.ndarray:
    """b_1..b_{E+1}: the level of each epoch, and of the next one, given epochs 1..E."""
    return np.array([start] + [s.level for s in replay(start, rule, train_acc, val_acc)])


def resume_state(objective: ObjectiveConfig, metrics: Mapping[str, np.ndarray]
                 ) -> LevelState | None:
    """The state of a run continued after its last committed epoch (metrics rows 0..e); None when
    b is fixed."""
    rule = AdaptiveRule.of(objective)
    if rule is None:
        return None
    states = replay(objective.flood, rule, metrics["train_acc"][1:], metrics["val_acc"][1:])
    return states[-1] if states else LevelState(objective.flood)
