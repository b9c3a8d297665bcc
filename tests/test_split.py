"""The split trace tr H = tr G + tr R (measures/split.py) against dense float64 matrices from
torch.func.hessian and the Jacobians, and the graph check it rests on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.utils.data import DataLoader

import landscape
from landscape.errors import BadInput
from landscape.measures.objective import AffineBatchNorm
from landscape.measures.operators import HessianOperator
from landscape.measures.split import (
    ggn_diagonal,
    ggn_trace,
    linearized,
    piecewise_linear,
    split_diagonal,
    split_trace,
)
from landscape.measures.trace import hutchinson_trace


def _relu_cnn() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(3, 2, 1), nn.LeakyReLU(0.1),
                        nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).double().eval()
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net


def _tanh_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()


def _dense(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss) -> tuple:
    """(H, G) of the mean loss over all parameters: torch.func.hessian, and the Jacobian of
    the outputs with each sample's loss Hessian by its output."""
    params = dict(net.named_parameters())
    fixed = {**{k: v.detach() for k, v in params.items()}, **dict(net.named_buffers())}
    shapes = [p.shape for p in params.values()]

    def outputs(flat):
        pieces = flat.split([math.prod(s) for s in shapes])
        return functional_call(net, {**fixed, **{k: t.reshape(s) for k, t, s in zip(
            params, pieces, shapes)}}, (x,))

    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
    H = hessian(lambda flat: loss(outputs(flat), y).mean())(theta)
    J = jacrev(outputs)(theta).reshape(len(x), -1, len(theta))                  # [n, d, N]
    out = outputs(theta).detach()
    H_out = torch.stack([hessian(lambda z: loss(z[None], y[i:i + 1]).sum())(out[i]).reshape(
        J.shape[1], J.shape[1]) for i in range(len(x))])                         # [n, d, d]
    return H, torch.einsum("ika,ikl,ilb->ab", J, H_out, J) / len(x)


def _ce(z, y):
    return F.cross_entropy(z, y, reduction="none")


def _mse(z, y):
    return ((z - y) ** 2).sum(1)


@pytest.mark.parametrize("kind", ["relu_cnn", "tanh_mlp"])
def test_the_ggn_trace_is_the_dense_ggns_and_the_residual_is_h_minus_g(kind, monkeypatch):
    torch.manual_seed(3)
    if kind == "relu_cnn":
        net, x = _relu_cnn(), torch.randn(9, 1, 4, 4, dtype=torch.float64)
        y, loss, named = torch.randint(0, 3, (9,)), _ce, "cross_entropy"
    else:  # a loss of three outputs that is not cross-entropy
        net, x = _tanh_mlp(), torch.randn(11, 4, dtype=torch.float64)
        y, loss, named = torch.randn(11, 3, dtype=torch.float64), _mse, _mse
    H, G = _dense(net, x, y, loss)
    operator = HessianOperator(net, (x, y), loss=named)
    assert ggn_trace(operator) == pytest.approx(float(G.trace()), rel=1e-10)
    found = torch.cat([t.reshape(-1) for t in ggn_diagonal(operator).values()])
    torch.testing.assert_close(found, G.diagonal(), rtol=1e-9, atol=1e-12)
    # chunks of per-sample Jacobians (the layer rules off) of any size (here 2 rows) alike
    monkeypatch.setattr("landscape.measures.layerrules._rule", lambda module: None)
    monkeypatch.setattr("landscape.measures.split.JACOBIAN_NUMBERS", 2 * 3 * len(H))
    assert ggn_trace(operator) == pytest.approx(float(G.trace()), rel=1e-10)
    residual = HessianOperator.on(linearized(operator.objective))
    R = residual.matmat(torch.eye(len(H), dtype=torch.float64))
    torch.testing.assert_close(R, H - G, rtol=1e-8, atol=1e-10)


def test_piecewise_linear_models_get_the_exact_hessian_trace():
    """ReLU, leaky ReLU, max pooling, convolutions and BatchNorm in eval mode: the Hessian's
    diagonal is the GGN's, so the split trace is tr H itself, with no product and no error."""
    torch.manual_seed(4)
    net, x = _relu_cnn(), torch.randn(9, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    H, G = _dense(net, x, y, _ce)
    assert float((H - G).diagonal().abs().max()) < 1e-12       # the premise, independently
    assert float((H - G).abs().max()) > 1e-3                   # while R itself is not zero
    operator = HessianOperator(net, (x, y))
    found = split_trace(operator, probes=50)
    assert found.value == pytest.approx(float(H.trace()), rel=1e-10)
    assert found.stderr == 0.0 and operator.products == 0
    root = landscape.hessian_trace(net, (x, y), method="split")
    assert root.value == pytest.approx(float(H.trace()), rel=1e-10)


def test_the_split_diagonal_and_layer_traces_are_exact_for_piecewise_linear_models():
    torch.manual_seed(4)
    net, x = _relu_cnn(), torch.randn(9, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    H, _ = _dense(net, x, y, _ce)
    found = split_diagonal(HessianOperator(net, (x, y)))
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in found.value.values()]),
                               H.diagonal(), rtol=1e-9, atol=1e-12)
    assert all(float(t.abs().max()) == 0 for t in found.stderr.values())
    layers = landscape.layer_curvature(HessianOperator(net, (x, y)), trace=split_trace)
    start = 0
    for name, module in net.named_children():
        size = sum(p.numel() for p in module.parameters())
        if size:
            block = H[start:start + size, start:start + size]
            assert layers[name].trace == (pytest.approx(float(block.trace()), rel=1e-9), 0.0)
            start += size
    assert start == len(H)


def test_curved_models_estimate_the_rest_with_a_smaller_error():
    torch.manual_seed(5)
    net, x = _tanh_mlp(), torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    H, G = _dense(net, x, y, _ce)
    operator = HessianOperator(net, (x, y))
    found = split_trace(operator, probes=400, seed=1)
    plain = hutchinson_trace(operator, probes=400, seed=1)
    assert abs(found.value - float(H.trace())) < 4 * found.stderr
    assert 0 < found.stderr < plain.stderr
    # the variance is R's: 2 (|R|_F^2 - sum R_ii^2) over the probes, within sampling error
    R = H - G
    expected = math.sqrt(2 * float((R ** 2).sum() - (R.diagonal() ** 2).sum()) / 400)
    assert found.stderr == pytest.approx(expected, rel=0.25)
    # the diagonal: G's exact plus Bekas et al.'s estimate of R's, each entry within its error
    entries = split_diagonal(operator, probes=400, seed=2)
    value = torch.cat([t.reshape(-1) for t in entries.value.values()])
    stderr = torch.cat([t.reshape(-1) for t in entries.stderr.values()])
    assert bool(((value - H.diagonal()).abs() <= 4.5 * stderr + 1e-12).all())
    plain = landscape.diagonal(operator, probes=400, seed=2)
    assert float(stderr.sum()) < float(sum(t.sum() for t in plain.stderr.values()))


def test_hutchinson_stops_at_the_standard_error_asked_for():
    torch.manual_seed(6)
    net, x = _tanh_mlp(), torch.randn(20, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    full = HessianOperator(net, (x, y))
    everything = hutchinson_trace(full, probes=64, seed=2)
    assert full.products == 64
    early = HessianOperator(net, (x, y))
    stopped = hutchinson_trace(early, probes=64, seed=2, stderr=10 * everything.stderr)
    assert early.products == 16  # two blocks of 8, the least it stops after
    exact = HessianOperator(net, (x, y))
    assert hutchinson_trace(exact, probes=64, seed=2, stderr=0.0) == everything
    assert stopped.stderr <= 10 * everything.stderr
    with pytest.raises(BadInput):
        hutchinson_trace(full, probes=8, stderr=-1.0)


class _Square(nn.Module):
    def forward(self, x):
        return x * x


class _Tied(nn.Module):
    """An embedding whose transpose is the head: one weight reaching a product twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)

    def forward(self, ids):
        return self.embed(ids).mean(1) @ self.embed.weight.T


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(2, 2)

    def forward(self, x):
        h = x + self.b(F.relu(self.a(x)))
        return self.head(F.adaptive_avg_pool1d(F.hardtanh(h)[:, None], 2).flatten(1) / 2)


@pytest.mark.parametrize("build, inputs, expected", [
    (lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)),
     lambda: torch.randn(5, 4), True),
    (_Residual, lambda: torch.randn(5, 4), True),
    (_relu_cnn, lambda: torch.randn(5, 1, 4, 4, dtype=torch.float64), True),
    (lambda: nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 2)),
     lambda: torch.randn(5, 4), False),
    (lambda: nn.Sequential(nn.Linear(4, 6), _Square(), nn.Linear(6, 2)),
     lambda: torch.randn(5, 4), False),
    (_Tied, lambda: torch.randint(0, 7, (5, 3)), False),
    (lambda: nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True).train(),
     lambda: torch.randn(5, 3, 4), False),  # (its fused inference path has no graph to read)
    (lambda: _relu_cnn().train(), lambda: torch.randn(5, 1, 4, 4, dtype=torch.float64),
     False),  # BatchNorm over the batch's statistics
])
def test_the_graph_check_tells_piecewise_linear_models_from_curved_ones(build, inputs,
                                                                        expected):
    torch.manual_seed(7)
    net = build()
    with AffineBatchNorm():  # as the operators run a model: eval BatchNorm as its affine map
        out = net(inputs())
    assert piecewise_linear(out, list(net.parameters())) is expected


def test_the_check_is_about_the_chosen_parameters_only():
    """A tanh network is linear in its last layer's parameters: with those alone, the split
    trace of their block is exact and equals the dense block's trace."""
    torch.manual_seed(8)
    net, x = _tanh_mlp(), torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    out = net(x)
    assert not piecewise_linear(out, list(net.parameters()))
    assert piecewise_linear(out, list(net[2].parameters()))
    H, _ = _dense(net, x, y, _ce)
    last = slice(4 * 5 + 5, None)
    found = split_trace(HessianOperator(net, (x, y), wrt=["2.weight", "2.bias"]))
    assert found.stderr == 0.0
    assert found.value == pytest.approx(float(H[last, last].trace()), rel=1e-10)


def test_dict_batches_and_their_loss_callable(monkeypatch):
    torch.manual_seed(9)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(9, 4), nn.Linear(4, 3)

        def forward(self, input_ids):
            return self.head(torch.relu(self.embed(input_ids)).mean(1))

    net = Net().double().eval()
    ids, labels = torch.randint(0, 9, (10, 5)), torch.randint(0, 3, (10,))
    rows = [{"input_ids": i, "labels": t} for i, t in zip(ids, labels)]
    loader = DataLoader(rows, batch_size=4)
    by_sample = lambda output, batch: F.cross_entropy(output, batch["labels"],  # noqa: E731
                                                      reduction="none")
    found = split_trace(HessianOperator(net, loader, loss=by_sample))
    monkeypatch.setattr("landscape.measures.layerrules.RULE_NUMBERS", 2 * 3 * 3)  # 1-row chunks
    assert split_trace(HessianOperator(net, loader, loss=by_sample)).value == pytest.approx(
        found.value, rel=1e-12)
    params = dict(net.named_parameters())
    shapes = [p.shape for p in params.values()]
    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def mean_loss(flat):
        pieces = flat.split([math.prod(s) for s in shapes])
        out = functional_call(net, {k: t.reshape(s) for k, t, s in zip(params, pieces, shapes)},
                              (ids,))
        return F.cross_entropy(out, labels)

    assert found.stderr == 0.0
    assert found.value == pytest.approx(float(hessian(mean_loss)(theta).trace()), rel=1e-10)


def test_bad_input_is_one_line(monkeypatch):
    net, x = _tanh_mlp(), torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    with pytest.raises(BadInput, match="HessianOperator"):
        split_trace(landscape.GGNOperator(net, (x, y)))
    monkeypatch.setattr("landscape.measures.split.GRAPH_NUMBERS", 8)
    monkeypatch.setattr("landscape.measures.layerrules._rule", lambda module: None)  # Jacobians
    with pytest.raises(BadInput, match="does not fit"):
        split_trace(HessianOperator(net, (x, y)))
    with pytest.raises(BadInput, match="method"):
        landscape.hessian_trace(net, (x, y), method="exact")

    class Scores(nn.Module):  # an output object, as a HuggingFace model's
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return type("Output", (), {"logits": self.net(x)})()

    H = HessianOperator(Scores(), {"x": x, "labels": y},
                        loss=lambda out, batch: F.cross_entropy(out.logits, batch["labels"],
                                                                reduction="none"))
    for split in (split_trace, split_diagonal):
        with pytest.raises(BadInput, match="returns a tensor, not a Output: hutchinson_trace"):
            split(H)
