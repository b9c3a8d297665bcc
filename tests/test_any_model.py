"""The measurements on models this package does not define (landscape.loss_slice, ...,
landscape.flood), fed tensors or a DataLoader whose batch size does not divide the data, checked
against independent computations; and the analyses' command line on a user's own model, weights
and data (--model/--weights/--data)."""

from __future__ import annotations

import math
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analysis_runs import train_pair
from conftest import landscape_cli
from torch import nn
from torch.func import functional_call, hessian
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.analysis.loading import state_at
from landscape.measures.filternorm import parameters_of
from landscape.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")


class ConvNet(nn.Module):
    """Conv + BatchNorm + dropout: the kind of user model the analyses must take."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                      nn.Dropout(0.5))
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


@pytest.fixture
def conv_data():
    torch.manual_seed(0)
    net = ConvNet()
    with torch.no_grad():  # BN statistics that are not the identity
        net.train()(torch.randn(64, 1, 6, 6) * 2 + 0.5)
    net.train()  # the user left it in training mode: the measures must use eval mode anyway
    x, y = torch.randn(37, 1, 6, 6), torch.randint(0, 4, (37,))
    return net, x, y, DataLoader(TensorDataset(x, y), batch_size=8)  # 37 = 4 x 8 + 5


def _loop_loss(net, state, x, y):
    """A hand-written evaluation: load_state_dict into a copy, eval mode, full batch."""
    import copy

    module = copy.deepcopy(net)
    module.load_state_dict(state)
    module.eval()
    with torch.no_grad():
        logits = module(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


def test_slice_points_equal_a_load_state_dict_loop(conv_data):
    net, x, y, loader = conv_data
    got = landscape.loss_slice(net, {"train": loader, "test": (x, y)}, points=5, seed=3)
    assert net.training  # the user's module is left as it was
    d = got.directions[0]
    assert torch.count_nonzero(d["features.0.bias"]) == 0  # biases excluded by default
    for theta, dd in zip(net.features[0].weight.detach(), d["features.0.weight"]):  # filter-normalized
        assert math.isclose(float(dd.norm()), float(theta.norm()), rel_tol=1e-5)
    for i, alpha in enumerate(got.x):
        state = {k: v + alpha * d[k] if k in d else v for k, v in net.state_dict().items()}
        loss, acc = _loop_loss(net, state, x, y)
        for split in ("train", "test"):  # the loader and the tensors are the same data
            assert math.isclose(got[f"{split}_loss"][i], loss, rel_tol=1e-5)
            assert math.isclose(got[f"{split}_acc"][i], acc)
    again = landscape.loss_slice(net, (x, y), points=5, direction=d)  # the direction back in
    np.testing.assert_allclose(again["train_loss"], got["train_loss"], rtol=1e-6)
    stacked = landscape.loss_slice(net, (x, y), points=5, seed=3, stack=3)  # vmap, 3 points a go
    np.testing.assert_allclose(stacked["train_loss"], got["train_loss"], rtol=1e-6)


def test_surface_and_params_given_as_a_state_dict(conv_data):
    net, x, y, _ = conv_data
    other = {k: v * 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    surface = landscape.loss_surface(net, (x, y), params=other, points=3, y_points=2, seed=1)
    assert surface["train_loss"].shape == (2, 3)
    dx, dy = surface.directions
    state = {k: v + 1.0 * dx[k] - 1.0 * dy[k] if k in dx else v for k, v in other.items()}
    assert math.isclose(surface["train_loss"][0, 2], _loop_loss(net, state, x, y)[0],
                        rel_tol=1e-5)  # (alpha, beta) = (1, -1)


def test_gradient_amplitude_equals_a_float64_autograd_computation(conv_data):
    net, x, y, loader = conv_data
    got = landscape.gradient_amplitude(net, loader)
    model = ConvNet().double()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v
                           for k, v in net.state_dict().items()})
    model.eval()
    F.cross_entropy(model(x.double()), y).backward()
    total = 0.0
    for p in model.parameters():
        if p.dim() > 1:  # filters: rows of a linear weight, output channels of a conv weight
            norms = p.detach().flatten(1).norm(dim=1)
            total += float((p.grad.flatten(1) * norms[:, None]).square().sum())
    assert math.isclose(got, math.sqrt(total), rel_tol=1e-5)
    assert math.isclose(landscape.gradient_amplitude(net, (x, y)), got, rel_tol=1e-6)


def _exact_hessian(net, x, y):
    params, buffers = parameters_of(net, net.state_dict())
    shapes = {k: p.shape for k, p in params.items()}

    def loss_of(flat):
        pieces = flat.split([math.prod(s) for s in shapes.values()])
        p = {k: v.reshape(shapes[k]) for k, v in zip(shapes, pieces)}
        return F.cross_entropy(functional_call(net, (p, buffers), (x,)), y)

    return hessian(loss_of)(torch.cat([p.flatten() for p in params.values()]))


def test_top_eigenvalue_and_trace_equal_the_exact_hessian_of_a_user_mlp():
    torch.manual_seed(1)
    net = mlp().double()
    x, y = torch.randn(45, 5, dtype=torch.float64), torch.randint(0, 3, (45,))
    H = _exact_hessian(net.eval(), x, y)
    eigenvalues = torch.linalg.eigvalsh(H)
    top = float(eigenvalues[eigenvalues.abs().argmax()])
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    got = landscape.hessian_top_eigenvalue(net, loader, iterations=3000, tolerance=1e-12)
    assert got == pytest.approx(top, rel=1e-7)
    trace = landscape.hessian_trace(net, (x, y), probes=400, seed=2)
    assert abs(trace.value - float(H.trace())) <= 4 * trace.stderr
    assert trace.stderr < 0.1 * abs(float(H.trace()))  # the test has teeth


def test_average_sharpness_equals_a_loop_over_the_same_directions(conv_data):
    net, x, y, loader = conv_data
    got = landscape.average_sharpness(net, loader, sigma=0.2, draws=3, seed=4)
    base = _loop_loss(net, net.state_dict(), x, y)[0]
    line = landscape.loss_slice(net, (x, y), points=2, span=0.2, seed=4)  # alpha = +-0.2
    first_pair = (line["train_loss"][0] + line["train_loss"][1]) / 2 - base
    assert got.stderr > 0 and np.isfinite(got.value)
    # the first antithetic pair of draws uses the slice's direction for the same seed
    d = line.directions[0]
    plus = _loop_loss(net, {k: v + 0.2 * d[k] if k in d else v
                            for k, v in net.state_dict().items()}, x, y)[0]
    assert math.isclose((plus + _loop_loss(net, {k: v - 0.2 * d[k] if k in d else v for k, v in
                                                 net.state_dict().items()}, x, y)[0]) / 2 - base,
                        first_pair, rel_tol=1e-4, abs_tol=1e-7)


def test_risk_mse_estimates_the_pool_risk_and_the_identity_holds(conv_data):
    net, x, y, loader = conv_data
    check = landscape.risk_mse(net, loader, sample_size=5, samples=400, train=(x[:20], y[:20]))
    assert math.isclose(check.risk, _loop_loss(net, net.state_dict(), x, y)[0], rel_tol=1e-5)
    assert check.holds and set(check.panels) == {"pool", "train"}


def test_flood_and_iflood_are_one_line_drop_ins():
    losses = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    below = landscape.flood(losses.mean(), 0.6)  # J = 0.5 < b: ascent
    below.backward()
    assert math.isclose(float(below.detach()), 0.7) and torch.all(losses.grad < 0)
    with torch.no_grad():
        assert math.isclose(float(landscape.flood(losses.mean(), 0.0)), 0.5)
        assert math.isclose(float(landscape.iflood(losses, 0.6)), (0.5 + 0.1 + 0.3) / 3 + 0.6)


def test_a_run_files_model_through_the_api_equals_landscape_flatness(tmp_path_factory, tmp_path):
    run = train_pair(tmp_path_factory, epochs=10, width=16)[0]
    assert landscape_cli("flatness", run.path, "--points", 5, "--out", tmp_path, "-q").returncode == 0
    _, stored = read_result(tmp_path / f"{run.path.stem}.last.slice.h5", "slice")
    from landscape.analysis.loading import dataset_for, model_for

    data = dataset_for(run, device=torch.device("cpu"))
    model = model_for(run, data, device=torch.device("cpu"))
    got = landscape.loss_slice(model, {"train": (data.train.x, data.train.y),
                                       "test": (data.test.x, data.test.y)}, loss="logistic",
                               params=state_at(run, "last", device=torch.device("cpu")),
                               points=5)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_allclose(got[key], stored[key], rtol=1e-6)
    for name, d in got.directions[0].items():  # the file holds the direction itself
        np.testing.assert_array_equal(stored[f"direction/x/{name}"], d.numpy())


def test_the_cli_on_a_users_model_weights_and_data(user_project):
    folder, usernet = user_project
    user = ["--model", "usernet:make", "--data", "usernet:splits"]
    result = landscape_cli("gradnorm", *user, "--weights", "ckpt/*.ckpt", "--out", "res", "-q",
                           "--skip-epochs", 2)
    assert result.returncode == 0, result.stderr
    attrs, a = read_result(folder / "res" / "gradnorm.h5", "gradnorm")
    assert a["epoch"].tolist() == list(range(1, 13))  # natural order: epoch_2 before epoch_10
    net, data = usernet.make(), usernet.splits()
    state = torch.load(folder / "ckpt" / "epoch_10.ckpt", weights_only=True)["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    assert math.isclose(a["train_grad"][9], landscape.gradient_amplitude(
        net, data["train"], params=state), rel_tol=1e-6)
    assert (folder / "res" / "gradnorm.png").exists()
    again = landscape_cli("gradnorm", *user, "--weights", "ckpt/*.ckpt", "--out", "res", "-q",
                          "--skip-epochs", 2, "--normalization", "layer")
    assert again.returncode == 2 and "--overwrite" in again.stderr  # another result: refused
    some = landscape_cli("gradnorm", *user, "--weights", "ckpt/*.ckpt", "--epochs", "3,10",
                         "--out", "res_some", "-q", "--skip-epochs", 0)
    assert some.returncode == 0, some.stderr
    assert read_result(folder / "res_some" / "gradnorm.h5", "gradnorm")[1]["epoch"].tolist() \
        == [3, 10]
    absent = landscape_cli("gradnorm", *user, "--weights", "ckpt/*.ckpt", "--epochs", "99",
                           "--out", "res_absent", "-q")
    assert absent.returncode == 2 and "no checkpoint of epoch 99" in absent.stderr

    line = landscape_cli("flatness", *user, "--weights", "ckpt/epoch_12.ckpt", "--points", 3,
                         "--out", "res", "-q")
    assert line.returncode == 0, line.stderr
    _, s = read_result(folder / "res" / "epoch_12.slice.h5", "slice")
    api = landscape.loss_slice(net, data, params=state_of(folder, 12), points=3)
    np.testing.assert_allclose(s["test_loss"], api["test_loss"], rtol=1e-6)
    # the same weights under another loss (or model, or data): refused, not resumed
    other = landscape_cli("flatness", *user, "--weights", "ckpt/epoch_12.ckpt", "--points", 3,
                          "--loss", "usernet:squared", "--out", "res", "-q")
    assert other.returncode == 2 and "loss" in other.stderr and "--overwrite" in other.stderr

    sharp = landscape_cli("sharpness", *user, "ckpt/epoch_11.ckpt", "--weights",
                          "ckpt/epoch_12.ckpt", "--probes", 2, "--draws", 2, "--iterations", 20,
                          "--out", "res", "--skip-epochs", 0, "-q")  # a shell's expanded glob
    assert sharp.returncode == 0, sharp.stderr
    _, h = read_result(folder / "res" / "sharpness.h5", "sharpness")
    assert h["epoch"].tolist() == [11, 12] and np.isfinite(h["lambda_max"]).all()

    check = landscape_cli("mse", *user, "--weights", "ckpt/epoch_12.ckpt", "--samples", 50,
                          "--out", "res", "-q")
    assert check.returncode == 0 and "HOLDS" in check.stdout, check.stderr


def state_of(folder, epoch):
    state = torch.load(folder / "ckpt" / f"epoch_{epoch}.ckpt", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items()}


@pytest.mark.parametrize("options, message", [
    (["--model", "nosuchmodule:make"], "no module named 'nosuchmodule'"),
    (["--model", "usernet:absent"], "has no attribute 'absent'"),
    (["--model", "usernet"], "must be MODULE:NAME"),
    (["--loss", "mse"], "--loss must be cross_entropy, logistic or MODULE:NAME"),
    (["--model", "usernet:wrong"], "returned a int, not a torch.nn.Module"),
    (["--data", "usernet:make"], "returned a Sequential"),
    (["--weights", "ckpt/none-*.pt"], "matches no file"),
    (["--weights", "ckpt"], "ckpt is a folder: give its files, e.g. 'ckpt/*.pt'"),
    (["--weights", "bad.pt"], "the model's '0.weight' is not in them"),
    (["--weights", "shape.pt"], "'0.weight' has shape [8, 5] there, [8, 4] in the model"),
    (["--weights", "code.pt"], ("it holds an object of class test_any_model.ConvNet, which "
                                "loading would run code for")),
    (["--weights", "run.h5"], "run.h5 is a landscape run file: pass it as a run (PATHS"),
    (["--weights", "slice.h5"], ("slice.h5 is a landscape result file (landscape-slice), not "
                                 "a PyTorch checkpoint")),
    (["--weights", "arrays.npy"], "arrays.npy is a NumPy array file"),
    (["--weights", "model.safetensors"], "model.safetensors is a safetensors file"),
    (["--weights", "notes.txt"], "notes.txt: not a PyTorch checkpoint"),
])
def test_bad_user_input_is_one_line_and_exit_2(user_project, options, message):
    folder, _ = user_project
    torch.save(nn.Linear(3, 2).state_dict(), folder / "bad.pt")
    state = {k: v for k, v in state_of(folder, 1).items()}
    state["0.weight"] = torch.zeros(8, 5)
    torch.save(state, folder / "shape.pt")
    torch.save({"state_dict": state_of(folder, 1), "why": ConvNet}, folder / "code.pt")
    for name, fmt in (("run.h5", "landscape-run"), ("slice.h5", "landscape-slice")):
        with h5py.File(folder / name, "w") as f:  # what the analyses tell such files by
            f.attrs["format"] = fmt
    np.save(folder / "arrays.npy", np.zeros(3))
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header
                                               + bytes(4))  # the safetensors layout
    (folder / "notes.txt").write_text("epoch 1: loss 0.3\n")
    given = {"--model": "usernet:make", "--data": "usernet:splits",
             "--weights": "ckpt/epoch_1.ckpt"}
    given.update(dict(zip(options[::2], options[1::2])))
    result = landscape_cli("flatness", *[t for kv in given.items() for t in kv], "--points", 3,
                           "--out", "res", "-q")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (folder / "res").exists()  # nothing written
    assert "weights_only=False" not in result.stderr  # torch's hint to load it unsafely


BAD_DATA = """
import torch
from torch.utils.data import DataLoader, TensorDataset

def _pair(width=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(50, width, generator=g), torch.randint(0, 3, (50,), generator=g)

def float_labels():  # a loader's float labels are seen in its first batch
    x, y = _pair()
    return {"train": DataLoader(TensorDataset(x, y.float()), batch_size=7), "test": (x, y)}

def wide_inputs():
    x, y = _pair(width=5)
    return {"train": (x, y), "test": (x, y)}

def one_based_labels():  # classes 1..3 for 3 outputs: only the last row is out of range
    x, y = _pair()
    y[-1] = 3
    return {"train": (x, y), "test": (x, y)}
"""


@pytest.mark.parametrize("factory, message", [
    ("float_labels", ("the train data's labels are float (torch.float32); cross_entropy needs "
                      "integer class labels")),
    ("wide_inputs", ("the model cannot take the train data's inputs of shape [n, 5]: mat1 and "
                     "mat2 shapes cannot be multiplied")),
    ("one_based_labels", "the train data's labels run from 0 to 3, but the model has 3 outputs"),
])
@pytest.mark.parametrize("command", [["flatness", "--points", 3], ["gradnorm"], ["sharpness"],
                                     ["mse"]])
def test_data_that_does_not_fit_the_model_is_one_line(user_project, monkeypatch, command,
                                                      factory, message):
    folder, _ = user_project
    (folder / "baddata.py").write_text(BAD_DATA)
    monkeypatch.delitem(sys.modules, "baddata", raising=False)
    result = landscape_cli(*command, "--model", "usernet:make", "--data", f"baddata:{factory}",
                           "--weights", "ckpt/epoch_12.ckpt", "--out", "res", "-q")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("landscape: error: ")  # not "internal error"
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (folder / "res").exists()


@pytest.mark.parametrize("measure", [
    lambda net, data: landscape.loss_slice(net, data, points=3),
    lambda net, data: landscape.loss_surface(net, {"train": data}, points=2),
    lambda net, data: landscape.gradient_amplitude(net, data),
    lambda net, data: landscape.hessian_top_eigenvalue(net, data),
    lambda net, data: landscape.hessian_trace(net, data),
    lambda net, data: landscape.hessian_eigenvalues(net, data, k=2),
    lambda net, data: landscape.hessian_density(net, data),
    lambda net, data: landscape.average_sharpness(net, data),
    lambda net, data: landscape.risk_mse(net, data, sample_size=5),
])
def test_the_api_names_data_that_does_not_fit_the_model(conv_data, measure):
    from landscape.errors import BadInput

    net, x, y, _ = conv_data
    late = y.clone()
    late[-1] = 4  # 4 outputs: classes 0 to 3
    for data, message in (
            ((x, y.float()), (r"labels are float \(torch.float32\); cross_entropy needs "
                              "integer class labels")),
            (DataLoader(TensorDataset(x, y.double()), batch_size=8),
             r"labels are float \(torch.float64\)"),
            ((x[:, :, :5], y), (r"the model cannot take the (\w+ )?data's inputs of shape "
                                r"\[n, 1, 5, 6\]: ")),
            ((x, late), r"labels run from 0 to 4, but the model has 4 outputs")):
        with pytest.raises(BadInput, match=message):
            measure(net, data)
    assert net.training  # the user's module is left as it was


def test_a_loss_function_that_cannot_take_the_labels_is_named(conv_data):
    from landscape.errors import BadInput

    net, x, y, _ = conv_data

    def squared(logits, target):
        return ((logits - target) ** 2).sum(-1)

    with pytest.raises(BadInput, match=r"the loss squared cannot take the model's outputs "
                       r"\(shape \[2, 4\]\) with the train data's labels \(shape \[2\]"):
        landscape.loss_slice(net, (x, y.float()), loss=squared, points=3)
    with pytest.raises(BadInput, match="the model returns a dict, not a tensor"):
        landscape.loss_slice(DictNet(), (x.flatten(1), y), points=3)


class DictNet(nn.Module):
    """A model whose forward returns a dict (as Hugging Face models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(36, 4)

    def forward(self, x):
        return {"logits": self.head(x)}


def test_loader_and_tensors_agree_and_bad_api_input_is_bad_input(conv_data):
    net, x, y, loader = conv_data
    from landscape.errors import BadInput

    assert math.isclose(landscape.hessian_top_eigenvalue(net, loader, seed=1),
                        landscape.hessian_top_eigenvalue(net, (x, y), seed=1), rel_tol=1e-4)
    with pytest.raises(BadInput, match="one loss per sample"):
        landscape.loss_slice(net, (x, y), loss=lambda z, t: F.cross_entropy(z, t), points=3)
    with pytest.raises(BadInput, match="pair"):
        landscape.gradient_amplitude(net, 3)
    with pytest.raises(BadInput, match="do not fit"):
        landscape.loss_slice(net, (x, y), params={"w": torch.zeros(1)})


def test_mse_on_a_checkpoint_reports_its_epoch_not_its_file_name(user_project):
    folder, _ = user_project
    user = ["--model", "usernet:make", "--data", "usernet:splits", "--samples", 20, "-q"]
    numbered = landscape_cli("mse", *user, "--weights", "ckpt/epoch_12.ckpt", "--out", "a")
    assert "g = ckpt/epoch_12.ckpt at epoch 12; R = " in numbered.stdout, numbered.stderr
    (folder / "final.ckpt").write_bytes((folder / "ckpt" / "epoch_12.ckpt").read_bytes())
    unnumbered = landscape_cli("mse", *user, "--weights", "final.ckpt", "--out", "b")
    assert "g = final.ckpt; R = " in unnumbered.stdout, unnumbered.stderr  # no epoch to say


@pytest.fixture
def drawn(monkeypatch):
    """The figures as they are saved."""
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def test_checkpoint_figures_draw_every_epoch_and_claim_no_flooding_or_early_stop(user_project,
                                                                                 drawn):
    """Checkpoints of a flooded model: not Fig. 4's "+" (without flooding), no early-stopping
    marker promised, and no epochs left out by the paper's 500-epoch default."""
    import csv

    user = ["--model", "usernet:make", "--data", "usernet:splits", "--format", "png", "-q"]
    commands = {"gradnorm": ["--weights", "ckpt/*.ckpt"],
                "sharpness": ["--weights", "ckpt/epoch_[1-3].ckpt", "--iterations", 3,
                              "--probes", 1, "--draws", 1]}
    for command, options in commands.items():
        result = landscape_cli(command, *user, *options, "--out", command)
        assert result.returncode == 0, result.stderr
        legend = drawn[-1].axes[0].get_legend()
        count = 12 if command == "gradnorm" else 3
        assert [t.get_text() for t in legend.get_texts()] == [f"ckpt ({count} checkpoints)"]
        assert [h.get_marker() for h in legend.legend_handles] == ["x"]
        title = drawn[-1].get_suptitle()
        assert "every epoch" in title and "early-stopping" not in title, title
        with open(user_project[0] / command / f"{command}.csv") as f:
            assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, count + 1))
    redrawn = landscape_cli("figures", "gradnorm/gradnorm.h5", "--section", "5.2", "--out",
                            "fig", "--format", "png")
    assert redrawn.returncode == 0, redrawn.stderr
    assert "every epoch" in drawn[-1].get_suptitle()
