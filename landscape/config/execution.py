"""How a run executes: the device, where data lives, stacking, progress and the GPU speed switches.

Recorded in the run file beside the config but not part of what determines the result, so two runs
that differ only here have the same config digest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Literal

from landscape.errors import require, require_choice

AMP_MODES = ("off", "bf16")


@dataclass(frozen=True)
class Execution:
    """How a run executes; recorded in the run file but not part of what determines the result."""

    device: str = "auto"           # auto | cpu | cuda | cuda:N
    data_dir: str | None = None    # where the image data sets' files are
    ensemble: str = "auto"         # sweeps: "auto", "off" or the number of models stacked per chunk
    progress: bool = True
    download: bool = False         # fetch an image set's missing official files into data_dir
    # GPU speed switches (docs/guides/training.md: Speed): they change the arithmetic, not the recipe.
    # "bf16": forward passes under bfloat16 autocast (losses, weights and optimizer stay float32);
    # compile: the training forward goes through torch.compile, compiled once per trained group.
    amp: Literal["off", "bf16"] = "off"
    compile: bool = False
    # Seconds between resume states (model and optimizer) written to run files; metrics are
    # committed every epoch or every few seconds (recording.py), the state also at saved and
    # final epochs.
    # 0: every epoch, metrics too.
    checkpoint_every: float = 60.0
    # A finished run's file keeps its last resume state (two slots of model and optimizer, 29 of
    # 43 MB for MNIST's MLP), which continuing it to more epochs needs; False removes them then.
    keep_resume_state: bool = True

    def __post_init__(self) -> None:
        require_choice(self.amp, AMP_MODES, "--amp mode")
        require(math.isfinite(self.checkpoint_every) and self.checkpoint_every >= 0,
                f"--checkpoint-every must be a finite number of seconds >= 0, got "
                f"{self.checkpoint_every}")
        check_device(self.device)
        requested_chunk(self.ensemble)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def check_device(spec: str) -> None:
    """The form of a device name, checked without torch (whether it exists is the device's
    business: device.resolve_device)."""
    require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec) is not None,
            f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def requested_chunk(ensemble: str) -> int | None:
    """`--ensemble`: None for auto, 1 for off, else the number of members stacked per chunk."""
    if ensemble in ("auto", "off"):
        return None if ensemble == "auto" else 1
    try:
        size = int(ensemble)
    except ValueError:
        size = 0
    require(size >= 1, f"--ensemble must be auto, off or a positive number, got {ensemble!r}")
    return size
