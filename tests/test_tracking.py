"""landscape.Tracker in a user's own loop: the tracked values equal the measures called afterwards
on the saved weights with the same rows, `every` picks the right steps, Adam's preconditioned
sharpness equals the top eigenvalue of the dense D^1/2 H D^1/2 built from an exact Hessian, and
the CSV and HDF5 files read back equal."""

from __future__ import annotations

import copy
import csv
import math

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.errors import BadInput
from landscape.measures.tracking import preconditioned_sharpness

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"top_eigenvalue": {"iterations": 20}, "trace": {"probes": 8}}


def mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def data(n=40, dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=generator, dtype=dtype), torch.randint(
        0, 3, (n,), generator=generator)


def train(model, optimizer, tracker, x, y, steps):
    """A plain loop; the state dict at every step the tracker measured, by step."""
    saved = {}
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if tracker.step(optimizer) is not None:
            saved[step] = copy.deepcopy(model.state_dict())
    return saved


def test_tracked_values_equal_the_measures_on_the_saved_weights():
    model, (x, y) = mlp(), data()
    tracker = landscape.Tracker(model, (x, y), every=2, samples=16, seed=3, options=FAST)
    rows = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:16]
    assert torch.equal(tracker.data[0], x[rows]) and torch.equal(tracker.data[1], y[rows])
    saved = train(model, torch.optim.SGD(model.parameters(), lr=0.5), tracker, x, y, 6)
    assert list(saved) == tracker.history["step"] == [2, 4, 6]
    subset = (x[rows], y[rows])  # the same rows at every step
    for i, state in enumerate(saved.values()):
        assert tracker.history["top_eigenvalue"][i] == landscape.hessian_top_eigenvalue(
            model, subset, params=state, iterations=20, seed=3)
        assert tracker.history["trace"][i] == landscape.hessian_trace(
            model, subset, params=state, probes=8, seed=3).value
        assert tracker.history["gradient_amplitude"][i] == landscape.gradient_amplitude(
            model, subset, params=state)
        assert tracker.history["threshold"][i] == pytest.approx(2 / 0.5)
    values = tracker.history["top_eigenvalue"]
    assert len(set(values)) == 3  # the weights moved between the measured steps


def test_every_measures_on_exactly_every_nth_call_and_a_loader_keeps_its_first_rows():
    model, (x, y) = mlp(), data()
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    tracker = landscape.Tracker(model, loader, measures="gradient_amplitude", every=3,
                                samples=10)
    first = tracker.data
    assert first[0].shape == (10, 3) and first[1].shape == (10,)
    returned = [tracker.step() for _ in range(10)]
    assert [i + 1 for i, r in enumerate(returned) if r is not None] == [3, 6, 9]
    assert tracker.history["step"] == [3, 6, 9] and tracker.data is first
    assert returned[2] == {"gradient_amplitude": tracker.history["gradient_amplitude"][0]}
    ordered = landscape.Tracker(model, DataLoader(TensorDataset(x, y), batch_size=4),
                                measures="trace", samples=10)
    assert torch.equal(ordered.data[0], x[:10]) and torch.equal(ordered.data[1], y[:10])


def dense_preconditioned(model, x, y, optimizer) -> float:
    """lambda_max(|.|) of D^1/2 H D^1/2 from torch.autograd.functional.hessian and Adam's state."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(w):
        pieces = dict(zip(names, (t.view(s) for t, s in zip(
            w.split([math.prod(s) for s in shapes]), shapes))))
        return F.cross_entropy(functional_call(model, pieces, (x,)), y)

    h = torch.autograd.functional.hessian(loss, flat)                  # [N, N]
    group = optimizer.param_groups[0]
    (beta1, beta2), eps = group["betas"], group["eps"]
    d = []
    for p in model.parameters():
        state = optimizer.state[p]
        t = float(state["step"])
        v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
        d.append((1 / ((1 - beta1 ** t) * (torch.sqrt(v / (1 - beta2 ** t)) + eps))).reshape(-1))
    root = torch.cat(d).sqrt()
    eigenvalues = torch.linalg.eigvalsh(root[:, None] * h * root[None, :])
    return float(eigenvalues[eigenvalues.abs().argmax()])


@pytest.mark.parametrize("kind", ["adam", "adamw_amsgrad"])
def test_preconditioned_sharpness_equals_the_dense_matrix(kind):
    model, (x, y) = mlp(torch.float64), data(dtype=torch.float64)
    optimizer = (torch.optim.Adam(model.parameters(), lr=0.01) if kind == "adam" else
                 torch.optim.AdamW(model.parameters(), lr=0.02, betas=(0.8, 0.99),
                                   amsgrad=True))
    tracker = landscape.Tracker(model, (x, y), measures="gradient_amplitude", every=4,
                                options={"preconditioned_sharpness": {
                                    "iterations": 3000, "tolerance": 1e-12}})
    train(model, optimizer, tracker, x, y, 8)
    assert tracker.history["step"] == [4, 8]
    value = tracker.history["preconditioned_sharpness"][-1]
    assert value == pytest.approx(dense_preconditioned(model, x, y, optimizer), rel=1e-6)
    beta1, lr = optimizer.param_groups[0]["betas"][0], optimizer.param_groups[0]["lr"]
    assert tracker.history["threshold"][-1] == pytest.approx((2 + 2 * beta1) / ((1 - beta1) * lr))
    if kind == "adam":
        assert tracker.history["threshold"][-1] == pytest.approx(38 / 0.01)


def test_preconditioned_sharpness_with_the_identity_is_the_top_eigenvalue():
    model, (x, y) = mlp(), data()
    ones = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    # the same iteration up to rounding: the Hessian adds its product into the iteration's
    # vector (matmat's add_to), where the wrapping operator adds a finished product
    assert preconditioned_sharpness(model, (x, y), ones, iterations=20) == pytest.approx(
        landscape.hessian_top_eigenvalue(model, (x, y), iterations=20), rel=1e-6)


def test_thresholds_of_sgd_with_momentum():
    model, (x, y) = mlp(), data()
    for optimizer, expected in [
            (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 3.8 / 0.1),
            (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5, nesterov=True),
             3 / (0.1 * 2))]:
        tracker = landscape.Tracker(model, (x, y), measures="gradient_amplitude")
        assert tracker.step(optimizer)["threshold"] == pytest.approx(expected)


def test_the_writers_round_trip(tmp_path):
    model, (x, y) = mlp(), data()
    tracker = landscape.Tracker(model, (x, y), measures=("gradient_amplitude", "trace"),
                                samples=12, options={"trace": {"probes": 4}})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    tracker.step()
    train(model, optimizer, tracker, x, y, 2)   # a column that starts later: NaN before
    assert math.isnan(tracker.history["threshold"][0])
    written = tracker.to_csv(tmp_path / "deep" / "track.csv")
    with open(written, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(tracker.history)
    for name, column in zip(rows[0], zip(*rows[1:])):
        back = [int(v) if name == "step" else float(v) for v in column]
        np.testing.assert_array_equal(back, tracker.history[name])  # NaN equals NaN here
    tracker.to_hdf5(tmp_path / "track.h5")
    with h5py.File(tmp_path / "track.h5", "r") as f:
        assert f.attrs["format"] == "landscape-tracking" and f.attrs["samples"] == 12
        for name, column in tracker.history.items():
            np.testing.assert_array_equal(f[name][()], column)
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("kwargs, message", [
    ({"measures": ("top_eigenvalue", "sharpness")}, "unknown measure 'sharpness'"),
    ({"every": 0}, "every must be an integer >= 1"),
    ({"samples": 0}, "samples must be an integer >= 1"),
    ({"samples": 41}, "at most the data's 40 rows"),
    ({"options": {"trace": {"probes": 4}}, "measures": "top_eigenvalue"}, "not tracked"),
    ({"options": {"trace": {"probe": 4}}}, "trace takes no option 'probe'"),
    ({"loss": "hinge"}, "unknown loss"),
])
def test_bad_input_is_one_line(kwargs, message):
    with pytest.raises(BadInput, match=message):
        landscape.Tracker(mlp(), data(), **kwargs)


def test_bad_optimizers_and_paths(tmp_path):
    model, (x, y) = mlp(), data()
    tracker = landscape.Tracker(model, (x, y), measures="gradient_amplitude")
    with pytest.raises(BadInput, match="after optimizer.step"):
        tracker.step(torch.optim.Adam(model.parameters()))
    with pytest.raises(BadInput, match="SGD, Adam and AdamW, not RMSprop"):
        tracker.step(torch.optim.RMSprop(model.parameters()))
    (tmp_path / "file").write_text("")
    for path, message in [(tmp_path, "it is a folder"), (tmp_path / "file" / "a" / "t.csv",
                                                         "is not a folder")]:
        for write in (tracker.to_csv, tracker.to_hdf5):
            with pytest.raises(BadInput, match=message):
                write(path)
