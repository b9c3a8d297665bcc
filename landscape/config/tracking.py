"""What the trainer tracks while it trains (issue 25, item 1): landscape measures recorded in the
run file at every N-th epoch, on a fixed seeded subset of the training set. Part of RunConfig,
because it adds numbers to the run file (training itself is untouched by it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from landscape.errors import require, require_choice

# The names of measures/tracking.MEASURES (this layer cannot import it; a test keeps them equal).
TRACKABLE = ("top_eigenvalue", "trace", "gradient_amplitude", "worst_case_sharpness")
# Rows measured where --track-samples is not given (a smaller training set: all its rows). Cohen
# et al. (ICLR 2021) measure the sharpness on a fixed subset of the training set; the cost of a
# measurement grows with the rows, and 1000 keep it a few training epochs of an MNIST MLP.
SAMPLES = 1000


@dataclass(frozen=True)
class TrackConfig:
    """Measures (names of TRACKABLE) recorded after epochs 0, every, 2 every, ... on `samples`
    training rows: torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    [:samples] of each run's own draw of the data (measures/tracking.fixed_rows), the same rows
    at every epoch; `seed` is also every measure's seed. samples None: RunConfig.resolved() sets
    min(SAMPLES, the training rows)."""

    measures: tuple[str, ...]
    every: int = 1
    samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        # one name, or a list (from JSON): the tuple that compares and hashes as stored
        names = (self.measures,) if isinstance(self.measures, str) else tuple(self.measures)
        object.__setattr__(self, "measures", names)
        for name in names:
            require_choice(name, TRACKABLE, "measure to track")
        require(bool(names) and len(set(names)) == len(names),
                f"--track needs one or more distinct measures, got {list(names)}")
        require(isinstance(self.every, int) and self.every >= 1,
                f"--track-every must be an integer >= 1, got {self.every}")
        require(self.samples is None or (isinstance(self.samples, int) and self.samples >= 1),
                f"--track-samples must be an integer >= 1, got {self.samples}")
        require(isinstance(self.seed, int) and self.seed >= 0,
                f"the tracking seed must be an integer >= 0, got {self.seed}")

    def resolved(self, n_train: int | None) -> TrackConfig:
        """With `samples` explicit; `n_train` None (an image set, split when loaded): SAMPLES."""
        if self.samples is not None:
            return self
        return dataclasses.replace(self, samples=SAMPLES if n_train is None
                                   else min(SAMPLES, n_train))

    def due(self, epoch: int) -> bool:
        """Whether the measures are taken after `epoch`: every N-th from 0. The last epoch is
        not added, so that a run continued to more epochs tracks where a longer one would."""
        return epoch % self.every == 0
