"""The measured memory rules: a model's widest layer per row (one forward pass) and what a Hessian
product's gradient graph keeps per row (autograd's saved tensors), against hand counts."""

import gc
import weakref

import torch
from torch import nn
from torch.func import functional_call

from landscape.flooding import per_sample_loss
from landscape.measures.graphs import graph_numbers, saved_numbers
from landscape.memory import row_numbers


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def test_the_widest_layer_is_measured_and_the_model_left_as_it_was():
    cnn = _cnn().train()
    stats = cnn[1].running_mean.clone()
    assert row_numbers(cnn, (3, 8, 8)) == 8 * 8 * 8  # the first conv's feature maps, per row
    assert cnn.training and torch.equal(cnn[1].running_mean, stats)
    mlp = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 300), nn.ReLU(),
                        nn.Linear(300, 1))
    assert row_numbers(mlp, (10,)) == 300
    assert row_numbers(mlp[:1], (100,)) == 100  # an input wider than every layer


def test_a_model_that_cannot_take_float_rows_is_estimated():
    embedding = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(4 * 6, 2))
    assert row_numbers(embedding, (6,)) == 50  # the old rule: the widest weight's first dimension


def test_a_gradient_graph_keeps_what_its_rows_predict():
    cnn = _cnn().eval()
    params = {k: p.detach().requires_grad_() for k, p in cnn.named_parameters()}
    buffers = dict(cnn.named_buffers())

    def gradient(x, y):
        total = per_sample_loss(functional_call(cnn, (params, buffers), (x,)), y,
                                "cross_entropy").sum()
        return list(torch.autograd.grad(total, list(params.values()), create_graph=True))

    x, y = torch.randn(5, 3, 8, 8), torch.randint(0, 10, (5,))
    per_row, per_chunk = graph_numbers(lambda batch: gradient(*batch), (x, y))
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gradient(x, y)
    assert sum(storages.values()) == per_chunk + 5 * per_row
    assert per_row > 8 * 8 * 8  # at least the first conv's input and output are kept
    # data that fit with room to spare: one build of the first row bounds them all
    calls = []
    bound = graph_numbers(lambda batch: calls.append(1) or gradient(*batch), (x, y), total=5)
    assert calls == [1] and bound == (per_chunk + per_row, 0)
    assert 5 * bound[0] >= per_chunk + 5 * per_row
    calls.clear()
    assert graph_numbers(lambda batch: calls.append(1) or gradient(*batch), (x, y),
                         total=1 << 40) == (per_row, per_chunk) and calls == [1, 1]


def test_a_graph_built_while_counting_is_freed_with_its_state():
    # log_softmax saves its own output: packed as itself, it held its grad_fn, a cycle the
    # collector cannot see, and every graph the memory rule counted (a GPU's kept chunks, the
    # rule's own one- and two-row graphs) stayed in memory for good
    outputs, w = [], torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)

    def build(batch):
        out = torch.log_softmax(batch[0] * w, 1)
        outputs.append(weakref.ref(out))
        return torch.autograd.grad(-out[:, 0].sum(), w, create_graph=True)[0]

    x = torch.randn(4, 3, dtype=torch.float64)
    g, numbers = saved_numbers(build, (x, None))
    assert numbers >= 4 * 3
    v = torch.randn(3, dtype=torch.float64)
    # the counted graph still differentiates (kept, as an operator keeps it): its Hessian
    # product equals a plain build's
    (counted,) = torch.autograd.grad(g, w, v, retain_graph=True)
    (plain,) = torch.autograd.grad(build((x, None)), w, v)
    assert torch.allclose(counted, plain, rtol=1e-12) and counted.abs().sum() > 0
    del g
    gc.collect()
    assert outputs[0]() is None


def test_the_rule_does_not_count_what_the_model_holds_anyway():
    """A linear layer's graph saves its weight and the rows of the data, which are held whatever
    is kept: counted, they were a fixed part of every chunk. Without them, an MLP's first row
    is exactly what each further row adds, and one build of it bounds the data."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3))
    params = dict(net.named_parameters())

    def build(batch):
        losses = per_sample_loss(functional_call(net, params, (batch[0],)), batch[1],
                                 "cross_entropy")
        return torch.autograd.grad(losses.sum(), list(params.values()), create_graph=True)

    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    one, two = (saved_numbers(build, (x[:k], y[:k]))[1] for k in (1, 2))
    held = [*params.values(), x, y]  # and the data, held by its source
    assert saved_numbers(build, (x[:1], y[:1]), held)[1] == two - one
    calls = []
    assert graph_numbers(lambda batch: calls.append(1) or build(batch), (x, y), total=5,
                         budget=5 * (two - one), held=held) == (two - one, 0)
    assert calls == [1]
