"""landscape.Tracker as a PyTorch Lightning callback (issue 25, item 2): the landscape measures of
a LightningModule every N optimizer steps, on a fixed subset of its training data.

    from landscape.integrations.lightning import LandscapeTracker

    tracker = LandscapeTracker((x, y), measures=("top_eigenvalue",), every=50, samples=512,
                               csv="sharpness.csv")
    lightning.Trainer(callbacks=[tracker], max_epochs=20).fit(module, loader)
    tracker.history                      # {"step": [...], "top_eigenvalue": [...], ...}

The values are Tracker's (measures/tracking.py): the measure functions on the module's weights
after the optimizer step, with the edge-of-stability threshold and, for Adam, the preconditioned
sharpness (Cohen et al. 2022) beside them. They are logged as "landscape/<name>" (on_step), so
any Lightning logger records them. Needs the `lightning` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import lightning as L
except ImportError as err:  # the optional extra
    raise ImportError("landscape.integrations.lightning needs PyTorch Lightning: pip install "
                      "'flooding-landscape[lightning]'") from err

from landscape.measures.tracking import Tracker


class LandscapeTracker(L.Callback):
    """A Tracker made on the LightningModule when fitting starts; `step()` after every optimizer
    step (a step that accumulates gradients over several batches counts once, as
    trainer.global_step does). Arguments are Tracker's; `optimizer`: pass the module's one
    optimizer to Tracker.step (threshold, preconditioned sharpness), unless False or the
    module has several; `log`: log the values; `csv`, `hdf5`: write the history there when
    fitting ends. `.tracker` and `.history` after fitting starts."""

    def __init__(self, data: Any, *,
                 measures: str | Sequence[str] = ("top_eigenvalue", "trace",
                                                  "gradient_amplitude"),
                 every: int = 1, samples: int | None = None, loss: Any = "cross_entropy",
                 seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
                 optimizer: bool = True, log: bool = True, csv: str | Path | None = None,
                 hdf5: str | Path | None = None) -> None:
        super().__init__()
        self.data, self.optimizer, self.log, self.csv, self.hdf5 = data, optimizer, log, csv, hdf5
        self.settings = dict(measures=measures, every=every, samples=samples, loss=loss,
                             seed=seed, options=options)
        self.tracker: Tracker | None = None
        self._step = 0  # trainer.global_step at the last call

    @property
    def history(self) -> dict[str, list]:
        return {} if self.tracker is None else self.tracker.history

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.tracker = Tracker(pl_module, self.data, **self.settings)
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.tracker is None or trainer.global_step == self._step:
            return  # no optimizer step since the last call (gradient accumulation)
        self._step = trainer.global_step
        optimizers = trainer.optimizers
        values = self.tracker.step(optimizers[0] if self.optimizer and len(optimizers) == 1
                                   else None)
        if values and self.log:
            pl_module.log_dict({f"landscape/{k}": float(v) for k, v in values.items()},
                               on_step=True, on_epoch=False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.tracker is not None and self.csv is not None:
            self.tracker.to_csv(self.csv)
        if self.tracker is not None and self.hdf5 is not None:
            self.tracker.to_hdf5(self.hdf5)
