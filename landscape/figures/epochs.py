"""Which epochs a per-epoch figure draws (paper Fig. 4 leaves out the first ten).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from landscape.errors import BadInput

SKIP_EPOCHS = 10  # Fig. 4: "We remove the first 10 epochs and plot the rest."


def skip_for(skip_epochs: int | None, *, checkpoints: bool) -> int:
    """The epochs a per-epoch figure leaves out: `skip_epochs` where given, else Fig. 4's first
    SKIP_EPOCHS for runs (the paper's trained 500 epochs) and none for a user's checkpoint files
    (a path of a few files, of which ten epochs may be half)."""
    if skip_epochs is not None:
        return skip_epochs
    return 0 if checkpoints else SKIP_EPOCHS


def of_checkpoints(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether a per-epoch result (gradnorm, sharpness) is of a user's checkpoint files: those
    carry their own labels and no flood level (analysis.usercheckpoints)."""
    return "label" in arrays


def drawn_epochs(epochs: np.ndarray, skip_epochs: int) -> np.ndarray:
    """Which of `epochs` a per-epoch figure (gradnorm, sharpness) draws: those after the first
    `skip_epochs` epochs, the initial weights (epoch 0) left out with them; all with 0."""
    return epochs > skip_epochs if skip_epochs else epochs >= 0


def skipped(skip_epochs: int) -> str:
    """What a figure's title says of the epochs left out."""
    return f"epochs <= {skip_epochs} left out" if skip_epochs else "every epoch"


def refuse_empty_figure(epochs: Sequence[int], skip_epochs: int | None, *,
                        checkpoints: bool = False) -> None:
    """Bad input before any work when no epoch to compute lies after the ones the figure drops
    (skip_for: as asked, else the default for runs or for a user's `checkpoints`)."""
    skip_epochs = skip_for(skip_epochs, checkpoints=checkpoints)
    if skip_epochs < 0:
        raise BadInput(f"--skip-epochs must be >= 0, got {skip_epochs}")
    if epochs and not drawn_epochs(np.asarray(epochs), skip_epochs).any():
        raise BadInput(f"no epoch after the first {skip_epochs} to plot (the last is "
                       f"{max(epochs)}); lower --skip-epochs to draw the early ones")
