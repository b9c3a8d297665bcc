"""Convexity maps (Li et al. 2018, Sec. 6): the Hessian's extreme eigenvalues at each point of a
slice or surface, stored, resumed and drawn."""

from __future__ import annotations

import csv
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analysis_runs import train_pair
from conftest import landscape_cli, one_line_error
from torch import nn
from torch.func import functional_call, hessian

import landscape
import landscape.analysis.flatness as flatness_module
from landscape.analysis.flatness import flatness
from landscape.errors import BadInput
from landscape.figures.convexity import convexity_ratio, plot_convexity
from landscape.measures.filternorm import parameters_of
from landscape.measures.options import SliceOptions
from landscape.results import read_result

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory)


def _dense_spectrum(net: nn.Module, params: dict, buffers: dict, x, y) -> np.ndarray:
    """eigvalsh of the Hessian of the mean cross-entropy over the flattened parameters, the
    module in eval mode (float64)."""
    shapes = {k: p.shape for k, p in params.items()}

    def loss_of(flat):
        pieces = flat.split([math.prod(s) for s in shapes.values()])
        p = {k: v.reshape(shapes[k]) for k, v in zip(shapes, pieces)}
        return F.cross_entropy(functional_call(net.eval(), (p, buffers), (x,)), y)

    flat = torch.cat([p.reshape(-1) for p in params.values()])
    return np.linalg.eigvalsh(hessian(loss_of)(flat).numpy())


def test_each_points_eigenvalues_are_the_dense_hessians_ends():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 3, (40,))
    surface = landscape.loss_surface(net, (x, y), points=3, span=0.7, eigen=True,
                                     eigen_tolerance=1e-10)
    theta, buffers = parameters_of(net, net.state_dict())
    dx, dy = surface.directions
    for i, beta in enumerate(surface.y):                           # arrays are [ny, nx]
        for j, alpha in enumerate(surface.x):
            point = {k: t + alpha * dx[k] + beta * dy[k] for k, t in theta.items()}
            spectrum = _dense_spectrum(net, point, buffers, x, y)
            assert np.isclose(surface["train_max_eigenvalue"][i, j], spectrum[-1], rtol=1e-8)
            assert np.isclose(surface["train_min_eigenvalue"][i, j], spectrum[0], rtol=1e-8,
                              atol=1e-10)
    assert (surface["train_min_eigenvalue"] < 0).any()  # a non-convex map: both ends matter
    line = landscape.loss_slice(net, (x, y), points=3, span=0.7, eigen=True,
                                eigen_tolerance=1e-10)  # a slice's x axis is the surface's
    np.testing.assert_allclose(line["train_max_eigenvalue"], surface["train_max_eigenvalue"][1],
                               rtol=1e-8)
    with pytest.raises(BadInput, match="eigen-iterations"):
        landscape.loss_surface(net, (x, y), points=3, eigen=True, eigen_iterations=0)


def test_recomputed_batchnorm_statistics_are_those_of_each_point():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    surface = landscape.loss_surface(net, (x, y), points=3, eigen=True, eigen_tolerance=1e-10,
                                     bn_stats="recompute")
    theta, buffers = parameters_of(net, net.state_dict())
    dx, dy = surface.directions
    for i, beta in enumerate(surface.y):
        for j, alpha in enumerate(surface.x):
            point = {k: t + alpha * dx[k] + beta * dy[k] for k, t in theta.items()}
            h = x @ point["0.weight"].T + point["0.bias"]  # one batch: its own statistics
            fresh = {**buffers, "1.running_mean": h.mean(0), "1.running_var": h.var(0)}
            spectrum = _dense_spectrum(net, point, fresh, x, y)
            assert np.isclose(surface["train_max_eigenvalue"][i, j], spectrum[-1], rtol=1e-7)
            assert np.isclose(surface["train_min_eigenvalue"][i, j], spectrum[0], rtol=1e-7,
                              atol=1e-9)


def test_a_killed_eigen_surface_resumes_to_the_same_file_and_its_figure(pair, tmp_path,
                                                                       monkeypatch):
    options = SliceOptions(points=3, two_d=True, eigen=True)
    (path,) = flatness([pair[0]], options, tmp_path, device=CPU, progress=False)
    attrs, full = read_result(path, "slice")
    assert full["train_max_eigenvalue"].shape == (3, 3) and attrs["eigen_iterations"] == 100
    assert np.isfinite(full["train_min_eigenvalue"]).all()
    assert (full["train_max_eigenvalue"] >= full["train_min_eigenvalue"]).all()
    with h5py.File(path, "r+") as f:  # as if killed after part of the grid
        f["train_max_eigenvalue"][2, 1:] = np.nan
        f["train_min_eigenvalue"][2, 1:] = np.nan
    measured = []
    original, original_points = flatness_module.extreme_eigenvalues, flatness_module.evaluate_points
    monkeypatch.setattr(flatness_module, "extreme_eigenvalues",
                        lambda *a, **k: measured.append(len(a[3])) or original(*a, **k))
    flatness([pair[0]], options, tmp_path, device=CPU, progress=False)
    assert measured == [1, 1]  # the two points left, one a chunk
    _, resumed = read_result(path, "slice")
    for key in ("train_max_eigenvalue", "train_min_eigenvalue", "test_loss"):
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-6)

    stem = tmp_path / "convexity-2d"
    written = plot_convexity([path], stem, formats=("png",))
    assert stem.with_suffix(".png") in written
    with open(stem.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))

    def column(key):
        return np.array([float(r[key]) for r in rows]).reshape(3, 3)

    np.testing.assert_array_equal(column("train_max_eigenvalue"), resumed["train_max_eigenvalue"])
    np.testing.assert_array_equal(column("train_min_eigenvalue"), resumed["train_min_eigenvalue"])
    np.testing.assert_array_equal(column("alpha")[0], resumed["xcoordinates"])
    np.testing.assert_array_equal(column("beta")[:, 0], resumed["ycoordinates"])
    np.testing.assert_allclose(column("ratio"), np.abs(resumed["train_min_eigenvalue"]
                                                       / resumed["train_max_eigenvalue"]))

    plain = SliceOptions(points=3, two_d=True)
    (other,) = flatness([pair[0]], plain, tmp_path / "plain", device=CPU, progress=False)
    with pytest.raises(BadInput, match="no Hessian eigenvalues"):
        plot_convexity([other], tmp_path / "none")
    # a loss-only file asked for eigenvalues gains them: its losses kept, not evaluated again
    monkeypatch.setattr(flatness_module, "evaluate_points", lambda *a, **k: pytest.fail(
        "the losses were evaluated again"))
    measured.clear()
    flatness([pair[0]], options, tmp_path / "plain", device=CPU, progress=False)
    attrs, extended = read_result(other, "slice")
    assert measured == [1] * 9 and attrs["eigen_iterations"] == 100
    for key in full:
        np.testing.assert_allclose(extended[key], full[key], rtol=1e-6)
    # ... and keeps them when a resume without --eigen rewrites it
    with h5py.File(other, "r+") as f:
        f["test_loss"][0, 0] = np.nan
    monkeypatch.setattr(flatness_module, "evaluate_points", original_points)
    flatness([pair[0]], plain, tmp_path / "plain", device=CPU, progress=False)
    attrs, kept = read_result(other, "slice")
    assert attrs["eigen_tolerance"] == options.eigen_tolerance
    for key in full:
        np.testing.assert_allclose(kept[key], full[key], rtol=1e-6)
    with pytest.raises(BadInput, match="other parameters.*eigen_iterations"):
        flatness([pair[0]], SliceOptions(points=3, two_d=True, eigen=True, eigen_iterations=7),
                 tmp_path / "plain", device=CPU, progress=False)


def test_the_ratio_is_nan_where_nothing_is_known():
    ratio = convexity_ratio(np.array([2.0, 0.0, np.nan]), np.array([-0.5, -1.0, 1.0]))
    assert ratio[0] == 0.25 and np.isnan(ratio[1:]).all()


def test_the_cli_on_a_users_batchnorm_model_in_eval_mode(user_project):
    folder, usernet = user_project
    user = ["--model", "usernet:make", "--data", "usernet:splits", "--weights",
            "ckpt/epoch_12.ckpt"]
    result = landscape_cli("flatness", *user, "--2d", "--eigen", "--points", 3, "--out", "res",
                           "-q")
    assert result.returncode == 0, result.stderr
    assert (folder / "res" / "convexity-2d.png").exists() and "convexity-2d.csv" in result.stdout
    _, s = read_result(folder / "res" / "epoch_12.surface.h5", "slice")
    net = usernet.make().double()
    state = torch.load(folder / "ckpt" / "epoch_12.ckpt", weights_only=True)["state_dict"]
    params, buffers = parameters_of(net, {k.removeprefix("model."): v.double()
                                          if v.is_floating_point() else v
                                          for k, v in state.items()})
    x, y = (torch.cat(t) for t in zip(*usernet.splits()["train"]))
    spectrum = _dense_spectrum(net, params, buffers, x.double(), y)  # the centre: theta itself
    scale = spectrum[-1]
    assert abs(s["train_max_eigenvalue"][1, 1] - spectrum[-1]) <= 1e-3 * scale
    assert abs(s["train_min_eigenvalue"][1, 1] - spectrum[0]) <= 1e-3 * scale

    bad = landscape_cli("flatness", *user, "--eigen", "--eigen-tolerance", 2, "--out", "res")
    one_line_error(bad, "--eigen-tolerance")


def test_the_cli_on_runs_and_landscape_figures_draw_the_map(pair, tmp_path):
    out = tmp_path / "eig"
    made = landscape_cli("flatness", pair[0].path.parent, "--eigen", "--points", 3,
                         "--eigen-iterations", 30, "--out", out, "-q", check=True)
    assert made.stdout.count(".slice.h5") == 3 and (out / "convexity.csv").is_file()
    _, a = read_result(out / f"{pair[0].name}.last.slice.h5", "slice")
    assert a["train_min_eigenvalue"].shape == (3,) and np.isfinite(a["train_max_eigenvalue"]).all()
    landscape_cli("figures", out, "--section", "5.3", "--out", tmp_path / "figs", "--format",
                  "png", check=True)
    assert {p.name for p in (tmp_path / "figs").glob("*.png")} == {
        "fig5_flatness-slice.png", "convexity-slice.png"}
