"""The GGN's trace and diagonal by layer rules (measures/layerrules.py) against the dense float64
GGN of tests/test_split.py and against per-sample Jacobians (the rules switched off), on a zoo of
layers; and the check that hands layers without a sound rule to the Jacobians."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_split import _ce, _dense
from torch import nn

from landscape.errors import BadInput
from landscape.measures import layerrules
from landscape.measures.operators import HessianOperator
from landscape.measures.split import _rule_rows, _ruled, ggn_diagonal, ggn_trace


class Zoo(nn.Module):
    """Every rule: grouped, strided and dilated convolutions in 1-D and 2-D, BatchNorm with
    running statistics on images (followed by an in-place ReLU), sequences and rows, LayerNorm
    and a linear layer over a sequence, an embedding with a padding row and repeated indices,
    a linear head on rows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1, groups=2)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv1d(4, 3, 2, dilation=2, padding=1)
        self.bn1 = nn.BatchNorm1d(3)
        self.embed = nn.Embedding(6, 3, padding_idx=0)
        self.norm = nn.LayerNorm(3)
        self.mix = nn.Linear(3, 3)
        self.rows = nn.BatchNorm1d(6)
        self.head = nn.Linear(3 + 3, 4)

    def forward(self, x):
        image, ids = x[:, :32].reshape(-1, 2, 4, 4), x[:, 32:].long()
        h = F.relu(self.bn2(self.conv2(image)), inplace=True)                   # [m, 4, 2, 2]
        h = torch.tanh(self.bn1(self.conv1(h.flatten(2))))                     # [m, 3, 5]
        tokens = torch.tanh(self.mix(self.norm(self.embed(ids))))              # [m, 5, 3]
        return self.head(torch.tanh(self.rows(torch.cat([h.mean(2), tokens.mean(1)], 1))))


def _zoo() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(11)
    net = Zoo().double().eval()
    for bn in (net.bn2, net.bn1, net.rows):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    for layer in (net.norm, net.bn2, net.bn1, net.rows):
        layer.weight.data.uniform_(0.5, 1.5)
        layer.bias.data.uniform_(-0.5, 0.5)
    ids = torch.randint(0, 6, (7, 5)).double()
    ids[0, :2] = 0  # padding
    ids[1] = 3      # one index five times
    x = torch.cat([torch.randn(7, 32, dtype=torch.float64), ids], 1)
    return net, x, torch.randint(0, 4, (7,))


def _flat(found: dict) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in found.values()])


def test_every_rule_gives_the_dense_ggns_trace_and_diagonal(monkeypatch):
    net, x, y = _zoo()
    operator = HessianOperator(net, (x, y))
    names, copied = _ruled(operator.objective)
    assert names == tuple(operator.params) and copied == {"bn2"}  # all ruled; the in-place one
    _, G = _dense(net, x, y, _ce)
    assert ggn_trace(operator) == pytest.approx(float(G.trace()), rel=1e-10)
    torch.testing.assert_close(_flat(ggn_diagonal(operator)), G.diagonal(), rtol=1e-9,
                               atol=1e-13)
    # chunks of any size (one row) and sub-chunks of per-sample gradients alike
    monkeypatch.setattr("landscape.measures.layerrules.RULE_NUMBERS", 2 * 4 * 4)  # d = 4
    monkeypatch.setattr("landscape.measures.layerrules.JACOBIAN_NUMBERS", 1)
    assert _rule_rows(operator.objective, names, copied) == 1
    assert ggn_trace(operator) == pytest.approx(float(G.trace()), rel=1e-10)
    torch.testing.assert_close(_flat(ggn_diagonal(operator)), G.diagonal(), rtol=1e-9,
                               atol=1e-13)


def test_the_rules_agree_with_per_sample_jacobians(monkeypatch):
    net, x, y = _zoo()
    operator = HessianOperator(net, (x, y), wrt=lambda name: not name.startswith("bn1"))
    trace, diagonal = ggn_trace(operator), _flat(ggn_diagonal(operator))
    monkeypatch.setattr(layerrules, "_rule", lambda module: None)   # every layer to Jacobians
    assert _ruled(operator.objective)[0] == ()
    assert ggn_trace(operator) == pytest.approx(trace, rel=1e-10)
    torch.testing.assert_close(_flat(ggn_diagonal(operator)), diagonal, rtol=1e-9, atol=1e-13)


class Shared(nn.Module):
    """Layers a rule must not take: a weight also used outside its layer (tied), a layer
    called twice, a parameter of no ruled layer, and a LayerNorm whose output is used twice
    (fine: its rule holds)."""

    def __init__(self) -> None:
        super().__init__()
        self.tied, self.twice, self.norm = nn.Linear(3, 3), nn.Linear(3, 3), nn.LayerNorm(3)
        self.scale = nn.Parameter(torch.tensor([0.5, 1.5, -1.0]))
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.tanh(self.tied(x)) @ self.tied.weight                      # tied use
        h = torch.tanh(self.twice(torch.tanh(self.twice(h)))) * self.scale
        n = self.norm(h)
        return self.head(n * torch.sigmoid(n))


def test_layers_whose_rule_fails_its_check_go_to_the_jacobians():
    torch.manual_seed(12)
    net, x = Shared().double().eval(), torch.randn(8, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    operator = HessianOperator(net, (x, y))
    names, _ = _ruled(operator.objective)
    assert names == ("norm.weight", "norm.bias", "head.weight", "head.bias")
    _, G = _dense(net, x, y, _ce)
    assert ggn_trace(operator) == pytest.approx(float(G.trace()), rel=1e-10)
    torch.testing.assert_close(_flat(ggn_diagonal(operator)), G.diagonal(), rtol=1e-9,
                               atol=1e-13)


def test_a_model_that_needs_a_batch_is_one_line():
    """BatchNorm on batch statistics (no running ones) couples the rows: a sample's own
    gradient is not defined, and the model refuses one row."""
    torch.manual_seed(13)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                        nn.Tanh(), nn.Linear(4, 2)).double().eval()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    with pytest.raises(BadInput, match="runs on one sample: Expected more than 1 value"):
        ggn_trace(HessianOperator(net, (x, y)))


def test_float32_rounding_does_not_fail_the_check():
    """The check compares float32 sums of per-sample gradients with autograd's batch gradient:
    summation order alone must not send a layer to the Jacobians."""
    net, x, y = _zoo()
    net = net.float()
    assert _ruled(HessianOperator(net, (x.float(), y)).objective)[0] == tuple(
        name for name, _ in net.named_parameters())


def test_too_many_outputs_a_sample_is_one_line(monkeypatch):
    net, x, y = _zoo()
    monkeypatch.setattr("landscape.measures.layerrules.RULE_NUMBERS", 2 * 4 * 4 - 1)  # d = 4
    with pytest.raises(BadInput, match="d = 4 outputs here: too many; use Hutchinson"):
        ggn_trace(HessianOperator(net, (x, y)))


class SequenceFirst(nn.Module):
    """Linear layers whose input's first axis is not the data's rows: positions first (as
    nn.TransformerEncoderLayer's default batch_first=False), and rows and positions flattened
    together. Their rules would split the batch gradient along the wrong axis: the check sends
    them to the Jacobians."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.flat, self.head = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = torch.tanh(self.first(x.view(len(x), 4, 3).transpose(0, 1)))     # [4, m, 3]
        h = torch.tanh(self.flat(h.transpose(0, 1).reshape(-1, 3)))          # [m * 4, 3]
        return self.head(h.view(len(x), 4, 3).mean(1))


def test_a_batch_axis_that_is_not_the_rows_goes_to_the_jacobians():
    torch.manual_seed(14)
    net, x = SequenceFirst().double().eval(), torch.randn(8, 12, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    operator = HessianOperator(net, (x, y))
    assert _ruled(operator.objective)[0] == ("head.weight", "head.bias")
    _, G = _dense(net, x, y, _ce)
    assert ggn_trace(operator) == pytest.approx(float(G.trace()), rel=1e-10)
    torch.testing.assert_close(_flat(ggn_diagonal(operator)), G.diagonal(), rtol=1e-9,
                               atol=1e-13)
    # only layers that fail the check chosen: nothing ruled, all by the Jacobians
    inner = HessianOperator(net, (x, y), wrt=["first.weight", "flat.weight"])
    assert _ruled(inner.objective)[0] == ()
    at, chosen = 0, []
    for name, p in net.named_parameters():
        if name in ("first.weight", "flat.weight"):
            chosen += range(at, at + p.numel())
        at += p.numel()
    assert ggn_trace(inner) == pytest.approx(float(G.diagonal()[chosen].sum()), rel=1e-10)
