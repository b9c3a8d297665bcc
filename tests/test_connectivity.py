"""Mode connectivity (issue 25): the linear path and its barrier, a fitted Bezier curve or polygonal
chain, and `landscape connect`, each checked against an independent computation."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analysis_runs import train_pair
from conftest import landscape_cli, one_line_error, tiny_config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.config.execution import Execution
from landscape.measures.connectivity import barrier
from landscape.results import read_result
from landscape.training.planner import train

pytestmark = pytest.mark.usefixtures("one_thread")


def bn_net() -> nn.Module:
    """BatchNorm in two places, dropout after the last one (train-mode re-estimation then sees
    no random draws before a BatchNorm)."""
    return nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 8),
                         nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def two_bn_models():
    """Two differently trained BatchNorm models (running statistics not the identity) and data:
    the training split as a DataLoader whose batch size does not divide it."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 5, generator=g) * 1.5 + 0.3, torch.randint(0, 3, (60,), generator=g)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = bn_net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.3)
        for _ in range(15):
            optimizer.zero_grad()
            F.cross_entropy(net(x[:37]), y[:37]).backward()
            optimizer.step()
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    data = {"train": DataLoader(TensorDataset(x[:37], y[:37]), batch_size=8),
            "test": (x[37:], y[37:])}
    return net, states[0], states[1], data, (x[:37], y[:37]), (x[37:], y[37:])


def _slow_point(net, state, train, *, recompute):
    """load_state_dict into a copy of the module; with `recompute`, reset the BatchNorm running
    statistics and re-estimate them by forward passes in train mode with momentum None (a
    cumulative average) over the training data; then evaluate in eval mode."""
    module = copy.deepcopy(net)
    module.load_state_dict(state)
    if recompute:
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.reset_running_stats()
                m.momentum = None
        module.train()
        with torch.no_grad():
            module(train[0])  # the dropout comes after every BatchNorm: they see no draws
    return module.eval()


def _loss_acc(module, x, y):
    with torch.no_grad():
        logits = module(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


@pytest.mark.parametrize("bn", ["recompute", "keep"])
def test_interpolation_equals_a_load_state_dict_loop(two_bn_models, bn):
    net, a, b, data, train, test = two_bn_models
    net.train()  # left in training mode by its user
    before = copy.deepcopy(net.state_dict())
    path = landscape.interpolate(net, a, b, data, points=5, bn=bn)
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    np.testing.assert_array_equal(path.t, [0, 0.25, 0.5, 0.75, 1])
    for i, t in enumerate(path.t):
        state = {k: (1 - t) * a[k] + t * b[k] if a[k].is_floating_point() else a[k] for k in a}
        module = _slow_point(net, state, train, recompute=bn == "recompute")
        for split, (x, y) in (("train", train), ("test", test)):
            loss, acc = _loss_acc(module, x, y)
            assert np.isclose(path[f"{split}_loss"][i], loss, rtol=1e-5, atol=1e-7), (t, split)
            assert path[f"{split}_acc"][i] == pytest.approx(acc)
    losses = path["train_loss"]
    assert path.barrier == pytest.approx(np.max(losses - (1 - path.t) * losses[0]
                                                - path.t * losses[-1]))
    assert path.error_barrier == barrier(path.t, 1 - path["train_acc"])
    if bn == "keep":  # the endpoints are the two models themselves, running statistics included
        for state, i in ((a, 0), (b, -1)):
            loss, _ = _loss_acc(_slow_point(net, state, train, recompute=False), *test)
            assert path["test_loss"][i] == pytest.approx(loss, rel=1e-6)


def test_barrier_of_a_hand_made_loss_curve():
    t = np.linspace(0, 1, 5)
    assert barrier(t, [1.0, 2.0, 4.0, 3.0, 3.0]) == 2.0      # 4 against the chord's 2 at t = 1/2
    assert barrier(t, [3.0, 1.0, 1.0, 1.0, 1.0]) == 0.0      # below the chord: no barrier
    assert barrier(t, [0.5, 0.5, 0.9, 0.5, 0.5]) == pytest.approx(0.4)
    assert np.isnan(barrier(t, [0.1, np.nan, 0.2, 0.1, 0.1]))


def test_curve_endpoints_are_the_two_models_exactly(two_bn_models):
    net, a, b, data, _, _ = two_bn_models
    line = landscape.interpolate(net, a, b, data, points=3)
    for kind in ("bezier", "polychain"):
        curve = landscape.fit_curve(net, a, b, data, kind=kind, epochs=3, batch_size=16,
                                    points=3)
        for key in a:
            assert torch.equal(curve.point(0)[key], a[key]), (kind, key)
            assert torch.equal(curve.point(1)[key], b[key]), (kind, key)
        assert not torch.equal(curve.bend["0.weight"], (a["0.weight"] + b["0.weight"]) / 2)
        for key in ("train_loss", "test_loss"):  # the same two models at the ends of both paths
            assert curve.path[key][[0, -1]].tolist() == line[key][[0, -1]].tolist()
        assert len(curve.objective) == 3 and np.isfinite(curve.objective).all()
    mid = curve.point(0.5)  # the polygonal chain passes through its bend
    assert torch.equal(mid["0.weight"], curve.bend["0.weight"])


def permuted_mlps():
    """A small MLP trained on three rings, and a copy with its hidden units permuted: the same
    function, but the linear path between them averages unrelated units."""
    g = torch.Generator().manual_seed(0)
    n = 450
    ring = torch.randint(0, 3, (n,), generator=g)
    angle = torch.rand(n, generator=g) * 2 * np.pi
    radius = ring + 0.5 + 0.12 * torch.randn(n, generator=g)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(net(x[:300]), ring[:300]).backward()
        optimizer.step()
    a = {k: v.detach().clone() for k, v in net.state_dict().items()}
    perm = torch.roll(torch.arange(16), 5)
    b = {"0.weight": a["0.weight"][perm], "0.bias": a["0.bias"][perm],
         "2.weight": a["2.weight"][:, perm], "2.bias": a["2.bias"]}
    return net, a, b, {"train": (x[:300], ring[:300]), "test": (x[300:], ring[300:])}


def test_a_bezier_bend_lowers_a_permutation_barrier():
    net, a, b, data = permuted_mlps()
    line = landscape.interpolate(net, a, b, data, points=11)
    ends = line["train_loss"][[0, -1]]
    assert ends[0] == pytest.approx(ends[1], rel=1e-5)  # one function, two weight vectors
    assert line["train_loss"][5] > 5 * ends[0] + 0.3 and line.barrier > 0.3
    curve = landscape.fit_curve(net, a, b, data, kind="bezier", epochs=30, points=11)
    assert curve.path["train_loss"][5] < line["train_loss"][5] / 3
    assert curve.path.barrier < line.barrier / 3
    assert curve.path.error_barrier <= line.error_barrier


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory)


def test_connect_on_run_files_end_to_end(pair, tmp_path):
    plain, flooded = pair
    args = ("connect", plain.path, flooded.path, "--points", 5, "--curve-epochs", 2, "-q",
            "--out", tmp_path)
    result = landscape_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "linear path barrier: train loss" in result.stdout
    attrs, arrays = read_result(tmp_path / "connect.h5", "connect")
    for i, run in ((0, plain), (-1, flooded)):  # the ends: each run's own recorded numbers
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert np.isclose(arrays[f"linear/{key}"][i], run.metrics()[key][-1], rtol=1e-5)
            assert arrays[f"curve/{key}"][i] == arrays[f"linear/{key}"][i]
    data = plain.dataset()
    api = landscape.interpolate(plain.model(), plain.state_dict(10), flooded.state_dict(10),
                                {"train": data.train, "test": data.test}, points=5,
                                loss=plain.config.objective.loss)
    np.testing.assert_allclose(arrays["linear/test_loss"], api["test_loss"], rtol=1e-6)
    assert attrs["linear_train_loss_barrier"] == pytest.approx(api.barrier)
    assert attrs["epoch_a"] == "10" and attrs["curve"] == "bezier"
    for ext in ("pdf", "png", "csv"):
        assert (tmp_path / f"connect.{ext}").stat().st_size > 0
    drawn = landscape_cli("figures", tmp_path, "--section", "connect", "--out", tmp_path / "figs")
    assert drawn.returncode == 0, drawn.stderr  # redrawn from the stored result alone
    assert (tmp_path / "figs" / "connect.csv").read_text() == (tmp_path / "connect.csv").read_text()
    created = attrs["created"]
    again = landscape_cli(*args)  # the same inputs and parameters: the result is reused
    assert again.returncode == 0 and read_result(tmp_path / "connect.h5",
                                                 "connect")[0]["created"] == created
    one_line_error(landscape_cli(*args, "--bn", "keep"), "--overwrite")
    replaced = landscape_cli(*args, "--curve", "none", "--overwrite", "--epoch-a", 3)
    assert replaced.returncode == 0, replaced.stderr
    attrs, arrays = read_result(tmp_path / "connect.h5", "connect")
    assert attrs["epoch_a"] == "3" and "curve/train_loss" not in arrays
    one_run = landscape_cli("connect", plain.path, "--epoch-a", 2, "--curve", "none",
                            "--points", 3, "-q", "--out", tmp_path / "one")
    assert one_run.returncode == 0, one_run.stderr  # two epochs of one training


def test_connect_bad_input_is_one_line_and_exit_2(pair, tmp_path):
    plain, flooded = pair
    out = ("--out", tmp_path / "res", "-q", "--points", 3)
    one_line_error(landscape_cli("connect", plain.path, plain.path, *out), "given twice")
    twin = tmp_path / "copy.h5"
    shutil.copy(plain.path, twin)
    one_line_error(landscape_cli("connect", plain.path, twin, *out), "identical weights")
    one_line_error(landscape_cli("connect", plain.path, tmp_path / "absent.h5", *out),
                    "no such file")
    one_line_error(landscape_cli("connect", plain.path, flooded.path, twin, *out),
                    "takes two models")
    one_line_error(landscape_cli("connect", plain.path, flooded.path, "--epoch-a", "first",
                                  *out), "--epoch-a must be an epoch number")
    (narrow,) = train([tiny_config(width=8, epochs=1)], out=tmp_path / "narrow",
                      execution=Execution(device="cpu", progress=False)).paths
    one_line_error(landscape_cli("connect", plain.path, narrow, *out),
                    "different architectures")
    assert not (tmp_path / "res").exists()  # nothing written


def test_connect_on_a_users_checkpoints(user_project):
    folder, usernet = user_project
    user = ("connect", "--model", "usernet:make", "--data", "usernet:splits", "--out", "res",
            "-q", "--points", 5)
    result = landscape_cli(*user, "--weights", "ckpt/epoch_3.ckpt", "ckpt/epoch_12.ckpt",
                           "--curve-epochs", 2)
    assert result.returncode == 0, result.stderr
    attrs, arrays = read_result(folder / "res" / "connect.h5", "connect")
    states = [{k.removeprefix("model."): v for k, v in torch.load(
        folder / "ckpt" / f"epoch_{e}.ckpt", weights_only=True)["state_dict"].items()}
        for e in (3, 12)]
    api = landscape.interpolate(usernet.make(), *states, usernet.splits(), points=5)
    for key in ("train_loss", "test_loss", "test_acc"):
        np.testing.assert_allclose(arrays[f"linear/{key}"], api[key], rtol=1e-6)
    assert attrs["label_a"] == "epoch_3.ckpt" and "curve/bend/0.weight" in arrays
    assert (folder / "res" / "connect.png").exists()
    one_line_error(landscape_cli(*user, "--weights", "ckpt/epoch_3.ckpt", "ckpt/epoch_3.ckpt"),
                    "one file given twice")
    torch.save({"state_dict": states[0]}, folder / "same.ckpt")
    one_line_error(landscape_cli(*user, "--weights", "ckpt/epoch_3.ckpt", "same.ckpt"),
                    "identical weights")
    wide = dict(states[0], **{"0.weight": torch.zeros(9, 4)})
    torch.save(wide, folder / "wide.pt")
    one_line_error(landscape_cli(*user, "--weights", "ckpt/epoch_3.ckpt", "wide.pt"),
                    "has shape [9, 4] there, [8, 4] in the model")
    one_line_error(landscape_cli(*user, "--weights", "ckpt/epoch_3.ckpt", "absent.pt"),
                    "no such file")
