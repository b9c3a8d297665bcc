"""Memorization (paper Sec. 5.1, Fig. 3): the numbers come from the runs and the chosen b from
selection.py, the figure's data file holds what is plotted."""

import numpy as np
import pytest
from flood_sweeps import FLOODS, read_figure_data, train_sweep

from landscape.analysis.memorization import memorization
from landscape.analysis.selection import early_stopping_epoch, select_runs
from landscape.errors import BadInput
from landscape.figures.memorization import STOPPING, mean_std, plot_memorization, read_memorization
from landscape.runs.folders import open_runs


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memorization")
    return [train_sweep(folder, noise=0.1), train_sweep(folder, noise=0.0)]


def test_accuracies_and_chosen_b_are_those_of_the_runs_and_the_selection(sweeps, tmp_path):
    path = memorization(sweeps, tmp_path / "m.h5")
    labels, settings = read_memorization(path)
    assert labels == ["two_gaussians, noise 0.1", "two_gaussians, noise 0"]
    for sweep, s in zip(sweeps, settings):
        np.testing.assert_array_equal(s["flood"], FLOODS)
        for rule in STOPPING:
            (selected,) = select_runs([sweep], early_stopping=rule == "early")
            np.testing.assert_array_equal(s[f"{rule}/chosen_b"],
                                          [t.chosen_b for t in selected.trials])
        for run in open_runs([sweep]):
            where = (FLOODS.index(run.config.objective.flood), run.config.seed)
            m = run.metrics()
            stop = early_stopping_epoch(m["val_acc"])
            assert s["last/epoch"][where] == run.epochs and s["early/epoch"][where] == stop
            for metric in ("train_acc", "train_acc_clean", "train_acc_flipped"):
                np.testing.assert_equal(s[f"last/{metric}"][where], m[metric][-1])
                np.testing.assert_equal(s[f"early/{metric}"][where], m[metric][stop])
    assert np.isnan(settings[1]["last/train_acc_flipped"]).all()  # no noise, nothing flipped


def test_figure_data_file_holds_the_plotted_numbers(sweeps, tmp_path):
    path = memorization(sweeps, tmp_path / "m.h5")
    written = plot_memorization(path, tmp_path / "fig", formats=("png",))
    assert [p.suffix for p in written] == [".png", ".csv"]
    table = read_figure_data(written[-1])
    labels, settings = read_memorization(path)
    for label, s in zip(labels, settings):
        for rule in STOPPING:
            mine = ((table["setting"] == label) & (table["stopping"] == rule)
                    & (table["metric"] == "train_acc"))
            curve, chosen = mine & (table["kind"] == "mean"), mine & (table["kind"] == "chosen")
            mean, std = mean_std(s[f"{rule}/train_acc"])
            np.testing.assert_allclose(table["flood"][curve], s["flood"])
            np.testing.assert_allclose(table["value"][curve], mean)
            np.testing.assert_allclose(table["std"][curve], std)
            np.testing.assert_allclose(table["flood"][chosen], s[f"{rule}/chosen_b"])
    # flipped-point accuracy is plotted for the noisy setting only
    assert set(table["setting"][table["metric"] == "train_acc_flipped"].tolist()) == {labels[0]}


def test_mean_std_over_trials_matches_numpy_and_skips_missing_runs():
    values = np.array([[0.5, 0.7, np.nan], [1.0, np.nan, np.nan]])
    mean, std = mean_std(values)
    np.testing.assert_allclose(mean, [0.6, 1.0])
    np.testing.assert_allclose(std[0], np.std([0.5, 0.7], ddof=1))
    assert np.isnan(std[1])


def test_one_flood_level_is_not_a_sweep(sweeps, tmp_path):
    baseline = [p for p in sorted(sweeps[0].glob("*flood0-*.h5"))]
    with pytest.raises(BadInput, match="only one flood level"):
        memorization(baseline, tmp_path / "m.h5")


def test_an_identical_result_is_reused_and_another_refused_unless_overwrite(sweeps, tmp_path):
    """The analyses' one overwrite rule (loading.reuse_result), through the command."""
    from conftest import landscape_cli

    out = tmp_path / "out"
    first = landscape_cli("memorization", sweeps[0], "--out", out, "--format", "png", check=True)
    result = out / "memorization.h5"
    before = result.stat().st_mtime_ns
    again = landscape_cli("memorization", sweeps[0], "--out", out, "--format", "png", check=True)
    assert result.stat().st_mtime_ns == before and again.stdout == first.stdout
    other = landscape_cli("memorization", sweeps[1], "--out", out, "--format", "png")
    assert other.returncode == 2 and "--overwrite" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and result.stat().st_mtime_ns == before
    landscape_cli("memorization", sweeps[1], "--out", out, "--format", "png", "--overwrite",
                  check=True)
    assert read_memorization(result)[0] == read_memorization(memorization([sweeps[1]],
                                                                          tmp_path / "b.h5"))[0]
