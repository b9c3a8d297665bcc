"""Theorem 1 (paper Sec. 5.4, Appendix A): the per-draw identity, the sign claim against a risk known
in closed form, and `landscape mse` end to end on a linear model whose risk can be integrated."""

import math

import numpy as np
import pytest
import torch
from conftest import landscape_cli, tiny_config
from flood_sweeps import read_figure_data
from scipy import integrate, stats

from landscape.analysis.mse import theorem1_check
from landscape.data.synthetic import two_gaussians
from landscape.errors import BadInput
from landscape.figures.mse import plot_mse, read_check
from landscape.measures.options import MseOptions
from landscape.measures.theorem1 import check_claims, default_grid, flooded_risk, mse_panel
from landscape.runs.store import Run
from landscape.training.planner import train

DIM, MEAN = 10, 1.0  # the paper's Two Gaussians


def test_identity_holds_per_draw_to_float64_precision():
    rng = np.random.default_rng(0)
    risk_hat = rng.gamma(2.0, 0.2, size=5000)
    risk = float(rng.uniform(0.2, 0.6))
    flood = np.linspace(0, 1.2, 97)
    panel = mse_panel(risk_hat, risk, flood)
    # (R^ - R)^2 - (R~ - R)^2 = 4 (b - R^)(R - b) 1[R^ < b], computed the long way round
    for b in flood[::12]:
        direct = (risk_hat - risk) ** 2 - (flooded_risk(risk_hat, b) - risk) ** 2
        closed = 4 * (b - risk_hat) * (risk - b) * (risk_hat < b)
        np.testing.assert_allclose(direct, closed, rtol=0, atol=1e-14)
    assert panel.identity_error < 1e-14
    np.testing.assert_allclose(panel.mse_plain - panel.mse_flooded, panel.gain, rtol=0, atol=1e-13)
    assert check_claims(panel, risk, flood).identity_holds


def linear_risk(w: np.ndarray, c: float, *, noise: float = 0.0) -> float:
    """The logistic risk of the score w.x + c on the Two Gaussians, by 1-D quadrature: the score is
    N(c, |w|^2) on the positives (x ~ N(0, I)) and N(c + m w.1, |w|^2) on the negatives."""
    sigma = float(np.linalg.norm(w))

    def expected(mu: float, sign: float) -> float:  # E[log(1 + exp(-sign * s))], s ~ N(mu, sigma^2)
        f = lambda z: np.logaddexp(0.0, -sign * (mu + sigma * z)) * stats.norm.pdf(z)
        return integrate.quad(f, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12)[0]

    mu_pos, mu_neg = c, c + MEAN * float(w.sum())
    clean = 0.5 * expected(mu_pos, 1) + 0.5 * expected(mu_neg, -1)
    flipped = 0.5 * expected(mu_pos, -1) + 0.5 * expected(mu_neg, 1)
    return (1 - noise) * clean + noise * flipped


def test_sign_claim_against_the_exact_risk_of_a_linear_classifier():
    w, c = np.linspace(-1.0, 0.2, DIM), 0.3
    risk = linear_risk(w, c)
    rng = np.random.default_rng(1)
    samples, n = 4000, 20
    x, y = two_gaussians(samples * n, rng, dim=DIM, mean=MEAN)
    order = rng.permutation(samples * n)  # i.i.d. samples: shuffle the class-sorted draw
    x, y = x[order].reshape(samples, n, DIM), y[order].reshape(samples, n)
    risk_hat = np.logaddexp(0.0, -(2 * y - 1) * (x @ w + c)).mean(1)
    assert abs(risk_hat.mean() - risk) < 4 * risk_hat.std() / math.sqrt(samples)
    flood = risk * np.linspace(0, 2, 81)  # b = R exactly at index 40
    panel = mse_panel(risk_hat, risk, flood)
    claims = check_claims(panel, risk, flood)
    assert claims.holds and claims.sign_levels == 41 and claims.strict_levels > 20
    below = flood <= risk
    assert np.all(panel.mse_flooded[below] <= panel.mse_plain + claims.tolerance)
    # the claim is not vacuous: well above R flooding raises the error
    assert np.all(panel.mse_flooded[flood > 1.2 * risk] > panel.mse_plain)
    # the check catches a false premise: with R overstated, levels above the true R count as b <= R
    wrong = check_claims(panel, 1.9 * risk, flood)
    assert wrong.sign_violations and not wrong.holds


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """A trained linear model (an MLP of depth 0) on Two Gaussians with 10% label noise."""
    out = tmp_path_factory.mktemp("mse")
    config = tiny_config(depth=0, noise=0.1, epochs=30)
    return Run(train([config], out=out).paths[0])


def test_check_on_a_linear_model_estimates_its_exact_risk(linear_run, tmp_path):
    options = MseOptions(samples=500, pool_size=40_000)
    path = theorem1_check(linear_run, options, tmp_path / "check.h5", device=torch.device("cpu"),
                          progress=False)
    attrs, a = read_check(path)
    state = linear_run.state_dict(linear_run.epochs_done)
    w, c = state["1.weight"].double().numpy()[0], float(state["1.bias"][0])
    exact = linear_risk(w, c, noise=0.1)
    assert abs(attrs["risk"] - exact) < 4 * attrs["risk_se"]
    for panel in ("pool", "train"):
        assert attrs["claims"][panel]["holds"], attrs["claims"][panel]
    assert attrs["train_loss"] < attrs["risk"]  # g was fit to its training set: biased low
    np.testing.assert_array_equal(a["flood"], default_grid(attrs["risk"], attrs["train_loss"]))
    assert a["pool/risk_hat"].shape == (500,) and attrs["sample_size"] == 40
    # the figure's data file holds the plotted numbers
    written = plot_mse(path, tmp_path / "fig", formats=("png",))
    table = read_figure_data(written[-1])
    for panel in ("pool", "train"):
        rows = table["panel"] == panel
        np.testing.assert_allclose(table["flood"][rows], a["flood"])
        np.testing.assert_allclose(table["mse_flooded"][rows], a[f"{panel}/mse_flooded"],
                                   rtol=1e-12)
        np.testing.assert_allclose(table["mse_plain"][rows], a[f"{panel}/mse_plain"], rtol=1e-12)


def test_pool_must_be_independent_of_the_training_data(linear_run, tmp_path):
    with pytest.raises(BadInput, match="own data seed"):
        theorem1_check(linear_run, MseOptions(pool_seed=linear_run.config.data.seed),
                       tmp_path / "x.h5", device=torch.device("cpu"), progress=False)
    with pytest.raises(BadInput, match="--samples"):
        MseOptions(samples=1)


def test_cli_reports_the_claims_and_bad_input_in_one_line(linear_run, tmp_path):
    ok = landscape_cli("mse", linear_run.path, "--samples", "200", "--pool-size", "5000",
                       "--flood-grid", "0:1:0.05", "--out", tmp_path, "--format", "pdf",
                       "--quiet", check=True)
    assert ok.stdout.count("HOLDS") == 2
    stem = tmp_path / f"{linear_run.name}-mse"
    assert (tmp_path / f"{stem.name}.h5").is_file() and (tmp_path / f"{stem.name}.pdf").is_file()
    bad = landscape_cli("mse", linear_run.path, "--epoch", "soon", "--out", tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--epoch" in bad.stderr
