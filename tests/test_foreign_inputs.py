"""The curvature operators on data and models as users have them, beyond a classifier on a pair of
tensors: token labels, one-pass iterators, binary labels, tied weights, Hugging Face style dict
batches, and the small slips (a single parameter name, a device this machine lacks, an output
squeezed to [n]). Numbers are checked against dense float64 Hessians from torch.func
(reverse over reverse), bad input against its one-line message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.errors import BadInput

pytestmark = pytest.mark.usefixtures("one_thread")

OPERATORS = [landscape.HessianOperator, landscape.GGNOperator, landscape.FisherOperator]


def _flat(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params.values()])


def _unflat(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    pieces = flat.split([p.numel() for p in like.values()])
    return {k: t.view(p.shape) for (k, p), t in zip(like.items(), pieces)}


def _dense(per_sample, like: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(Hessian [N, N] of the mean loss, empirical Fisher [N, N]) of per_sample(params) -> [n]."""
    theta = _flat(like)
    hessian = jacrev(grad(lambda t: per_sample(_unflat(t, like)).mean()))(theta)
    gradients = jacrev(lambda t: per_sample(_unflat(t, like)))(theta)              # [n, N]
    return hessian, gradients.T @ gradients / len(gradients)


class Tokens(nn.Module):
    """A sequence model scoring every token: ids [n, T] -> logits [n, T, C]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, input_ids):
        return self.head(torch.tanh(self.emb(input_ids)))


def test_pair_token_labels_score_each_sample_as_its_tokens_mean():
    torch.manual_seed(0)
    model = Tokens().double()
    ids, labels = torch.randint(0, 10, (12, 5)), torch.randint(0, 3, (12, 5))
    params = dict(model.named_parameters())

    def per_sample(p):  # a sample's loss: the mean over its 5 tokens
        logits = functional_call(model, p, (ids,))
        return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)

    hessian, fisher = _dense(per_sample, params)
    V = torch.randn(3, len(hessian), dtype=torch.float64)
    pair = landscape.HessianOperator(model, (ids, labels))
    torch.testing.assert_close(pair.matmat(V), V @ hessian)
    torch.testing.assert_close(landscape.FisherOperator(model, (ids, labels)).matmat(V),
                               V @ fisher)
    batch = {"input_ids": ids, "labels": labels}
    torch.testing.assert_close(landscape.GGNOperator(model, (ids, labels)).matmat(V),
                               landscape.GGNOperator(model, batch).matmat(V))
    # and the evaluations (a slice's centre: the mean of the samples' token means, and of
    # their token accuracies)
    line = landscape.loss_slice(model, (ids, labels), points=3)
    logits = model(ids).detach()
    expected = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1).mean()
    assert line["train_loss"][1] == pytest.approx(float(expected), rel=1e-12)
    hits = (logits.argmax(-1) == labels).double().mean(1).mean()
    assert line["train_acc"][1] == pytest.approx(float(hits), rel=1e-12)


@pytest.mark.parametrize("operator", OPERATORS)
def test_a_one_pass_iterator_is_refused_and_what_iterates_again_is_taken(operator):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    for one_pass in (((x[i:i + 5], y[i:i + 5]) for i in range(0, 20, 5)), iter(loader),
                     ({"x": x[i:i + 5], "labels": y[i:i + 5]} for i in range(0, 20, 5))):
        with pytest.raises(BadInput, match=r"^data is a one-pass iterator \(a \w+\); give "
                           "something that can be iterated again"):
            operator(model, one_pass)
    V = torch.randn(2, sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    whole = operator(model, (x, y)).matmat(V)
    for again in (loader, [(x[:7], y[:7]), (x[7:], y[7:])], [{"x": x, "labels": y}]):
        torch.testing.assert_close(operator(model, again).matmat(V), whole)


def test_logistic_labels_must_be_0_or_1_and_the_output_one_score():
    torch.manual_seed(0)
    x, y = torch.randn(20, 5), torch.randint(0, 2, (20,))
    one = nn.Linear(5, 1)
    with pytest.raises(BadInput, match=r"logistic labels must be 0 or 1 \(the data's hold -1\); "
                       r"map -1/\+1 labels with \(y \+ 1\) // 2"):
        landscape.HessianOperator(one, (x, 2 * y - 1), loss="logistic")
    with pytest.raises(BadInput, match=r"the model returns outputs of shape \[2\], not \[rows, "
                       r"outputs\]: it must return \[n, 1\]"):
        landscape.HessianOperator(nn.Sequential(one, nn.Flatten(0)), (x, y), loss="logistic")
    with pytest.raises(BadInput, match=r"the logistic loss takes one score per sample, but the "
                       r"model returns outputs of shape \[2, 3\]: it must return \[n, 1\]"):
        landscape.HessianOperator(nn.Linear(5, 3), (x, y), loss="logistic")
    with pytest.raises(BadInput, match="logistic labels must be 0 or 1"):
        landscape.HessianOperator(one, {"x": x, "labels": 2 * y - 1}, loss="logistic")
    landscape.HessianOperator(one, (x, y.double()), loss="logistic")  # 0/1 as floats score too


class Tied(nn.Module):
    """A language model's output layer sharing its embedding matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.mid, self.out = nn.Embedding(12, 4), nn.Linear(4, 4), nn.Linear(4, 12)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(torch.tanh(self.mid(self.emb(ids))))


def test_tied_weights_are_one_parameter_differentiated_once():
    torch.manual_seed(0)
    model = Tied().double()
    ids, y = torch.randint(0, 12, (16,)), torch.randint(0, 12, (16,))
    params = {k: p.detach() for k, p in model.named_parameters()}
    assert list(params) == ["emb.weight", "mid.weight", "mid.bias", "out.bias"]

    def per_sample(p):  # the model written out, the one matrix W used twice
        w = p["emb.weight"]
        h = torch.tanh(F.linear(F.embedding(ids, w), p["mid.weight"], p["mid.bias"]))
        return F.cross_entropy(F.linear(h, w, p["out.bias"]), y, reduction="none")

    hessian, fisher = _dense(per_sample, params)
    V = torch.randn(3, len(hessian), dtype=torch.float64)
    operator = landscape.HessianOperator(model, (ids, y))
    assert operator.shape == hessian.shape
    torch.testing.assert_close(operator.matmat(V), V @ hessian)
    torch.testing.assert_close(landscape.FisherOperator(model, (ids, y)).matmat(V), V @ fisher)
    assert model.out.weight is model.emb.weight  # the user's module untouched
    # weights saved under one of the tied names (as save_pretrained saves them) take both
    torch.manual_seed(1)
    other = Tied().double().state_dict()
    once = {k: v for k, v in other.items() if k != "out.weight"}
    found = landscape.HessianOperator(model, (ids, y), params=once).matmat(V)
    torch.testing.assert_close(found, landscape.HessianOperator(model, (ids, y),
                                                                params=other).matmat(V))
    assert not torch.allclose(found, V @ hessian)


class Sequences(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 3)

    def forward(self, input_ids):
        return self.emb(input_ids)                                       # [n, T, 3]


@pytest.mark.parametrize("labels, message", [
    (lambda y: y.masked_fill(torch.arange(5) == 4, -100),
     (r"^the dict batch's labels hold -100, an ignore index: ignored labels are not supported; "
      r"pass a loss callable \(output, batch\) that masks them$")),
    (lambda y: y + 1, (r"^the dict batch's labels run from 1 to 3, but the model has 3 outputs "
                       r"\(classes 0 to 2\)$")),
    (lambda y: y[:3], r"^the dict batch's labels have 3 rows, but the model gives outputs for 4$"),
    (lambda y: y[:, :4], (r"^the model's outputs \(shape \[4, 5, 3\]\) do not fit the dict "
                          r"batch's labels \(shape \[4, 4\]\)")),
    (lambda y: y.double(), r"^the dict batch's labels are float"),
], ids=["ignore_index", "out_of_range", "rows", "shape", "float"])
def test_dict_batch_labels_are_checked_as_pairs_are(labels, message):
    torch.manual_seed(0)
    y = torch.randint(0, 3, (4, 5))
    with pytest.raises(BadInput, match=message):
        landscape.HessianOperator(Sequences(), {"input_ids": torch.randint(0, 10, (4, 5)),
                                                "labels": labels(y)})


def test_small_slips_are_taken_or_named_in_one_line():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    assert landscape.HessianOperator(model, (x, y), wrt="0.weight").shape == (40, 40)
    with pytest.raises(BadInput, match=r"^device 'nonsense' is not a device name such as 'cpu'"):
        landscape.HessianOperator(model, (x, y), device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match=r"^device 'cuda' cannot be used here: "):
            landscape.HessianOperator(model, (x, y), device="cuda")
    squeezed = nn.Sequential(nn.Linear(5, 1), nn.Flatten(0))                   # outputs [n]
    with pytest.raises(BadInput, match=r"^the model returns outputs of shape \[2\], not \[rows, "
                       r"outputs\]: it must return \[n, 1\] for one output per sample"):
        landscape.HessianOperator(squeezed, (x, torch.randn(20)), loss=lambda o, t: (o - t) ** 2)
    with pytest.raises(BadInput, match=r"^a data batch has 5 rows of inputs but 4 labels$"):
        landscape.HessianOperator(model, [(x, y), (x[:5], y[:4])]).matvec(torch.zeros(75))


@pytest.mark.parametrize("dtype, rel", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_a_half_models_ggn_is_its_float64_ggn_to_its_precision(dtype, rel):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    x, y = torch.randn(18, 5).to(dtype), torch.randint(0, 3, (18,))
    params = {k: p.detach().double() for k, p in model.named_parameters()}
    wide = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    # dense G = (1/n) sum_i J_i' H_i J_i, H_i = diag(p_i) - p_i p_i' the softmax loss Hessian
    jacobian = jacrev(lambda t: functional_call(wide, _unflat(t, params), (x.double(),)))(
        _flat(params))                                                          # [n, C, N]
    p = torch.softmax(functional_call(wide, params, (x.double(),)), -1)
    hessians = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    ggn = torch.einsum("icp,icd,idq->pq", jacobian, hessians, jacobian) / len(x)
    operator = landscape.HessianOperator(model, (x, y))
    assert landscape.ggn_trace(operator) == pytest.approx(float(ggn.trace()), rel=rel)
    found = landscape.ggn_diagonal(operator)
    assert all(t.dtype == dtype for t in found.values())
    torch.testing.assert_close(_flat(found).double(), ggn.diagonal(), rtol=rel, atol=rel * float(
        ggn.diagonal().abs().max()))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16])
def test_labels_gather_cannot_index_by_are_named_with_the_fix(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    name = str(dtype).removeprefix("torch.")
    for data, whose in (((x, y.to(dtype)), "the data's"),
                        ({"x": x, "labels": y.to(dtype)}, "the dict batch's")):
        with pytest.raises(BadInput, match=rf"^{whose} labels are {name} \({dtype}\); "
                           r"cross_entropy needs integer class labels, int64 or int32 "
                           r"\(y\.long\(\)\)$"):
            landscape.HessianOperator(model, data)
    V = torch.randn(2, sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    torch.testing.assert_close(landscape.HessianOperator(model, (x, y.int())).matmat(V),
                               landscape.HessianOperator(model, (x, y)).matmat(V))


def test_params_holding_something_else_than_a_tensor_are_named():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    with pytest.raises(BadInput, match=r"^params must hold tensors, but '0\.bias' is a str$"):
        landscape.HessianOperator(model, (x, y), params={**model.state_dict(), "0.bias": "oops"})


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.emb = nn.Linear(5, 3), nn.Embedding(4, 3)

    def forward(self, x, kind):
        return self.lin(x) + self.emb(kind)


def test_a_pair_of_several_inputs_is_pointed_to_dict_batches():
    torch.manual_seed(0)
    x, kind, y = torch.randn(20, 5), torch.randint(0, 4, (20,)), torch.randint(0, 3, (20,))
    message = (r'^a pair \(\(x1, x2\), y\) holds several model inputs: a model with several '
               r'inputs takes dict batches with inputs=, e\.g\. \{"a": x1, "b": x2, "labels": '
               r'y\} with inputs=lambda batch: \(batch\["a"\], batch\["b"\]\)$')
    for data in (((x, kind), y), [(x, kind), y], [((x, kind), y)],
                 DataLoader([((a, b), c) for a, b, c in zip(x, kind, y)], batch_size=8)):
        with pytest.raises(BadInput, match=message):
            landscape.HessianOperator(TwoInputs(), data)
    taken = landscape.HessianOperator(TwoInputs(), {"a": x, "b": kind, "labels": y},
                                      inputs=lambda batch: (batch["a"], batch["b"]))
    assert taken.shape == (30, 30)


def test_eigenpairs_past_the_distinct_eigenvalues_give_each_once():
    d = torch.tensor([3.0, 3.0, 2.0, 1.0, -0.5], dtype=torch.float64)
    diagonal = landscape.Operator({"w": torch.zeros(5, dtype=torch.float64)}, lambda V: V * d)
    distinct = [3.0, 2.0, 1.0, -0.5]   # the Krylov space from one start holds 3 once
    np.testing.assert_allclose(landscape.eigenpairs(diagonal, k=5)[0], distinct)
    np.testing.assert_allclose(landscape.eigenpairs(diagonal, k=5, which="smallest")[0],
                               distinct[::-1])
    largest, smallest, _ = landscape.spectrum_ends(diagonal, k=5)
    np.testing.assert_allclose(largest, distinct)
    np.testing.assert_allclose(smallest, distinct[::-1])


def test_weights_of_another_dtype_take_the_models_as_load_state_dict_does():
    """A float64 (or float16) checkpoint of a float32 model: its weights in float32, as
    load_state_dict would load them (was torch's "mat1 and mat2 must have the same dtype")."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    state = {k: v.double() for k, v in model.state_dict().items()}
    v = torch.randn(sum(p.numel() for p in model.parameters()))
    plain = landscape.HessianOperator(model, (x, y)).matvec(v)
    for other in (state, {k: t.half() for k, t in state.items()}):
        operator = landscape.HessianOperator(model, (x, y), params=other)
        assert operator.dtype == torch.float32
        exact = other is state
        torch.testing.assert_close(operator.matvec(v), plain, rtol=1e-6 if exact else 5e-2,
                                   atol=1e-6 if exact else 5e-2 * float(plain.abs().max()))
    assert landscape.loss_slice(model, (x, y), params=state, points=3)["train_loss"].shape == (3,)
