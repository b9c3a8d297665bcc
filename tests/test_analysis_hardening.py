"""The analysis commands under odd input: the per-epoch figures' --skip-epochs (figures too), edited
or damaged result files, sizes that cannot fit in memory, and diverged runs."""

import shutil
import warnings

import h5py
import matplotlib.figure
import numpy as np
import pytest
import torch
from analysis_runs import train_pair
from conftest import TINY_TRAIN_ARGS, landscape_cli, one_line_error
from flood_sweeps import read_figure_data

from landscape.analysis.flatness import flatness
from landscape.analysis.gradnorm import gradnorm
from landscape.analysis.memorization import memorization
from landscape.analysis.mse import theorem1_check
from landscape.analysis.sharpness import sharpness
from landscape.errors import BadInput
from landscape.figures.gradnorm import plot_gradnorm
from landscape.figures.sharpness import plot_sharpness
from landscape.measures.options import MseOptions, SharpnessOptions, SliceOptions
from landscape.runs.store import Run

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


@pytest.mark.parametrize("plot", [plot_gradnorm, plot_sharpness])
def test_runs_default_to_fig4s_first_10_epochs_left_out_and_mark_early_stopping(
        per_epoch, plot, titles, tmp_path):
    result = per_epoch[plot is plot_sharpness]
    with pytest.raises(BadInput, match="after the first 10"):  # epochs 0 to 10: none after
        plot(result, tmp_path / "default", ("png",))
    plot(result, tmp_path / "all", ("png",), skip_epochs=0)
    assert "large black: early-stopping epoch" in titles[-1]


@pytest.mark.parametrize("section,stem", [("5.2", "fig4_gradients"), ("sharpness", "sharpness")])
def test_figures_takes_skip_epochs(per_epoch, section, stem, tmp_path):
    result = per_epoch[section == "sharpness"]
    for skip, first in ((0, 0), (3, 4)):
        out = tmp_path / str(skip)
        landscape_cli("figures", result, "--section", section, "--out", out, "--format", "png",
                      "--skip-epochs", skip, check=True)
        assert _epochs(out / f"{stem}.csv") == list(range(first, 11))
    assert "x>=0" in one_line_error(landscape_cli("figures", result, "--section", section,
                                                   "--skip-epochs", -1, "--out", tmp_path))


def _edit(path, key, how):
    """A result file with one dataset deleted, reshaped or (for coordinates) shifted."""
    with h5py.File(path, "r+") as f:
        value = f[key][()]
        del f[key]
        if how == "reshaped":
            f[key] = value.reshape(-1)[:-1] if value.size > 1 else np.zeros(3)
        elif how == "shifted":
            f[key] = value + 0.01


def test_flatness_refuses_to_resume_a_file_whose_grid_was_edited(pair, tmp_path):
    args = ("flatness", *[run.path for run in pair], "--points", "3", "--out", tmp_path,
            "--format", "png", "-q")
    landscape_cli(*args, check=True)
    (first, *_) = sorted(tmp_path.glob("*.slice.h5"))
    _edit(first, "xcoordinates", "shifted")
    assert "xcoordinates are not the grid asked" in one_line_error(landscape_cli(*args))
    landscape_cli(*args, "--overwrite", check=True)
    surfaces = tmp_path / "surfaces"
    landscape_cli(*args[:-5], "--out", surfaces, "--2d", "--format", "png", "-q", check=True)
    (first, *_) = sorted(surfaces.glob("*.surface.h5"))
    _edit(first, "ycoordinates", "reshaped")
    assert "ycoordinates are not the grid asked" in one_line_error(
        landscape_cli(*args[:-5], "--out", surfaces, "--2d", "--format", "png", "-q"))


@pytest.fixture(scope="module")
def every_result(pair, per_epoch, tmp_path_factory):
    """A result file of each kind `figures` draws."""
    folder = tmp_path_factory.mktemp("every_result")
    flatness(pair, SliceOptions(points=3), folder / "slices", device=CPU, progress=False)
    theorem1_check(pair[0], MseOptions(samples=20, pool_size=200), folder / "mse.h5",
                   device=CPU, progress=False)
    memorization([pair[0].path.parent], folder / "memorization.h5")
    return {"5.2": per_epoch[0], "sharpness": per_epoch[1], "5.4": folder / "mse.h5",
            "5.1": folder / "memorization.h5",
            "5.3": sorted((folder / "slices").glob("*.h5"))[0]}


@pytest.mark.parametrize("how", ["missing", "reshaped"])
@pytest.mark.parametrize("section", ["5.1", "5.2", "5.3", "5.4", "sharpness"])
def test_figures_name_a_damaged_result_file_in_one_line(every_result, section, how, tmp_path):
    with h5py.File(every_result[section]) as f:
        keys = []
        f.visititems(lambda k, v: keys.append(k) if isinstance(v, h5py.Dataset)
                     and not k.startswith("direction/") else None)  # no figure reads those
    for key in keys[::max(1, len(keys) // 4)]:  # about 4 per kind: each call draws a figure
        damaged = tmp_path / key.replace("/", "_") / every_result[section].name
        damaged.parent.mkdir()
        shutil.copy(every_result[section], damaged)
        _edit(damaged, key, how)
        result = landscape_cli("figures", damaged, "--section", section, "--skip-epochs", 0,
                               "--out", damaged.parent / "figures", "--format", "png")
        if result.returncode == 0:  # a dataset the figure does not need
            continue
        # flatness figures draw a folder of slices
        assert str(damaged.parent if section == "5.3" else damaged) in one_line_error(result), key


@pytest.mark.parametrize("args", [["flatness", "--2d", "--points", "1000000"],
                                  ["mse", "--pool-size", "1000000000000"],
                                  ["mse", "--samples", "1000000000000"]])
def test_sizes_that_cannot_fit_are_refused_with_the_estimate_before_any_work(pair, args,
                                                                             tmp_path):
    out = tmp_path / "out"
    error = one_line_error(landscape_cli(args[0], pair[0].path, *args[1:], "--out", out, "-q"))
    assert "GiB of memory" in error and args[-1][:4] in error.replace(",", "")
    assert not out.exists()


def test_a_long_mse_says_how_far_it_is(pair, tmp_path, monkeypatch):
    import landscape.progress

    monkeypatch.setattr(landscape.progress, "LOG_EVERY", 0.0)  # a line per chunk, not a minute
    result = landscape_cli("mse", pair[0].path, "--samples", 50_000, "--pool-size", 1000,
                           "--out", tmp_path, "--format", "png", check=True)
    assert "pool MSEs: 1/3" in result.stderr and "train MSEs: 2/3" in result.stderr


@pytest.fixture(scope="module")
def with_diverged(tmp_path_factory):
    """A folder of two runs with test losses every epoch, one of them diverged."""
    folder = tmp_path_factory.mktemp("diverged")
    tiny = ("train", *TINY_TRAIN_ARGS, "--epochs", "4", "--eval-test", "every", "--out", folder)
    landscape_cli(*tiny, "--name", "fine", check=True)
    assert landscape_cli(*tiny, "--name", "bad", "--optimizer", "sgd", "--lr", "1e6").returncode == 1
    bad = Run(folder / "bad.h5")
    assert bad.status == "diverged"
    return folder, bad


def test_figures_leave_a_diverged_run_out_of_the_learning_curves(with_diverged, tmp_path):
    folder, bad = with_diverged
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a mean over NaN
        done = landscape_cli("figures", folder, "--section", "2", "--out", tmp_path, "--format",
                             "png", check=True)
    (note,) = [line for line in done.stdout.splitlines() if "diverged in" in line]
    assert f"{bad.path} diverged in epoch {bad.epochs_done + 1}" in note
    assert set(read_figure_data(tmp_path / "fig2_learning_curves.csv")["trials"]) == {1}
    only = landscape_cli("figures", bad.path, "--section", "2", "--out", tmp_path / "only")
    assert f"diverged in epoch {bad.epochs_done + 1}" in one_line_error(only)


def test_mse_refuses_a_diverged_run_naming_its_epoch(with_diverged, tmp_path):
    _, bad = with_diverged
    result = landscape_cli("mse", bad.path, "--out", tmp_path / "res")
    assert f"diverged in epoch {bad.epochs_done + 1}" in one_line_error(result)
    assert not (tmp_path / "res").exists()


def test_a_damaged_result_file_shows_its_failure_under_landscape_debug(every_result, tmp_path,
                                                                       monkeypatch):
    """The errors that name a damaged file could also be a plotting bug: LANDSCAPE_DEBUG=1 lets
    them through as the internal error they are, which the CLI shows with its traceback."""
    damaged = tmp_path / every_result["5.4"].name
    shutil.copy(every_result["5.4"], damaged)
    with h5py.File(damaged) as f:
        key = next(k for k in f if isinstance(f[k], h5py.Dataset))
    _edit(damaged, key, "missing")
    args = ("figures", damaged, "--section", "5.4", "--out", tmp_path / "figures", "--format",
            "png")
    assert "LANDSCAPE_DEBUG=1" in one_line_error(landscape_cli(*args))
    monkeypatch.setenv("LANDSCAPE_DEBUG", "1")
    result = landscape_cli(*args)
    assert result.returncode != 0 and "internal error" in result.stderr
