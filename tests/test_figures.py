"""Learning curves and `landscape figures`: the plotted numbers are the runs' numbers, every section
is built from stored data through the installed command, and missing inputs get one clear line."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import landscape_cli
from flood_sweeps import FLOODS, read_figure_data, train_sweep

from landscape.analysis.curves import learning_curves, usable
from landscape.analysis.figures import build_figures
from landscape.analysis.flatness import flatness
from landscape.analysis.gradnorm import gradnorm
from landscape.analysis.mse import theorem1_check
from landscape.errors import BadInput
from landscape.figures.curves import plot_curves
from landscape.measures.options import MseOptions, SliceOptions
from landscape.runs.folders import open_runs
from landscape.runs.store import Run
from landscape.training.planner import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return train_sweep(tmp_path_factory.mktemp("figures"), noise=0.1, epochs=14)


@pytest.fixture(scope="module")
def results(sweep, tmp_path_factory):
    """The result files of sections 5.2-5.4, made from the seed-0 runs b = 0 and b = 0.4."""
    folder = tmp_path_factory.mktemp("results")
    pair = [r for r in open_runs([sweep]) if r.config.seed == 0 and r.config.objective.flood in
            (0.0, FLOODS[-1])]
    assert pair[1].snapshot() is not None
    gradnorm(pair, folder / "gradnorm.h5", device=CPU, progress=False)
    flatness(pair, SliceOptions(points=5), folder / "slices", device=CPU, progress=False)
    theorem1_check(pair[0], MseOptions(samples=100, pool_size=2000), folder / "mse.h5",
                   device=CPU, progress=False)
    return folder


def test_curves_data_file_holds_the_mean_over_seeds_of_each_runs_losses(sweep, tmp_path):
    runs = open_runs([sweep])
    written = plot_curves(learning_curves(runs), tmp_path / "curves", formats=("png",))
    table = read_figure_data(written[-1])
    for b in FLOODS:
        mine = [r.metrics() for r in runs if r.config.objective.flood == b]
        rows = table["flood"] == b
        np.testing.assert_array_equal(table["epoch"][rows], np.arange(15))
        assert (table["trials"][rows] == 2).all()
        for loss in ("train_loss", "test_loss"):
            np.testing.assert_allclose(table[loss][rows], np.mean([m[loss] for m in mine], 0),
                                       rtol=1e-12)
            np.testing.assert_allclose(table[f"{loss}_std"][rows],  # the band's half width
                                       np.std([m[loss] for m in mine], 0, ddof=1), rtol=1e-9)


def test_curves_need_the_test_loss_every_epoch(sweep, tmp_path):
    runs = open_runs([sweep])
    best = dataclasses.replace(runs[0].config, eval_test="best")
    other = Run(train([best], out=tmp_path).paths[0])
    kept, notes = usable(runs + [other])
    assert kept == runs and len(notes) == 1 and "--eval-test every" in notes[0]
    with pytest.raises(BadInput, match="--eval-test every"):
        usable([other])


def test_every_section_through_the_command(sweep, results, tmp_path):
    done = landscape_cli("figures", sweep, results, "--section", "all", "--out", tmp_path,
                         "--format", "png", check=True)
    for stem in ("fig2_learning_curves", "fig3_memorization", "fig4_gradients",
                 "fig5_flatness-slice", "thm1_mse"):
        assert (tmp_path / f"{stem}.png").is_file() and (tmp_path / f"{stem}.csv").is_file(), stem
    assert "section 5.4" in done.stdout and "HOLDS" in done.stdout
    assert (tmp_path / "fig3_memorization.h5").is_file()  # 5.1's result, made from the runs
    bad = landscape_cli("figures", sweep, "--section", "5.3", "--section", "5.4", "--out", tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "section 5.3 needs slice result files" in bad.stderr and "section 5.4" in bad.stderr


def test_missing_inputs_are_named_before_anything_is_drawn(sweep, tmp_path):
    with pytest.raises(BadInput, match="section 5.2 needs gradnorm result files"):
        build_figures([sweep], ["2", "5.2"], tmp_path, formats=("png",))
    assert not list(tmp_path.iterdir())
    with pytest.raises(BadInput, match="no such file"):
        build_figures([tmp_path / "nothing"], ["2"], tmp_path, formats=("png",))
    (tmp_path / "foreign.h5").write_bytes(b"not hdf5")
    with pytest.raises(BadInput, match="not a readable HDF5 file"):
        build_figures([tmp_path / "foreign.h5"], ["2"], tmp_path, formats=("png",))
    with pytest.raises(BadInput, match="unknown section"):
        build_figures([sweep], ["6"], tmp_path, formats=("png",))


def test_curves_refuse_the_same_run_twice(sweep, tmp_path):
    runs = open_runs([sweep])
    again = Run(train([runs[0].config], out=tmp_path).paths[0])
    with pytest.raises(BadInput, match="are the same run"):
        plot_curves(learning_curves(runs + [again]), tmp_path / "curves", formats=("png",))


def test_figures_name_slices_and_surfaces(sweep, results, tmp_path):
    pair = [r for r in open_runs([sweep]) if r.config.seed == 0 and r.config.objective.flood in
            (0.0, FLOODS[-1])]
    surfaces = tmp_path / "surfaces"
    flatness(pair, SliceOptions(points=3, two_d=True), surfaces, device=CPU, progress=False)
    lines = build_figures([results, surfaces], ["5.3"], tmp_path / "figs", formats=("png",))
    assert len(lines) == 2
    assert {p.name for p in (tmp_path / "figs").glob("*.png")} == {
        "fig5_flatness-slice.png", "fig5_flatness-surface.png"}


def test_log_axes_label_every_decade_and_runs_are_named_by_b():
    from landscape.figures.style import figure, log_axis, run_labels

    fig, axes = figure()
    ax = axes[0, 0]
    ax.scatter([2e-4, 3e-1], [0, 1])
    log_axis(ax.xaxis)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    shown = [t.get_text() for t in ax.xaxis.get_majorticklabels()
             if low <= t.get_position()[0] <= high]
    assert shown == ["0.001", "0.01", "0.1"]
    assert len(ax.xaxis.get_minorticklocs()) > 20  # 2..9 x each decade
    ax.set_xlim(0.12, 0.3)                              # within a decade: round values, labelled
    fig.canvas.draw()
    assert [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    assert run_labels(np.array([0.0, 0.2, 0.0]), np.array([False, True, True]),
                      ["flood0", "flood0.2", "flood0-adaptive"]) == ["b = 0", "b = 0.2",
                                                                      "flood0-adaptive"]


def test_a_figure_killed_while_drawn_leaves_no_file(tmp_path):
    """Each figure file (and its CSV) appears whole or not at all: a drawing that fails midway
    leaves neither a stub under its name nor its temporary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landscape.figures.style import save_figure

    fig = plt.figure()

    def half_written(f, **kwargs):
        f.write(b"%PDF-1.4 half")
        raise KeyboardInterrupt

    fig.savefig = half_written
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, tmp_path / "curve", {"x": [1, 2]}, formats=["pdf"])
    assert list(tmp_path.iterdir()) == []
    plt.close(fig)
