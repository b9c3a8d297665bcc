import math

import pytest
import torch
import torch.nn.functional as F

from landscape.flooding import flood, flooded_objective, per_sample_loss, predictions


def _grad(objective_fn, w):
    w = w.clone().requires_grad_()
    objective_fn(w).backward()
    return w.grad


def _batch_loss(w, x, y):
    return per_sample_loss((x @ w)[:, None], y, "logistic").mean()


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(32, generator=g) > 0.5).long()
    w = torch.randn(5, generator=g, dtype=torch.float64)
    return w, x, y


def test_flood_is_descent_above_and_ascent_below_b(problem):
    w, x, y = problem
    J = float(_batch_loss(w, x, y))
    plain = _grad(lambda v: _batch_loss(v, x, y), w)
    above = _grad(lambda v: flood(_batch_loss(v, x, y), J - 0.1), w)  # J > b: gravity
    below = _grad(lambda v: flood(_batch_loss(v, x, y), J + 0.1), w)  # J < b: buoyancy
    torch.testing.assert_close(above, plain)
    torch.testing.assert_close(below, -plain)


def test_flood_value_and_zero_level(problem):
    w, x, y = problem
    J = _batch_loss(w, x, y)
    assert flood(J, 0.0) == J
    assert math.isclose(float(flood(J, float(J) + 0.2)), float(J) + 0.4)  # 2b - J below b
    losses = per_sample_loss((x @ w)[:, None], y, "logistic")
    assert torch.equal(flooded_objective(losses, 0.0, "flood"), losses.mean())
    assert torch.allclose(flooded_objective(losses, 0.0, "iflood"), losses.mean())


def test_iflood_floods_each_sample(problem):
    w, x, y = problem
    losses = per_sample_loss((x @ w)[:, None], y, "logistic")
    b = float(losses.sort().values[15:17].mean())  # between two samples' losses
    expected = sum(abs(float(l) - b) + b for l in losses) / len(losses)  # slow reference
    assert math.isclose(float(flooded_objective(losses, b, "iflood")), expected, rel_tol=1e-12)
    # its gradient flips sample by sample, unlike flooding of the batch mean
    g = _grad(lambda v: flooded_objective(per_sample_loss((x @ v)[:, None], y, "logistic"), b,
                                          "iflood"), w)
    ref = torch.zeros_like(w)
    for xi, yi, li in zip(x, y, losses):
        gi = _grad(lambda v: per_sample_loss((xi @ v)[None, None], yi[None], "logistic")[0], w)
        ref += gi if li > b else -gi
    torch.testing.assert_close(g, ref / len(x))


def test_iflood_with_one_level_per_ensemble_member():
    losses = torch.tensor([[0.1, 0.5], [0.2, 0.9]], dtype=torch.float64)
    b = torch.tensor([0.3, 0.0], dtype=torch.float64)
    out = flooded_objective(losses, b, "iflood")
    assert torch.allclose(out, torch.tensor([(0.5 + 0.5) / 2, 0.55], dtype=torch.float64))


def test_losses_match_closed_forms():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 1, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    t = 2 * y - 1
    expected = torch.log1p(torch.exp(-t * logits[:, 0]))  # log(1 + exp(-t g(x)))
    torch.testing.assert_close(per_sample_loss(logits, y, "logistic"), expected)
    assert torch.equal(predictions(logits, "logistic"), (logits[:, 0] > 0).long())
    logits3 = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y3 = torch.randint(0, 3, (10,), generator=g)
    torch.testing.assert_close(per_sample_loss(logits3, y3, "ce"),
                               F.cross_entropy(logits3, y3, reduction="none"))
