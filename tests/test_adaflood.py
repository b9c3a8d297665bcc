"""AdaFlood (adaflood.py): the levels' formula, the folds, the auxiliary models and the flooded
run against plain PyTorch loops (its bad input: test_adaptive.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_config

from landscape.config import ObjectiveConfig
from landscape.config.execution import Execution
from landscape.data import load
from landscape.flooding import flooded_objective, per_sample_loss
from landscape.models import build_model
from landscape.runs.store import Run
from landscape.training.adaflood import corrected_levels, fold_assignment
from landscape.training.loop import epoch_generator
from landscape.training.planner import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_levels_equal_the_formula_on_known_losses():
    losses = np.array([0.0, 0.1, 0.6931, 2.0, 50.0, 1e4])
    for gamma in (0.1, 0.5, 0.9):
        expected = -np.log((1 - gamma) * np.exp(-losses) + gamma)
        np.testing.assert_allclose(corrected_levels(losses, gamma), expected, rtol=1e-12,
                                   atol=1e-15)
        assert corrected_levels(np.array([0.0]), gamma)[0] == pytest.approx(0, abs=1e-15)
        assert corrected_levels(np.array([1e4]), gamma)[0] == pytest.approx(-np.log(gamma))


@pytest.mark.parametrize("n, folds", [(100, 2), (40, 3), (7, 7)])
def test_folds_are_disjoint_covering_and_balanced(n, folds):
    fold = fold_assignment(n, folds, seed=3)
    assert fold.shape == (n,) and set(fold.tolist()) == set(range(folds))  # each sample one fold
    sizes = np.bincount(fold, minlength=folds)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(fold, fold_assignment(n, folds, seed=3))
    assert n < 10 or not np.array_equal(fold, fold_assignment(n, folds, seed=4))


def _plain_loop(config, x, y, levels=None):
    """An nn.Module trained with torch.optim.Adam on (x, y) in the trainer's batch order, on the
    plain loss or, with levels, on AdaFlood's objective: an independent reference."""
    model = build_model(config.model, (10,), 1, seed=config.seed).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
    n, size = len(y), config.optim.batch_size
    for epoch in range(1, config.optim.epochs + 1):
        order = torch.randperm(n, generator=epoch_generator(config.seed, epoch, 1))
        for start in range(0, n, size):
            batch = order[start:start + size]
            losses = per_sample_loss(model(x[batch]), y[batch], "logistic")
            objective = (losses.mean() if levels is None else
                         flooded_objective(losses, levels[batch], "adaflood"))
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("folds", [2, 3])  # 3: complements of 26 and 27 points, two stacks
def test_auxiliary_models_and_the_run_equal_plain_loops(tmp_path, folds):
    config = tiny_config(epochs=5, dtype="float64", save="last")
    config = dataclasses.replace(config, objective=ObjectiveConfig(
        kind="adaflood", adaflood_folds=folds, adaflood_gamma=0.3))
    run = Run(train([config], out=tmp_path, execution=Execution(progress=False)).paths[0])
    levels, aux, fold = (run.data_array(k) for k in ("flood_levels", "aux_losses", "folds"))
    np.testing.assert_array_equal(fold, fold_assignment(40, folds, config.seed))
    np.testing.assert_allclose(levels, corrected_levels(aux, 0.3), rtol=1e-15)
    data = load(run.config.data, dtype=torch.float64)
    x, y = data.train.x, data.train.y
    for f in range(folds):
        held_out = torch.as_tensor(fold == f)
        model = _plain_loop(run.config, x[~held_out], y[~held_out])
        with torch.no_grad():
            expected = per_sample_loss(model(x[held_out]), y[held_out], "logistic")
        np.testing.assert_allclose(aux[fold == f], expected.numpy(), rtol=1e-9)
    model = _plain_loop(run.config, x, y, torch.as_tensor(levels))
    for key, value in run.state_dict(5).items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=1e-9, atol=1e-12)
    m = run.metrics()
    assert m["flood_level"][-1] == pytest.approx(levels.mean())
    assert 0 < m["ascent_fraction"][-1] < 1
