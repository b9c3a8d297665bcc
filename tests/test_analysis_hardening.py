"""The analysis commands under odd input: the per-epoch figures' --skip-epochs (figures too), edited
or damaged result files, sizes that cannot fit in memory, and diverged runs."""

import matplotlib.figure
import pytest
import torch

from analysis_runs import train_pair
from conftest import landscape_cli
from flood_sweeps import read_figure_data
from landscape.analysis.gradnorm import gradnorm, plot_gradnorm
from landscape.analysis.options import SharpnessOptions
from landscape.analysis.sharpness import sharpness
from landscape.analysis.sharpness_plot import plot_sharpness

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory)


@pytest.fixture(scope="module")
def per_epoch(pair, tmp_path_factory):
    """gradnorm and sharpness result files of the pair's every epoch (0 to 10)."""
    folder = tmp_path_factory.mktemp("per_epoch")
    options = SharpnessOptions(iterations=3, probes=2, draws=1)
    return (gradnorm(pair, folder / "gradnorm.h5", device=CPU, progress=False),
            sharpness(pair, folder / "sharpness.h5", options, device=CPU, progress=False))


def _one_line_error(result, code=2):
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.fixture
def titles(monkeypatch):
    """The figures' titles, as they are drawn."""
    drawn = []
    suptitle = matplotlib.figure.Figure.suptitle

    def record(self, t, **kwargs):
        drawn.append(t)
        return suptitle(self, t, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", record)
    return drawn


def _epochs(csv_path):
    """The epochs a per-epoch figure drew, less the early-stopping markers (drawn even among the
    epochs left out)."""
    table = read_figure_data(csv_path)
    return sorted({e for e, stop in zip(table["epoch"], table["early_stopping"])
                   if str(stop) != "True"})


@pytest.mark.parametrize("plot", [plot_gradnorm, plot_sharpness])
def test_skip_epochs_0_draws_epoch_0_and_says_nothing_is_left_out(per_epoch, plot, titles,
                                                                  tmp_path):
    result = per_epoch[plot is plot_sharpness]
    written = plot(result, tmp_path / "all", ("png",), skip_epochs=0)
    assert _epochs(written[-1]) == list(range(11))
    assert "left out" not in titles[-1] and "every epoch" in titles[-1]
    written = plot(result, tmp_path / "later", ("png",), skip_epochs=3)
    assert _epochs(written[-1]) == list(range(4, 11))
    assert "epochs <= 3 left out" in titles[-1]


@pytest.mark.parametrize("section,stem", [("5.2", "fig4_gradients"), ("sharpness", "sharpness")])
def test_figures_takes_skip_epochs(per_epoch, section, stem, tmp_path):
    result = per_epoch[section == "sharpness"]
    for skip, first in ((0, 0), (3, 4)):
        out = tmp_path / str(skip)
        landscape_cli("figures", result, "--section", section, "--out", out, "--format", "png",
                      "--skip-epochs", skip, check=True)
        assert _epochs(out / f"{stem}.csv") == list(range(first, 11))
    assert "x>=0" in _one_line_error(landscape_cli("figures", result, "--section", section,
                                                   "--skip-epochs", -1, "--out", tmp_path))
