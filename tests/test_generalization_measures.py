"""The generalization measures of issue 24 (worst-case and m-sharpness, PAC-Bayes sigma, norms,
margin, Fisher-Rao norm, gradient noise, slice flatness and the battery) against independent
computations: closed forms on models whose loss is an exact quadratic in the parameters, numpy
loops over layers, explicit per-sample and per-batch autograd."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.errors import BadInput
from landscape.measures.generalization import MEASURES, flat_width
from landscape.measures.worstcase import ascend

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def half_square(logits, y):
    """0.5 (f(x) - y)^2 per sample: with a linear model, an exact quadratic in the parameters."""
    return 0.5 * (logits[:, 0] - y) ** 2


def linear_problem(n=40, d=3, seed=0):
    """A float64 linear model, its data, and the loss's exact gradient g and Hessian H at the
    model's weights (numpy, in the parameter order weight..., bias)."""
    torch.manual_seed(seed)
    x = torch.randn(n, d, dtype=F64) * torch.linspace(2.0, 0.5, d, dtype=F64)
    y = torch.randn(n, dtype=F64)
    net = nn.Linear(d, 1).double()
    X = np.c_[x.numpy(), np.ones(n)]
    return net, x, y, X


def gradient_hessian(net, X, y):
    w = np.r_[net.weight.detach().numpy()[0], net.bias.detach().numpy()]
    return X.T @ (X @ w - y.numpy()) / len(X), X.T @ X / len(X), w


def trust_region_max(g, H, rho):
    """max_{||d|| <= rho} g.d + d'Hd / 2 for H positive definite: on the sphere, d = (mu - H)^-1 g
    with mu > lambda_max solving ||d(mu)|| = rho (the secular equation); rho^2 lambda_max / 2 at
    g = 0 (to rounding)."""
    lam, V = np.linalg.eigh(H)
    if np.linalg.norm(g) < 1e-12:
        return rho ** 2 * lam[-1] / 2
    b = V.T @ g
    mu = brentq(lambda mu: np.linalg.norm(b / (mu - lam)) - rho, lam[-1] + 1e-12,
                lam[-1] + np.linalg.norm(g) / rho + 1)
    d = V @ (b / (mu - lam))
    return g @ d + d @ H @ d / 2


def at_minimum(net, X, y):
    w = np.linalg.lstsq(X, y.numpy(), rcond=None)[0]
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(w[:-1])[None])
        net.bias.fill_(w[-1])


@pytest.mark.parametrize("where", ["minimum", "elsewhere"])
def test_worst_case_sharpness_of_a_quadratic_is_the_trust_region_maximum(where):
    net, x, y, X = linear_problem()
    if where == "minimum":
        at_minimum(net, X, y)
    g, H, _ = gradient_hessian(net, X, y)
    got = landscape.worst_case_sharpness(net, (x, y), rho=0.3, loss=half_square, steps=60)
    expected = trust_region_max(g, H, 0.3)
    if where == "minimum":
        assert expected == pytest.approx(0.3 ** 2 / 2 * np.linalg.eigvalsh(H)[-1], rel=1e-9)
    assert got.value == pytest.approx(expected, rel=1e-7)
    assert got.norm == pytest.approx(0.3) and got.radius == pytest.approx(0.3)
    assert math.isnan(got.std) and got.batches == 1


def test_adaptive_sharpness_is_the_trust_region_maximum_in_scaled_coordinates():
    """d = c u, ||u|| <= rho, c = |w|: g.d + d'Hd/2 = (c g).u + u'(C H C)u / 2."""
    net, x, y, X = linear_problem(seed=1)
    g, H, w = gradient_hessian(net, X, y)
    c = np.abs(w)
    got = landscape.worst_case_sharpness(net, (x, y), rho=0.5, adaptive=True, loss=half_square,
                                         steps=60)
    assert got.value == pytest.approx(trust_region_max(c * g, H * np.outer(c, c), 0.5), rel=1e-7)
    assert got.radius == pytest.approx(0.5) and got.norm < 0.5 * c.max()
    with torch.no_grad():  # |w| = 1 everywhere: the adaptive ball is the plain one
        net.weight.copy_(torch.sign(net.weight))
        net.bias.copy_(torch.sign(net.bias))
    plain = landscape.worst_case_sharpness(net, (x, y), rho=0.5, loss=half_square)
    assert landscape.worst_case_sharpness(net, (x, y), rho=0.5, adaptive=True,
                                          loss=half_square) == plain


def test_m_sharpness_is_the_mean_of_each_batch_own_maximum():
    net, x, y, X = linear_problem()
    whole = landscape.worst_case_sharpness(net, (x, y), rho=0.2, loss=half_square, steps=60)
    assert landscape.worst_case_sharpness(net, (x, y), rho=0.2, m=40, loss=half_square,
                                          steps=60) == whole
    got = landscape.worst_case_sharpness(net, (x, y), rho=0.2, m=10, loss=half_square, steps=60,
                                         seed=3)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3)).view(4, 10)
    values = [trust_region_max(*gradient_hessian(net, X[rows], y[rows])[:2], 0.2)
              for rows in order.numpy()]
    assert got.batches == 4
    assert got.value == pytest.approx(np.mean(values), rel=1e-7)
    assert got.std == pytest.approx(np.std(values, ddof=1), rel=1e-5)


def test_the_ascent_never_leaves_the_ball():
    seen = []

    def objective(u):  # a bumpy, non-convex function with its gradient
        value = float(torch.sin(5 * u).sum() + (u ** 3).sum())
        seen.append((float(u.norm()), value))
        return value, 5 * torch.cos(5 * u) + 3 * u ** 2

    start = torch.tensor([3.0, -4.0, 1.0], dtype=F64)  # outside: projected first
    value, u = ascend(objective, start, rho=0.7, steps=50)
    norms, values = zip(*seen)
    assert len(seen) == 50 and max(norms) <= 0.7 * (1 + 1e-12)
    assert value == max(values) == objective(u)[0]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    for adaptive in (False, True):
        got = landscape.worst_case_sharpness(net, (x, y), rho=0.3, adaptive=adaptive, steps=8)
        assert got.value > 0 and got.radius <= 0.3 * (1 + 1e-6)


def test_pac_bayes_sigma_of_a_quadratic_is_the_closed_form():
    """E[L(w + u)] - L(w) = tr(H Sigma_u) / 2 for a quadratic: sigma^2 tr(H) / 2 for plain noise,
    sum_i H_ii (sigma^2 w_i^2 + eps^2) / 2 for the magnitude-aware one."""
    net, x, y, X = linear_problem(n=100, d=50)
    _, H, w = gradient_hessian(net, X, y)
    sigmas = []
    for bound in (0.05, 0.2):
        plain = landscape.pac_bayes_sigma(net, (x, y), bound=bound, draws=50, loss=half_square)
        expected = math.sqrt(2 * bound / np.trace(H))
        # the sigma found is exact for the draws; their mean of z'Hz is off by its stderr
        assert abs(plain.sigma / expected - 1) <= 2 * plain.stderr / plain.rise + 2e-3
        assert plain.rise <= bound
        aware = landscape.pac_bayes_sigma(net, (x, y), bound=bound, draws=50, loss=half_square,
                                          magnitude_aware=True)
        expected = math.sqrt((2 * bound - 1e-6 * np.trace(H)) / (np.diag(H) @ w ** 2))
        assert abs(aware.sigma / expected - 1) <= 2 * aware.stderr / aware.rise + 2e-3
        sigmas.append(plain.sigma)
    assert sigmas[0] < sigmas[1]  # a larger bound allows more noise


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


def test_norms_equal_numpy_loops_over_the_layers():
    torch.manual_seed(0)
    net, init = ConvNet().double(), ConvNet().double()
    layers = [net.conv.weight, net.head.weight]  # the weight matrices: no biases, no BatchNorm
    mats = [p.detach().numpy().reshape(p.shape[0], -1) for p in layers]
    assert landscape.frobenius_product(net) == pytest.approx(
        np.prod([np.sqrt((m ** 2).sum()) for m in mats]), rel=1e-12)
    assert landscape.frobenius_sum(net) == pytest.approx(sum((m ** 2).sum() for m in mats),
                                                         rel=1e-12)
    assert landscape.spectral_product(net) == pytest.approx(
        np.prod([np.linalg.svd(m, compute_uv=False)[0] for m in mats]), rel=1e-10)
    start = init.state_dict()
    everything = sum(((p.detach() - start[k]) ** 2).sum().item()
                     for k, p in net.named_parameters())
    assert landscape.distance_from_init(net, start) == pytest.approx(math.sqrt(everything))
    assert landscape.frobenius_distance(net, start) == pytest.approx(sum(
        ((p.detach() - start[k]) ** 2).sum().item() for k, p in net.named_parameters()
        if p.dim() > 1))
    other = {k: v * 2 for k, v in net.state_dict().items()}  # params= measures another state
    assert landscape.frobenius_sum(net, params=other) == pytest.approx(
        4 * landscape.frobenius_sum(net))


def test_path_norm_is_the_sum_over_paths_of_squared_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False),
                        nn.ReLU(), nn.Linear(4, 2, bias=False)).double()
    W = [m.weight.detach().numpy() for m in net if isinstance(m, nn.Linear)]
    paths = np.ones(2) @ (W[2] ** 2) @ (W[1] ** 2) @ (W[0] ** 2) @ np.ones(3)
    assert landscape.path_norm(net, (3,)) == pytest.approx(math.sqrt(paths), rel=1e-12)
    for affine in (True, False):  # BatchNorm as an affine layer a x + c, squared: a^2 x + c^2
        net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5, affine=affine), nn.ReLU(),
                            nn.Linear(5, 2)).double()
        with torch.no_grad():
            net.train()(torch.randn(16, 3, dtype=F64) * 3 + 1)  # running statistics
            if affine:
                net[1].weight.normal_()
                net[1].bias.normal_()
        first, bn, last = net[0], net[1], net[3]
        gamma, beta = (bn.weight.detach().numpy(), bn.bias.detach().numpy()) if affine else (1, 0)
        a = gamma / np.sqrt(bn.running_var.numpy() + bn.eps)
        c = beta - a * bn.running_mean.numpy()
        h = first.weight.detach().numpy() ** 2 @ np.ones(3) + first.bias.detach().numpy() ** 2
        h = a ** 2 * h + c ** 2
        out = last.weight.detach().numpy() ** 2 @ h + last.bias.detach().numpy() ** 2
        assert landscape.path_norm(net, (3,)) == pytest.approx(math.sqrt(out.sum()), rel=1e-10)


def test_output_margin_is_the_tenth_percentile_of_the_margins():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(57, 4, dtype=F64), torch.randint(0, 3, (57,))
    logits = net(x).detach().numpy()
    true = logits[np.arange(57), y.numpy()]
    others = np.where(np.eye(3)[y.numpy()] == 1, -np.inf, logits).max(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    assert landscape.output_margin(net, loader) == pytest.approx(np.sort(true - others)[4])
    binary = nn.Linear(4, 1).double()  # one logit, labels 0/1: (2y - 1) f(x)
    labels = torch.randint(0, 2, (57,))
    signed = (2 * labels.numpy() - 1) * binary(x).detach().numpy()[:, 0]
    assert landscape.output_margin(binary, (x, labels), loss="logistic",
                                   quantile=0.5) == pytest.approx(np.sort(signed)[27])


def test_fisher_rao_norm_equals_per_sample_gradients_and_liangs_identity():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 5, bias=False),
                        nn.ReLU(), nn.Linear(5, 3, bias=False)).double()
    x, y = torch.randn(23, 4, dtype=F64), torch.randint(0, 3, (23,))
    got = landscape.fisher_rao_norm(net, DataLoader(TensorDataset(x, y), batch_size=7))
    inner = []
    for i in range(23):  # <w, grad l_i> from each sample's own backward pass
        grads = torch.autograd.grad(F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]),
                                    list(net.parameters()))
        inner.append(sum((p * g).sum() for p, g in zip(net.parameters(), grads)).item())
    assert got == pytest.approx(math.sqrt(np.mean(np.square(inner))), rel=1e-10)
    f = net(x).detach()  # Liang et al.: (L + 1) <dl/df, f> with L = 2 hidden layers
    dl_df = torch.softmax(f, 1) - F.one_hot(y, 3)
    assert got == pytest.approx(math.sqrt(((3 * (dl_df * f).sum(1)) ** 2).mean().item()),
                                rel=1e-10)


def test_gradient_noise_equals_a_loop_over_the_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(50, 4, dtype=F64), torch.randint(0, 3, (50,))

    def gradient(rows):
        return torch.cat([g.flatten() for g in torch.autograd.grad(
            F.cross_entropy(net(x[rows]), y[rows]), list(net.parameters()))])

    full = gradient(slice(None))
    order = torch.randperm(50, generator=torch.Generator().manual_seed(2))[:48].view(4, 12)
    expected = np.mean([((gradient(rows) - full) ** 2).sum().item() for rows in order])
    got = landscape.gradient_noise(net, (x, y), batch_size=12, seed=2)
    assert got == pytest.approx(expected, rel=1e-10)


def test_flat_width_interpolates_the_first_crossing_on_each_side():
    alphas = np.linspace(-1, 1, 11)
    losses = np.abs(alphas) * np.where(alphas > 0, 1.0, 2.0)  # rises twice as fast on the left
    assert flat_width(alphas, losses, 0.5) == pytest.approx((0.5 + 0.25) / 2)
    assert flat_width(alphas, losses * 0, 0.5) == pytest.approx(1.0)  # never: the span
    bump = np.where(np.isclose(alphas, 0.6), 9.0, 0.0)  # the first crossing counts, not a later dip
    assert flat_width(alphas, bump, 0.5) == pytest.approx((0.4 + 0.5 / 9 * 0.2 + 1.0) / 2)


def test_the_battery_equals_the_functions_and_checks_its_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    init = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randn(40, 4, dtype=F64), torch.randint(0, 3, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    options = {"worst_case_sharpness": {"steps": 5, "m": 20},
               "adaptive_worst_case_sharpness": {"steps": 5, "restarts": 1},
               "pac_bayes_sigma": {"draws": 2, "tolerance": 0.05},
               "magnitude_aware_pac_bayes_sigma": {"draws": 2, "tolerance": 0.05},
               "gradient_noise": {"batch_size": 8}, "hessian_top_eigenvalue": {"iterations": 5},
               "hessian_trace": {"probes": 4}, "average_sharpness": {"draws": 2},
               "slice_flatness": {"points": 11}}
    got = landscape.generalization_measures(net, loader, init=init, options=options, seed=1)
    assert list(got) == list(MEASURES)
    expected = {
        "worst_case_sharpness": landscape.worst_case_sharpness(
            net, (x, y), steps=5, m=20, seed=1).value,
        "adaptive_worst_case_sharpness": landscape.worst_case_sharpness(
            net, (x, y), adaptive=True, steps=5, restarts=1, seed=1).value,
        "pac_bayes_sigma": landscape.pac_bayes_sigma(net, (x, y), draws=2, tolerance=0.05,
                                                     seed=1).sigma,
        "magnitude_aware_pac_bayes_sigma": landscape.pac_bayes_sigma(
            net, (x, y), magnitude_aware=True, draws=2, tolerance=0.05, seed=1).sigma,
        "frobenius_product": landscape.frobenius_product(net),
        "frobenius_sum": landscape.frobenius_sum(net),
        "spectral_product": landscape.spectral_product(net),
        "path_norm": landscape.path_norm(net, (4,)),
        "distance_from_init": landscape.distance_from_init(net, init),
        "frobenius_distance": landscape.frobenius_distance(net, init),
        "output_margin": landscape.output_margin(net, (x, y)),
        "fisher_rao_norm": landscape.fisher_rao_norm(net, (x, y)),
        "gradient_noise": landscape.gradient_noise(net, (x, y), batch_size=8, seed=1),
        "hessian_top_eigenvalue": landscape.hessian_top_eigenvalue(net, (x, y), iterations=5,
                                                                   seed=1),
        "hessian_trace": landscape.hessian_trace(net, (x, y), probes=4, seed=1).value,
        "average_sharpness": landscape.average_sharpness(net, (x, y), draws=2, seed=1).value,
        "gradient_amplitude": landscape.gradient_amplitude(net, (x, y)),
        "slice_flatness": landscape.slice_flatness(net, (x, y), points=11, seed=1),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    subset = landscape.generalization_measures(net, (x, y), names=["path_norm", "output_margin"])
    assert subset == {k: expected[k] for k in ("path_norm", "output_margin")}
    assert "distance_from_init" not in landscape.generalization_measures(
        net, (x, y), names=None, options={k: options[k] for k in options}, seed=1)


def test_bad_input_is_one_clear_line():
    net, x, y, _ = linear_problem()
    for call, words in [
        (lambda: landscape.worst_case_sharpness(net, (x, y), rho=0, loss=half_square), "rho"),
        (lambda: landscape.worst_case_sharpness(net, (x, y), m=7, loss=half_square), "divide"),
        (lambda: landscape.worst_case_sharpness(net, (x, y), m=80, loss=half_square), "divide"),
        (lambda: landscape.pac_bayes_sigma(net, (x, y), bound=-1, loss=half_square), "bound"),
        (lambda: landscape.gradient_noise(net, (x, y), batch_size=41, loss=half_square),
         "batch_size"),
        (lambda: landscape.frobenius_sum(nn.BatchNorm1d(3)), "no weight matrices"),
        (lambda: landscape.output_margin(net, (x, y), loss=half_square), "class labels"),
        (lambda: landscape.generalization_measures(net, (x, y), names=["sharpness"]),
         "choose from worst_case_sharpness, adaptive_worst_case_sharpness"),
        (lambda: landscape.generalization_measures(net, (x, y), names=["frobenius_distance"]),
         "init"),
        (lambda: landscape.generalization_measures(
            net, (x, y), options={"adaptive_worst_case_sharpness": {"adaptive": False}}),
         "adaptive_worst_case_sharpness takes no option 'adaptive'"),
        (lambda: landscape.generalization_measures(net, (x, y),
                                                   options={"path_norm": {"seed": 1}}),
         "path_norm takes no option 'seed'"),
    ]:
        with pytest.raises(BadInput, match=words) as error:
            call()
        assert "\n" not in str(error.value)


def test_a_loader_first_read_in_an_evaluation_is_differentiated_later():
    """The battery's first pass over a DataLoader may run in inference mode (a loss without
    gradients); the batches it keeps must still serve the gradient ascents that follow."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(40, 4, dtype=F64), torch.randint(0, 3, (40,))
    names = ["average_sharpness", "worst_case_sharpness"]
    options = {"worst_case_sharpness": {"steps": 3, "restarts": 1}, "average_sharpness":
               {"draws": 2}}
    got = landscape.generalization_measures(
        net, DataLoader(TensorDataset(x, y), batch_size=16), names=names, options=options)
    assert got == pytest.approx(landscape.generalization_measures(net, (x, y), names=names,
                                                                  options=options), rel=1e-9)


def test_a_measure_that_cannot_take_the_model_or_data_is_named():
    """All the measures at once: the one that refuses says who it is and how to set it or
    leave it out (the caller never passed gradient_noise's batch_size), and the path norm on a
    model of token ids is a line, not the embedding's error."""
    torch.manual_seed(0)
    tokens = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 3))
    ids, y = torch.randint(0, 10, (40, 5)), torch.randint(0, 3, (40,))
    with pytest.raises(BadInput, match=r"^path_norm: the path norm runs the model on an "
                       r"all-ones float input of shape \[5\], which it cannot take"):
        landscape.generalization_measures(tokens, (ids, y), names=["path_norm"])
    few = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    with pytest.raises(BadInput, match=r"^gradient_noise: batch_size must be between 1 and the "
                       r"data's 20 rows, got 32 \(options=\{'gradient_noise': \{\.\.\.\}\} sets"):
        landscape.generalization_measures(few, (x, y), names=["output_margin", "gradient_noise"])
    found = landscape.generalization_measures(few, (x, y), names=["gradient_noise"],
                                              options={"gradient_noise": {"batch_size": 5}})
    assert math.isfinite(found["gradient_noise"])
