"""The training objective of a run: flooding (paper Eq. 1), iFlood or AdaFlood, its level b and,
with the adaptive schedule, how b moves. Part of RunConfig (config/__init__.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from landscape.errors import require, require_choice

ObjectiveKind = Literal["flood", "iflood", "adaflood"]
Schedule = Literal["adaptive"]  # None: b stays fixed
Loss = Literal["logistic", "ce"]
OBJECTIVES: tuple[str, ...] = get_args(ObjectiveKind)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
LOSSES: tuple[str, ...] = get_args(Loss)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Flooding (paper Eq. 1, on the batch mean), iFlood (per sample) or AdaFlood (a level per
    sample, Bae et al. 2023; adaflood.py); b = 0 is the plain loss. With schedule "adaptive", b is
    the starting level and changes during training (schedule.py)."""

    kind: ObjectiveKind = "flood"
    flood: float = 0.0
    loss: Loss | None = None  # None: logistic for binary data sets (paper Sec. 4.1), else softmax CE
    # Added after run-file format 1; None = unused, and left out of the JSON (see RunConfig.to_json).
    schedule: Schedule | None = None       # None: b fixed; "adaptive": schedule.py
    schedule_step: float | None = None     # adaptive: alpha, the change of b
    schedule_threshold: float | None = None  # adaptive: lambda, the validation-accuracy margin
    schedule_max: float | None = None      # adaptive: b is clipped to [0, schedule_max]
    adaflood_gamma: float | None = None    # adaflood: the correction gamma in (0, 1)
    adaflood_folds: int | None = None      # adaflood: folds of the auxiliary models

    def __post_init__(self) -> None:
        require_choice(self.kind, OBJECTIVES, "objective")
        require(math.isfinite(self.flood) and self.flood >= 0,
                f"flood level must be a finite number >= 0, got {self.flood}")
        if self.loss is not None:
            require_choice(self.loss, LOSSES, "loss")
        if self.schedule is not None:
            require_choice(self.schedule, SCHEDULES, "flood schedule")
            require(self.kind != "adaflood", "--flood-schedule adaptive does not apply to adaflood "
                                             "(its levels are per sample and fixed)")
        else:
            require(self.schedule_step is None and self.schedule_threshold is None
                    and self.schedule_max is None,
                    "--flood-step/--flood-threshold/--flood-max need --flood-schedule adaptive")
        for value, what in ((self.schedule_step, "--flood-step"),
                            (self.schedule_threshold, "--flood-threshold"),
                            (self.schedule_max, "--flood-max")):
            require(value is None or (math.isfinite(value) and value >= 0),
                    f"{what} must be a finite number >= 0, got {value}")
        if self.kind == "adaflood":
            require(self.flood == 0, "adaflood sets a level per sample; --flood does not apply")
        else:
            require(self.adaflood_gamma is None and self.adaflood_folds is None,
                    "--adaflood-gamma/--adaflood-folds need --objective adaflood")
        require(self.adaflood_gamma is None or 0 < self.adaflood_gamma < 1,
                f"--adaflood-gamma must be in (0, 1), got {self.adaflood_gamma}")
        require(self.adaflood_folds is None or self.adaflood_folds >= 2,
                f"--adaflood-folds must be at least 2, got {self.adaflood_folds}")

    def resolved(self, loss: str) -> ObjectiveConfig:
        """With the loss and the defaults of the schedule's or AdaFlood's parameters explicit."""
        changes: dict[str, Any] = {"loss": loss}
        if self.schedule == "adaptive":
            for key, default in ADAPTIVE_DEFAULTS.items():
                if getattr(self, key) is None:
                    changes[key] = default
        if self.kind == "adaflood":
            for key, default in ADAFLOOD_DEFAULTS.items():
                if getattr(self, key) is None:
                    changes[key] = default
        return dataclasses.replace(self, **changes)

    @property
    def floods(self) -> bool:
        """Whether training floods at all: a fixed b > 0, the adaptive schedule (even from b = 0)
        or AdaFlood's per-sample levels."""
        return self.flood > 0 or self.schedule is not None or self.kind == "adaflood"

    @property
    def takes_snapshot(self) -> bool:
        """Whether the trainer keeps the model at the first step whose mini-batch loss fell below
        b: with a fixed b > 0, and with the adaptive schedule once it has raised b above 0."""
        return self.flood > 0 or self.schedule is not None

    @property
    def label(self) -> str:
        """The objective in run names: kind and b (the starting b, marked, when adaptive)."""
        if self.kind == "adaflood":
            return f"adaflood-gamma{self.adaflood_gamma or ADAFLOOD_DEFAULTS['adaflood_gamma']:g}"
        return f"{self.kind}{self.flood:g}" + ("-adaptive" if self.schedule else "")


# alpha = 0.01 is one step of the paper's grids; lambda = 0.01 asks for more than one point of
# accuracy on a 100-point validation set; b_max = 0.5 as the reproduction study (and Table 2's grid).
ADAPTIVE_DEFAULTS = {"schedule_step": 0.01, "schedule_threshold": 0.01, "schedule_max": 0.5}
# gamma = 0.5 as Bae et al. (2023) recommend; two folds: each auxiliary model sees half the data.
ADAFLOOD_DEFAULTS = {"adaflood_gamma": 0.5, "adaflood_folds": 2}
