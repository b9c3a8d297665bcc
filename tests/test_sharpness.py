"""Sharpness measures (analysis/sharpness.py) against the exact Hessian of a tiny model and a slow
loop, and `landscape sharpness` / `landscape figures --section sharpness` through the installed
command."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from analysis_runs import train_pair
from conftest import landscape_cli
from torch.func import functional_call, hessian

from landscape.analysis.loading import dataset_for, model_for
from landscape.analysis.sharpness import KIND
from landscape.data import Split, load
from landscape.flooding import per_sample_loss
from landscape.measures.filternorm import gaussian_directions, parameters_of
from landscape.measures.hessian import sharpness_estimate
from landscape.measures.objective import Objective
from landscape.measures.operators import HessianOperator
from landscape.measures.options import Normalization, SharpnessOptions
from landscape.measures.sources import as_source
from landscape.measures.spectrum import top_eigenvalue
from landscape.measures.split import split_trace
from landscape.measures.trace import hutchinson_trace
from landscape.results import read_result

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory, epochs=14, width=8)


@pytest.fixture(scope="module")
def exact(pair):
    """The flooded run at epoch 14 in float64: model, params, buffers, training split, the full
    Hessian of its mean training loss (torch.func.hessian over the flattened parameters)."""
    run = pair[1]
    data = load(run.config.data, dtype=torch.float64)
    model = model_for(run, dataset_for(run, device=CPU), device=CPU).double()
    state = {k: v.double() for k, v in run.state_dict(14).items()}
    params, buffers = parameters_of(model, state)
    split = Split(data.train.x, data.train.y, data.train.y_clean)
    shapes = {k: p.shape for k, p in params.items()}

    def loss_of(flat):
        pieces = dict(zip(shapes, flat.split([math.prod(s) for s in shapes.values()])))
        p = {k: v.reshape(shapes[k]) for k, v in pieces.items()}
        return per_sample_loss(functional_call(model, (p, buffers), (split.x,)), split.y,
                               "logistic").mean()

    H = hessian(loss_of)(torch.cat([p.flatten() for p in params.values()]))
    return model, params, buffers, split, H, data


def test_power_iteration_equals_the_top_eigenvalue_of_the_full_hessian(exact):
    model, params, buffers, split, H, _ = exact
    eigenvalues = torch.linalg.eigvalsh(H)
    largest = eigenvalues[eigenvalues.abs().argmax()]
    assert largest > 0  # near a minimum the largest magnitude is the top eigenvalue
    hessian = HessianOperator.on(Objective(model, params, buffers, as_source(
        split, device=CPU, dtype=None), "logistic", tuple(params)), rows=7)  # chunks of 7 of 40
    estimate, used = top_eigenvalue(hessian, iterations=2000, tolerance=1e-13, seed=0)
    assert used < 2000
    assert estimate == pytest.approx(float(largest), rel=1e-8)


def test_hutchinson_trace_converges_to_the_exact_trace(exact):
    """z.Hz over Rademacher z has mean tr H and variance 2 (||H||_F^2 - sum_i H_ii^2): with 2000
    probes the estimate is within 4 of its standard deviations (a 6e-5 chance to fail for an
    unlucky seed; the seed is fixed), and the reported standard error matches the exact one."""
    model, params, buffers, split, H, _ = exact
    hessian = HessianOperator.on(Objective(model, params, buffers, as_source(
        split, device=CPU, dtype=None), "logistic", tuple(params)))
    probes = 2000
    estimate, stderr = hutchinson_trace(hessian, probes=probes, seed=1)
    exact_stderr = math.sqrt(2 * (H.square().sum() - H.diagonal().square().sum()) / probes)
    assert abs(estimate - float(H.trace())) <= 4 * exact_stderr
    assert stderr == pytest.approx(exact_stderr, rel=0.15)
    assert exact_stderr < 0.05 * abs(float(H.trace()))  # the test has teeth


def test_the_split_trace_of_a_relu_run_is_the_exact_trace(exact, pair, tmp_path):
    """The runs' ReLU MLPs are piecewise linear in their parameters: the split trace (one
    logistic output) is tr H itself, with no probe; `landscape sharpness --trace split`
    stores it with a zero standard error and says so in the file's attributes."""
    model, params, buffers, split, H, _ = exact
    hessian = HessianOperator.on(Objective(model, params, buffers, as_source(
        split, device=CPU, dtype=None), "logistic", tuple(params)))
    assert split_trace(hessian) == (pytest.approx(float(H.trace()), rel=1e-9), 0.0)
    landscape_cli("sharpness", pair[1].path, "--epochs", "14", "--trace", "split", "--draws",
                  "1", "--iterations", "5", "--out", tmp_path, "--format", "png", "-q",
                  check=True)
    attrs, a = read_result(tmp_path / "sharpness.h5", KIND)
    assert attrs["trace"] == "split"
    at = a["epoch"] == 14
    assert a["trace_stderr"][at].tolist() == [0.0], a["epoch"]
    assert a["trace"][at][0] == pytest.approx(float(H.trace()), rel=1e-4)  # float32 there


def test_average_sharpness_at_small_sigma_is_half_the_curvature_along_the_draws(exact):
    """Antithetic pairs cancel the first-order term: (L(theta + s d) + L(theta - s d)) / 2 - L
    = s^2 / 2 d.Hd + O(s^4) for each draw d (ReLU kinks are not crossed at s = 1e-5)."""
    model, params, buffers, _, H, data = exact
    options = SharpnessOptions(sigma=1e-5, draws=4, seed=3)
    value, _, _ = sharpness_estimate(model, params, buffers, as_source(data.train, device=CPU,
                                    dtype=None), "logistic", options, at_once=8, rows=16)
    directions = gaussian_directions(params, 3, Normalization(), count=4)
    flat = torch.stack([torch.cat([d[k].flatten() for k in params]) for d in directions])
    curvature = float(torch.einsum("di,ij,dj->d", flat, H, flat).mean())
    assert value / options.sigma ** 2 == pytest.approx(curvature / 2, rel=1e-4)


def test_average_sharpness_equals_a_slow_loop(pair):
    """Independent of the stacked path: a module loaded with each perturbed state, one at a time."""
    run = pair[0]
    data = dataset_for(run, device=CPU)
    model = model_for(run, data, device=CPU)
    params, buffers = parameters_of(model, run.state_dict(14))
    options = SharpnessOptions(sigma=0.3, draws=3, seed=5, split="test")
    value, stderr, base = sharpness_estimate(model, params, buffers, as_source(
        data.test, device=CPU, dtype=None), "logistic", options, at_once=4, rows=64)
    module = model_for(run, data, device=CPU)
    pair_means = []
    with torch.no_grad():
        def loss_at(state):
            module.load_state_dict({**state, **buffers})
            return float(per_sample_loss(module(data.test.x), data.test.y, "logistic").mean())
        zero = loss_at(params)
        for d in gaussian_directions(params, 5, Normalization(), count=3):
            plus = loss_at({k: p + 0.3 * d[k] for k, p in params.items()})
            minus = loss_at({k: p - 0.3 * d[k] for k, p in params.items()})
            pair_means.append((plus + minus) / 2 - zero)
    assert base == pytest.approx(zero, rel=1e-5)
    assert value == pytest.approx(np.mean(pair_means), rel=1e-4, abs=1e-6)
    assert stderr == pytest.approx(np.std(pair_means, ddof=1) / math.sqrt(3), rel=1e-3)


def test_sharpness_of_a_run_pair_and_its_figure_through_the_installed_command(pair, tmp_path):
    folder = pair[0].path.parent
    result = landscape_cli("sharpness", folder, "--epochs", "12,14", "--probes", "8", "--draws",
                           "2", "--iterations", "20", "--out", tmp_path / "res", "--format", "png",
                           "-q", check=True)
    assert "sharpness:" in result.stdout
    attrs, a = read_result(tmp_path / "res" / "sharpness.h5", KIND)
    assert (attrs["probes"], attrs["draws"], attrs["split"]) == (8, 2, "train")
    assert set(a["epoch"].tolist()) >= {12, 14} and set(a["run"].tolist()) == {0, 1}
    assert a["flooded"].tolist() == [False, True]
    np.testing.assert_allclose(a["test_loss"][a["epoch"] == 14],
                               [r.metric("test_loss")[14] for r in pair])
    assert np.isfinite(a["lambda_max"]).all() and np.isfinite(a["trace"]).all()
    landscape_cli("figures", tmp_path / "res" / "sharpness.h5", "--section", "sharpness",
                  "--out", tmp_path / "figs", "--format", "png", check=True)
    assert (tmp_path / "figs" / "sharpness.png").stat().st_size > 0
    csv = np.genfromtxt(tmp_path / "figs" / "sharpness.csv", delimiter=",", names=True,
                        dtype=None, encoding="utf-8")
    with h5py.File(tmp_path / "res" / "sharpness.h5") as f:
        keep = f["epoch"][()] > 10
        np.testing.assert_allclose(csv["trace"], f["trace"][()][keep])


@pytest.mark.parametrize("extra, message", [
    (("--sigma", "0"), "--sigma"),
    (("--epochs", "3,99"), "not saved"),
])
def test_bad_sharpness_input_is_one_line_and_exit_2(pair, tmp_path, extra, message):
    result = landscape_cli("sharpness", pair[1].path, *extra, "--out", tmp_path, "-q")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
