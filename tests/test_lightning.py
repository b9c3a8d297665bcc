"""The Lightning callback (landscape.integrations.lightning): Tracker's values at the optimizer
steps it picks, the same numbers as the measures on the module's weights, logged under
"landscape/"; gradient accumulation counts optimizer steps. Skipped without PyTorch Lightning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning")

import landscape  # noqa: E402
from landscape.integrations.lightning import LandscapeTracker  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3)


def _data(n=32):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def _fit(callback, **trainer_options):
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    module = Tiny()
    trainer = L.Trainer(callbacks=[callback], accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_options)
    trainer.fit(module, loader)
    return module, trainer


def test_the_callback_tracks_what_the_measures_give(tmp_path):
    callback = LandscapeTracker(_data(), measures=("top_eigenvalue", "gradient_amplitude"),
                                every=3, samples=16, seed=2, csv=tmp_path / "t.csv")
    module, trainer = _fit(callback, max_steps=6)
    assert callback.history["step"] == [3, 6]
    assert callback.history["threshold"] == [2 / 0.3] * 2  # plain SGD: 2 / lr
    last = {name: callback.history[name][-1] for name in ("top_eigenvalue",
                                                          "gradient_amplitude")}
    assert last == {"top_eigenvalue": landscape.hessian_top_eigenvalue(
                        module, callback.tracker.data, seed=2),
                    "gradient_amplitude": landscape.gradient_amplitude(
                        module, callback.tracker.data)}
    assert float(trainer.callback_metrics["landscape/top_eigenvalue"]) == pytest.approx(
        last["top_eigenvalue"])
    assert (tmp_path / "t.csv").read_text().startswith("step,")


def test_accumulated_batches_count_as_one_step():
    callback = LandscapeTracker(_data(), measures="gradient_amplitude", every=1, samples=8)
    _fit(callback, max_steps=2, accumulate_grad_batches=2)
    assert callback.history["step"] == [1, 2]
