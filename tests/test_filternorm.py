"""Filter normalization (Li et al. 2018), shared by the gradient amplitude and the flatness slices."""

import math

import pytest
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.measures.filternorm import (
    amplitude,
    gaussian_directions,
    normalize_direction,
    parameters_of,
)
from landscape.measures.options import Normalization


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 5),
                         nn.ReLU(), nn.Linear(5, 1))


def _params(model):
    return parameters_of(model, model.state_dict())


def test_parameters_and_buffers_are_split_by_the_model():
    params, buffers = _params(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    assert set(params) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert set(buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}


def test_filter_norms_of_the_direction_equal_the_parameters(model):
    params, _ = _params(model)
    (d,) = gaussian_directions(params, 3, Normalization())
    for name, theta in params.items():
        if theta.dim() == 1:   # biases and BN affine: excluded by default
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        for f in range(theta.shape[0]):  # conv output channel / linear row
            assert math.isclose(d[name][f].norm(), theta[f].norm(), rel_tol=1e-5), (name, f)


def test_included_biasbn_are_one_filter_each(model):
    params, _ = _params(model)
    (d,) = gaussian_directions(params, 3, Normalization(include_biasbn=True))
    for name, theta in params.items():
        if theta.dim() == 1:
            assert math.isclose(d[name].norm(), theta.norm(), rel_tol=1e-5, abs_tol=1e-12), name


def test_layer_mode_scales_each_tensor_by_its_norm(model):
    params, _ = _params(model)
    (d,) = gaussian_directions(params, 3, Normalization("layer"))
    for name, theta in params.items():
        if theta.dim() > 1:
            assert math.isclose(d[name].norm(), theta.norm(), rel_tol=1e-5), name
            if theta.shape[0] > 1:  # one tensor-wide scale: its rows keep their random norms
                rows = d[name].flatten(1).norm(dim=1)
                assert not torch.allclose(rows, theta.flatten(1).norm(dim=1), rtol=1e-3)
        else:
            assert torch.count_nonzero(d[name]) == 0


def test_same_seed_same_direction_and_policy_independent_draws(model):
    params, _ = _params(model)
    a = gaussian_directions(params, 7, Normalization(), count=2)
    b = gaussian_directions(params, 7, Normalization(), count=2)
    c = gaussian_directions(params, 8, Normalization())
    with_bias = gaussian_directions(params, 7, Normalization(include_biasbn=True))
    for name in params:
        assert torch.equal(a[0][name], b[0][name]) and torch.equal(a[1][name], b[1][name])
        if params[name].dim() > 1:
            assert not torch.equal(a[0][name], c[0][name])
            assert not torch.equal(a[0][name], a[1][name])
            assert torch.equal(a[0][name], with_bias[0][name])  # the bias policy draws the same d
    (first,) = gaussian_directions(params, 7, Normalization())
    assert all(torch.equal(first[n], a[0][n]) for n in params)  # 1-D slice = surface's x axis


def _reference_amplitude(grads, params, *, mode, include_biasbn):
    """The definition, one unit at a time: sum over units of ||g_f||^2 ||theta_f||^2."""
    total = 0.0
    for name, theta in params.items():
        g = grads[name]
        if theta.dim() == 1 and not include_biasbn:
            continue
        if mode == "filter" and theta.dim() > 1:
            for f in range(theta.shape[0]):
                total += float(g[f].norm()) ** 2 * float(theta[f].norm()) ** 2
        else:
            total += float(g.norm()) ** 2 * float(theta.norm()) ** 2
    return math.sqrt(total)


@pytest.mark.parametrize("mode,include", [("filter", False), ("filter", True), ("layer", False)])
def test_amplitude_matches_the_definition_and_batches(model, mode, include):
    params, _ = _params(model)
    g = torch.Generator().manual_seed(1)
    grads = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
    norm = Normalization(mode, include)
    expected = _reference_amplitude(grads, params, mode=mode, include_biasbn=include)
    assert math.isclose(float(amplitude(grads, params, norm)), expected, rel_tol=1e-5)
    stacked = amplitude({n: torch.stack([v, 2 * v]) for n, v in grads.items()},
                        {n: torch.stack([v, v]) for n, v in params.items()}, norm, batch=1)
    torch.testing.assert_close(stacked, torch.tensor([expected, 2 * expected]), rtol=1e-5,
                               atol=0)


def test_stacked_directions_normalize_each_member(model):
    params, _ = _params(model)
    raw = {n: torch.randn(2, *p.shape) for n, p in params.items()}
    theta = {n: torch.stack([p, 3 * p]) for n, p in params.items()}
    both = normalize_direction(raw, theta, Normalization(), batch=1)
    for k in range(2):
        one = normalize_direction({n: v[k] for n, v in raw.items()},
                                  {n: v[k] for n, v in theta.items()}, Normalization())
        for n in params:
            torch.testing.assert_close(both[n][k], one[n])


def test_unknown_mode_is_bad_input():
    with pytest.raises(BadInput, match="normalization"):
        Normalization("channel")
