"""Curvature operators (measures/operators.py, fisher.py) and every estimator over them
(spectrum.py, trace.py), on tiny float64 models: products against the dense Hessian (torch.func
on the flat parameter vector), the GGN against J'HJ with H = diag(p) - pp' and the empirical
Fisher against a loop of per-sample gradients; estimators against numpy's eigh, the dense trace
and diagonal; dict batches of a small transformer against autograd on the whole loss."""

from __future__ import annotations

import copy
import gc
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.errors import BadInput
from landscape.measures.hessian import hvp_function
from landscape.measures.operators import Operator
from landscape.measures.spectrum import (
    eigenpairs,
    lanczos,
    spectral_density,
    spectrum_ends,
    top_eigenvalue,
)
from landscape.measures.trace import diagonal, hutchinson_trace, hutchpp_trace

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = {"hessian": landscape.HessianOperator, "ggn": landscape.GGNOperator,
         "fisher": landscape.FisherOperator}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh(),
                        nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    net[1].running_mean.uniform_(-0.5, 0.5)  # statistics that are not the identity
    net[1].running_var.uniform_(0.5, 2.0)
    return net


def _dense(net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> dict:
    """The dense Hessian, GGN and empirical Fisher over the parameters `names`, by other
    routes: torch.func.hessian, the Jacobian of the outputs with diag(p) - pp', and a loop."""
    net.eval()
    params = dict(net.named_parameters())
    fixed = {k: v.detach() for k, v in {**params, **dict(net.named_buffers())}.items()}
    shapes = [params[k].shape for k in names]

    def as_dict(flat):
        return {**fixed, **{k: t.reshape(s) for k, t, s in zip(
            names, flat.split([math.prod(s) for s in shapes]), shapes)}}

    def outputs(flat, rows=x):
        return functional_call(net, as_dict(flat), (rows,))

    theta = torch.cat([params[k].detach().reshape(-1) for k in names])
    n = len(y)
    H = hessian(lambda flat: F.cross_entropy(outputs(flat), y))(theta)
    J = jacrev(outputs)(theta)                                                  # [n, C, N]
    p = outputs(theta).softmax(1).detach()
    H_loss = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]                # [n, C, C]
    G = torch.einsum("ica,icd,idb->ab", J, H_loss, J) / n
    Fisher = torch.zeros_like(H)
    for i in range(n):
        g = torch.func.grad(lambda flat: F.cross_entropy(outputs(flat, x[i:i + 1]), y[i:i + 1]))(
            theta)
        Fisher += torch.outer(g, g) / n
    return {"hessian": H, "ggn": G, "fisher": Fisher}


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def case(request):
    torch.manual_seed(2)
    if request.param == "mlp":
        net, x = _mlp(), torch.randn(30, 4, dtype=torch.float64)
    else:
        net, x = _cnn(), torch.randn(12, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (len(x),))
    names = [k for k, _ in net.named_parameters()]
    return net, x, y, _dense(net, x, y, names)


def _as_matrix(operator) -> torch.Tensor:
    return operator.matmat(torch.eye(operator.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_products_equal_the_dense_matrix(case, kind):
    net, x, y, dense = case
    A = dense[kind]
    operator = KINDS[kind](net, (x, y))
    V = torch.randn(3, A.shape[0], dtype=torch.float64)
    torch.testing.assert_close(operator.matmat(V), V @ A, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(operator.matvec(V[0]), A @ V[0], rtol=1e-9, atol=1e-11)
    assert operator.products == 4
    torch.testing.assert_close(operator.matvec(V[0].tolist()), A @ V[0], rtol=1e-9, atol=1e-11)
    scipy = operator.to_scipy()
    np.testing.assert_allclose(scipy.matvec(V[0].numpy()), (A @ V[0]).numpy(), rtol=1e-9,
                               atol=1e-11)
    np.testing.assert_allclose(scipy @ V.T.numpy(), (A @ V.T).numpy(), rtol=1e-9, atol=1e-11)
    # added into the caller's rows in place (Lanczos's three-term step): whole, in chunks of 7
    # rows, and by a plain Operator of a function
    for made in (operator, KINDS[kind](net, (x, y), rows=7),
                 Operator(operator.params, lambda W: W @ A)):
        B = torch.randn(3, A.shape[0], dtype=torch.float64)
        target = B.clone()
        assert made.matmat(V, add_to=target) is target
        torch.testing.assert_close(target, B + V @ A, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(made.matvec(V[0], add_to=B[0].clone()), B[0] + A @ V[0],
                                   rtol=1e-9, atol=1e-11)
    with pytest.raises(BadInput, match="add_to must be"):
        operator.matmat(V, add_to=torch.zeros(2, A.shape[0], dtype=torch.float64))
    with pytest.raises(BadInput, match="add_to must not share memory with the vectors"):
        operator.matmat(V, add_to=V)
    # chunks of 7 rows (kept or rebuilt alike) and a DataLoader's batches give the same matrix
    chunked = KINDS[kind](net, (x, y), rows=7)
    torch.testing.assert_close(_as_matrix(chunked), A, rtol=1e-9, atol=1e-11)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    net.train()  # a module left in training mode: products still see eval mode, flags kept
    try:
        torch.testing.assert_close(_as_matrix(KINDS[kind](net, loader)), A, rtol=1e-9,
                                   atol=1e-11)
        assert all(m.training for m in net.modules())
    finally:
        net.eval()



def test_a_cpu_cuts_a_kept_graph_into_equal_chunks_of_its_budget(case, monkeypatch):
    """On a CPU a kept graph is cut into chunks of CPU_GRAPH_NUMBERS (a product's transient
    memory is its chunk's), of equal size, all kept; the products are the dense matrix's."""
    net, x, y, dense = case
    whole = landscape.HessianOperator(net, (x, y))
    whole.matvec(torch.zeros(whole.shape[0], dtype=torch.float64))
    per_row, per_chunk = whole._numbers(next(iter(whole.objective.batches(2))), None)
    assert len(whole._kept) == 1 and whole._rows == len(x)  # small: one chunk
    monkeypatch.setattr("landscape.measures.operators.CPU_GRAPH_NUMBERS",
                        per_chunk + 5 * per_row)  # 5 rows a chunk at most
    cut = landscape.HessianOperator(net, (x, y))
    torch.testing.assert_close(_as_matrix(cut), dense["hessian"], rtol=1e-9, atol=1e-11)
    chunks = -(-len(x) // 5)
    assert len(cut._kept) == chunks and cut._complete and cut._rows == -(-len(x) // chunks)


@pytest.mark.parametrize("kind", KINDS)
def test_loader_batches_that_are_not_the_chunks_and_graphs_kept_in_part(case, kind,
                                                                       monkeypatch):
    """The kept chunks are the first pass's batches (a DataLoader's own), later passes replay
    its rows cut to `rows`: the rows after the kept ones are rebuilt, none twice. A loader too
    large to replay (it may shuffle) keeps nothing unless it keeps everything."""
    net, x, y, dense = case
    A = dense[kind]
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    pieces = [(x[:7], y[:7]), (x[7:8], y[7:8]), (x[8:], y[8:])]
    for data, rows in ((loader, 4), (pieces, 1), (pieces, 5)):
        torch.testing.assert_close(_as_matrix(KINDS[kind](net, data, rows=rows)), A,
                                   rtol=1e-9, atol=1e-11)
    # the graphs of the first two loader batches kept, the rest rebuilt at each product
    operator = KINDS[kind](net, loader, rows=4)
    per_row, per_chunk = operator._numbers(next(iter(operator.objective.batches(2))))
    monkeypatch.setattr("landscape.measures.operators.GRAPH_NUMBERS",
                        2 * per_chunk + 10 * per_row)
    partial = KINDS[kind](net, loader, rows=4)
    torch.testing.assert_close(_as_matrix(partial), A, rtol=1e-9, atol=1e-11)
    assert len(partial._kept) == 2 and not partial._complete
    # not replayed (over the keep budget) and shuffled: nothing kept, every row each pass once
    monkeypatch.setattr("landscape.measures.sources.KEEP_NUMBERS", 0)
    shuffled = KINDS[kind](net, DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True),
                           rows=4)
    torch.testing.assert_close(_as_matrix(shuffled), A, rtol=1e-9, atol=1e-11)
    assert shuffled._kept == [] and not shuffled._complete


@pytest.mark.parametrize("kind", KINDS)
def test_products_follow_the_weights_changed_in_place(case, kind):
    """An optimizer's step on the model's own tensors: the kept state is rebuilt, the products
    are those at the new weights (were the old ones, or autograd's in-place error)."""
    net, x, y, _ = case
    model = copy.deepcopy(net)
    operator = KINDS[kind](model, (x, y))
    V = torch.randn(2, operator.shape[0], dtype=torch.float64)
    before = operator.matmat(V)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    after = operator.matmat(V)
    torch.testing.assert_close(after, KINDS[kind](model, (x, y)).matmat(V), rtol=1e-12,
                               atol=1e-14)
    assert not torch.allclose(after, before)


def test_batched_backward_of_the_gpu_route_equals_the_dense_hessian(case, monkeypatch):
    """On a GPU a block of vectors goes through one vmapped backward; forced here on the CPU."""
    net, x, y, dense = case
    monkeypatch.setattr(landscape.HessianOperator, "_width", lambda self, vectors: 4)
    operator = landscape.HessianOperator(net, (x, y))
    V = torch.randn(9, dense["hessian"].shape[0], dtype=torch.float64)     # blocks of 4, 4, 1
    torch.testing.assert_close(operator.matmat(V), V @ dense["hessian"], rtol=1e-9, atol=1e-11)
    assert operator.products == 9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_products_replayed_as_cuda_graphs_equal_the_dense_matrix(case):
    net, x, y, dense = case
    for kind in ("hessian", "ggn"):
        A = dense[kind].cuda()
        operator = KINDS[kind](copy.deepcopy(net).cuda(), (x.cuda(), y.cuda()))
        # each width: eager, captured, then replayed with new vectors, the widths interleaved
        for width in (1, 3, 1, 3, 1, 3, 3, 1, 2):
            V = torch.randn(width, A.shape[0], dtype=torch.float64, device="cuda")
            torch.testing.assert_close(operator.matmat(V), V @ A, rtol=1e-9, atol=1e-11)
        assert sorted(operator._replay.graphs) == [1, 3] and not operator._replay.broken
        # weights changed in place: new kept graphs, and no replay over the freed old ones
        model = operator.objective.template
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)
        fresh = KINDS[kind](model, (x.cuda(), y.cuda()))
        for width in (1, 1, 1):
            V = torch.randn(width, A.shape[0], dtype=torch.float64, device="cuda")
            torch.testing.assert_close(operator.matmat(V), fresh.matmat(V), rtol=1e-9,
                                       atol=1e-11)


def test_hvp_function_of_earlier_releases_is_the_hessians_product(case):
    net, x, y, dense = case
    params = {k: p.detach() for k, p in net.named_parameters()}
    hvp = hvp_function(net, params, dict(net.named_buffers()), (x, y), "cross_entropy", 7)
    V = torch.randn(2, dense["hessian"].shape[0], dtype=torch.float64)
    torch.testing.assert_close(hvp(V), V @ dense["hessian"], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_a_parameter_subset_is_the_dense_sub_block(case, kind):
    net, x, y, dense = case
    names = [k for k, _ in net.named_parameters()]
    sizes = [p.numel() for p in net.parameters()]
    chosen = [names[-1], names[0]]  # given in any order, taken in the model's
    index = torch.cat([torch.arange(sum(sizes[:i]), sum(sizes[:i + 1]))
                       for i in range(len(names)) if names[i] in chosen])
    block = dense[kind][index][:, index]
    torch.testing.assert_close(_as_matrix(KINDS[kind](net, (x, y), wrt=chosen)), block,
                               rtol=1e-9, atol=1e-11)
    by_rule = KINDS[kind](net, (x, y), wrt=lambda name: name in chosen)
    torch.testing.assert_close(_as_matrix(by_rule), block, rtol=1e-9, atol=1e-11)


def test_lanczos_top_and_bottom_k_equal_numpy_eigh(case):
    net, x, y, dense = case
    for kind in ("hessian", "ggn"):
        spectrum = np.linalg.eigh(dense[kind].numpy())[0]
        operator = KINDS[kind](net, (x, y))
        n = operator.shape[0]
        top, vectors, _ = eigenpairs(operator, k=3, iterations=n, tolerance=1e-10,
                                     vectors=True)
        np.testing.assert_allclose(top, spectrum[::-1][:3], rtol=1e-7)
        v = torch.cat([t.reshape(-1) for t in vectors[0].values()])
        torch.testing.assert_close(dense[kind] @ v, top[0] * v, rtol=0, atol=1e-7)
        if kind == "hessian":  # the GGN's bottom is a cluster of zeros (rank <= n (C - 1))
            bottom, _, _ = eigenpairs(operator, k=2, which="smallest", iterations=n,
                                      tolerance=1e-10)
            np.testing.assert_allclose(bottom, spectrum[:2], rtol=1e-7)
            # both ends from one run: each as converged, for the slower end's products
            _, _, top_products = eigenpairs(operator, k=2, tolerance=1e-6)
            low, _, low_products = eigenpairs(operator, k=2, which="smallest", tolerance=1e-6)
            ends = spectrum_ends(operator, k=2, tolerance=1e-6)
            assert ends[2] == max(top_products, low_products)
            np.testing.assert_allclose(ends[0], spectrum[::-1][:2], rtol=1e-6)
            np.testing.assert_allclose(ends[1], low, rtol=1e-6)
    hessian_spectrum = np.linalg.eigh(dense["hessian"].numpy())[0]
    largest = hessian_spectrum[np.abs(hessian_spectrum).argmax()]
    for method in ("lanczos", "power"):
        value, _ = top_eigenvalue(landscape.HessianOperator(net, (x, y)), iterations=5000,
                                  tolerance=1e-14, method=method)
        assert value == pytest.approx(largest, rel=1e-6)


def test_trace_estimators_converge_and_the_diagonal_is_exact(case):
    """z'Az has variance 2 (||A||_F^2 - sum_i A_ii^2): 2000 probes land within 4 standard
    errors of the trace, and the reported error matches the exact one; Hutch++ with 3N products
    spans the whole space, and is exact."""
    net, x, y, dense = case
    for kind in ("hessian", "fisher"):
        A = dense[kind]
        operator = KINDS[kind](net, (x, y))
        probes = 2000
        exact_stderr = math.sqrt(2 * (A.square().sum() - A.diagonal().square().sum()) / probes)
        estimate = hutchinson_trace(operator, probes=probes, seed=1)
        assert abs(estimate.value - float(A.trace())) <= 4 * exact_stderr
        assert estimate.stderr == pytest.approx(exact_stderr, rel=0.15)
        full = hutchpp_trace(operator, products=3 * A.shape[0], seed=2)
        assert full.value == pytest.approx(float(A.trace()), rel=1e-9)
        found = diagonal(operator)
        torch.testing.assert_close(torch.cat([t.reshape(-1) for t in found.value.values()]),
                                   A.diagonal(), rtol=1e-9, atol=1e-12)
        sampled = diagonal(operator, probes=probes, seed=3)
        value = torch.cat([t.reshape(-1) for t in sampled.value.values()])
        stderr = torch.cat([t.reshape(-1) for t in sampled.stderr.values()])
        exact = ((A.square().sum(1) - A.diagonal().square()) / probes).sqrt()  # Bekas' error
        assert bool(((value - A.diagonal()).abs() <= 5 * exact + 1e-12).all())
        torch.testing.assert_close(stderr, exact, rtol=0.2, atol=1e-12)


def test_hutchpp_beats_hutchinson_where_a_few_eigenvalues_dominate():
    """A = U diag(100 x 8) U' + a small PSD remainder (N = 300): at 48 products, Hutch++'s
    mean absolute error over 20 seeds is several times Hutchinson's below (Meyer et al. 2021,
    Fig. 1), and both stay within a few of their standard errors."""
    generator = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(300, 8, generator=generator, dtype=torch.float64)).Q
    W = torch.randn(300, 300, generator=generator, dtype=torch.float64) / 300
    A = 100 * U @ U.T + W @ W.T
    operator = Operator({"w": torch.zeros(300, dtype=torch.float64)}, lambda v: v @ A)
    trace = float(A.trace())
    plain = [hutchinson_trace(operator, probes=48, seed=s) for s in range(20)]
    plus = [hutchpp_trace(operator, products=48, seed=s) for s in range(20)]
    plain_error = np.mean([abs(e.value - trace) for e in plain])
    plus_error = np.mean([abs(e.value - trace) for e in plus])
    assert plus_error < plain_error / 5
    assert np.mean([abs(e.value - trace) / e.stderr for e in plus]) < 3


def test_layer_blocks_equal_the_dense_blocks(case):
    net, x, y, dense = case
    H = dense["hessian"]
    sizes = [p.numel() for p in net.parameters()]
    names = [k for k, _ in net.named_parameters()]
    operator = landscape.HessianOperator(net, (x, y))
    alive = []  # blocks whose kept graph (a whole forward each) is alive during each trace

    def counted(block, **kwargs):
        alive.append(sum(isinstance(o, landscape.HessianOperator) and o._kept is not None
                         for o in gc.get_objects()))
        return hutchinson_trace(block, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("landscape.measures.layercurvature.hutchinson_trace", counted)
        found = landscape.layer_curvature(operator, iterations=5000, tolerance=1e-14,
                                          probes=2000)
    assert alive == [1] * len(alive)  # the block measured, not the ones before it
    layers = list(dict.fromkeys(k.rpartition(".")[0] for k in names))
    assert list(found) == layers
    for layer, blocks in zip(layers, operator.blocks().values()):
        index = torch.cat([torch.arange(sum(sizes[:i]), sum(sizes[:i + 1]))
                           for i, k in enumerate(names) if k.rpartition(".")[0] == layer])
        block = H[index][:, index]
        torch.testing.assert_close(_as_matrix(blocks), block, rtol=1e-9, atol=1e-11)
        values = torch.linalg.eigvalsh(block)
        assert found[layer].top_eigenvalue == pytest.approx(
            float(values[values.abs().argmax()]), rel=1e-5)
        assert abs(found[layer].trace.value - float(block.trace())) <= max(
            4 * found[layer].trace.stderr, 1e-9)


def test_density_of_any_operator_ends_at_its_eigenvalues(case):
    net, x, y, dense = case
    operator = landscape.FisherOperator(net, (x, y))
    n = operator.shape[0]
    found = spectral_density(operator, iterations=n, seed=4)
    spectrum = torch.linalg.eigvalsh(dense["fisher"]).numpy()
    assert np.abs(found.nodes[:, None] - spectrum[None]).min(1).max() < 1e-8
    assert math.isclose(found.weights.sum(), 1.0, rel_tol=1e-12)


class TinyTransformer(nn.Module):
    """Token ids [B, T] -> class scores [B, 3]: an embedding, one encoder layer, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(input_ids)).mean(1))


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(5)
    net = TinyTransformer().double().eval()
    ids, labels = torch.randint(0, 11, (10, 6)), torch.randint(0, 3, (10,))
    rows = [{"input_ids": i, "labels": t} for i, t in zip(ids, labels)]
    return net, ids, labels, DataLoader(rows, batch_size=4)


def _by_sample(output, batch):
    return F.cross_entropy(output, batch["labels"], reduction="none")


def test_dict_batches_and_a_loss_over_the_batch(transformer):
    """A DataLoader of {"input_ids", "labels"} batches with a loss callable over (output,
    batch): the Hessian product equals autograd's on the whole data's mean loss, a named loss
    reads the labels entry, the Fisher equals a loop over samples, and the GGN with respect to
    the head (on which the output is linear) equals the Hessian's head block."""
    net, ids, labels, loader = transformer
    params = dict(net.named_parameters())
    v = {k: torch.randn_like(p) for k, p in params.items()}

    def mean_loss(*values):
        return F.cross_entropy(functional_call(net, dict(zip(params, values)), (ids,)), labels)

    with sdpa_kernel(SDPBackend.MATH):  # the fused kernel has no second derivative
        _, expected = torch.autograd.functional.hvp(
            mean_loss, tuple(p.detach() for p in params.values()), tuple(v.values()))
    flat_v = torch.cat([t.reshape(-1) for t in v.values()])
    flat_expected = torch.cat([t.reshape(-1) for t in expected])
    for loss, data in ((_by_sample, loader), ("cross_entropy", list(loader))):
        operator = landscape.HessianOperator(net, data, loss=loss)
        torch.testing.assert_close(operator.matvec(flat_v), flat_expected, rtol=1e-8,
                                   atol=1e-10)
    fisher = landscape.FisherOperator(net, loader, loss=_by_sample)
    slow = torch.zeros_like(flat_v)
    for i in range(len(labels)):
        g = torch.autograd.grad(F.cross_entropy(net(ids[i:i + 1]), labels[i:i + 1]),
                                list(params.values()))
        flat_g = torch.cat([t.reshape(-1) for t in g])
        slow += flat_g * (flat_g @ flat_v) / len(labels)
    torch.testing.assert_close(fisher.matvec(flat_v), slow, rtol=1e-8, atol=1e-10)
    head = ["head.weight", "head.bias"]
    ggn = landscape.GGNOperator(net, loader, loss=_by_sample, wrt=head)
    block = landscape.HessianOperator(net, loader, loss=_by_sample, wrt=head)
    torch.testing.assert_close(_as_matrix(ggn), _as_matrix(block), rtol=1e-8, atol=1e-10)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([a, b.tanh()], 1))


def test_dict_inputs_by_name_or_by_a_callable_and_the_root_functions(transformer):
    """Several non-label entries are passed by name, `inputs` may pass them otherwise, and the
    root's hessian_* functions take the same dict batches; all against torch.func.hessian."""
    torch.manual_seed(6)
    net = TwoInputs().double()
    a, b = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    labels = torch.randint(0, 3, (9,))
    loader = DataLoader([{"a": i, "b": j, "labels": t} for i, j, t in zip(a, b, labels)],
                        batch_size=4)
    shapes = {k: p.shape for k, p in net.named_parameters()}

    def loss_of(flat):
        pieces = dict(zip(shapes, flat.split([math.prod(s) for s in shapes.values()])))
        state = {k: v.reshape(shapes[k]) for k, v in pieces.items()}
        return F.cross_entropy(functional_call(net, state, (a, b)), labels)

    H = hessian(loss_of)(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    by_name = landscape.HessianOperator(net, loader)
    torch.testing.assert_close(_as_matrix(by_name), H, rtol=1e-9, atol=1e-12)
    swapped = landscape.HessianOperator(TwoInputs().double(), loader, params=net.state_dict(),
                                        inputs=lambda batch: (batch["a"], batch["b"]))
    torch.testing.assert_close(_as_matrix(swapped), H, rtol=1e-9, atol=1e-12)
    model, ids, labels, words = transformer
    assert landscape.hessian_top_eigenvalue(model, words, loss=_by_sample, iterations=4) == \
        top_eigenvalue(landscape.HessianOperator(model, words, loss=_by_sample), iterations=4)[0]
    # the root functions take a parameter subset and the model's arguments as the operators do
    fc = ["fc.weight"]
    block = H[:18, :18]  # fc.weight's 3 x 6 entries come first
    assert landscape.hessian_trace(net, loader, wrt=fc, probes=3000).value == pytest.approx(
        float(block.trace()), rel=0.05)
    np.testing.assert_allclose(landscape.hessian_eigenvalues(
        net, loader, k=2, wrt=fc, inputs=lambda batch: (batch["a"], batch["b"])),
        np.linalg.eigvalsh(block.numpy())[::-1][:2], rtol=1e-6)
    assert landscape.hessian_top_eigenvalue(net, loader, wrt=fc, iterations=300,
                                            tolerance=1e-10) == pytest.approx(
        float(np.abs(np.linalg.eigvalsh(block.numpy())).max()), rel=1e-4)
    density = landscape.hessian_density(net, loader, wrt=lambda name: name == "fc.bias",
                                        iterations=3)
    np.testing.assert_allclose(np.sort(density.nodes), np.linalg.eigvalsh(H[18:, 18:].numpy()),
                               rtol=1e-6, atol=1e-12)


def test_bad_input_is_one_line(transformer):
    net, ids, labels, loader = transformer
    with pytest.raises(BadInput, match="no parameter 'head.w'"):
        landscape.HessianOperator(net, loader, loss=_by_sample, wrt=["head.w"])
    with pytest.raises(BadInput, match="one loss per sample"):
        landscape.HessianOperator(net, loader, loss=lambda out, batch: _by_sample(out,
                                                                                 batch).mean())
    unlabelled = [{"input_ids": i} for i in ids]
    with pytest.raises(BadInput, match="labels under one of"):
        landscape.HessianOperator(net, DataLoader(unlabelled, batch_size=4))
    with pytest.raises(BadInput, match="rows"):
        landscape.HessianOperator(net, loader, loss=_by_sample).matmat(torch.zeros(2, 3))
    H = landscape.HessianOperator(net, loader, loss=_by_sample)
    for run in (top_eigenvalue, lambda A, **kw: eigenpairs(A, k=2, **kw)):
        for bad in ({"iterations": 0}, {"tolerance": -1e-4}, {"tolerance": math.nan}):
            with pytest.raises(BadInput, match="iterations must be at least 1 and tolerance"):
                run(H, **bad)
    assert H.products == 0


def test_the_lanczos_basis_stays_orthonormal_in_float32():
    """The three-term step, then one pass of full reorthogonalization (a second only where the
    first cancelled most of the vector): the basis orthonormal to float32 rounding after 150
    steps, and T's extreme Ritz values those of the matrix."""
    torch.manual_seed(4)
    basis, _ = torch.linalg.qr(torch.randn(200, 200, dtype=torch.float64))
    spectrum = torch.cat([torch.tensor([40.0, 39.0, 5.0]), torch.linspace(-1, 1, 197)]).double()
    A = (basis * spectrum) @ basis.T
    operator = Operator({"w": torch.zeros(200)}, lambda V: V @ A.float())
    state = lanczos(operator, torch.randn(200), steps=150)
    Q = torch.cat(state.rows(len(state.alpha))).double()
    assert float((Q @ Q.T - torch.eye(len(Q), dtype=torch.float64)).abs().max()) < 1e-5
    values = state.ritz()[0]
    assert values[-1] == pytest.approx(40.0, rel=1e-5) and values[-2] == pytest.approx(39.0,
                                                                                     rel=1e-5)
    assert values[0] == pytest.approx(-1.0, abs=1e-4)


def test_a_block_the_loss_does_not_reach_is_zero(case):
    """A parameter the forward never uses (an unused pooler, say): its block of every kind is
    zero, alone and among the per-layer blocks."""
    net, x, y, _ = case
    net.register_parameter("unused", nn.Parameter(torch.ones(2, dtype=torch.float64)))
    try:
        for kind in KINDS.values():
            block = kind(net, (x, y), wrt=["unused"])
            assert torch.equal(block.matmat(torch.ones(2, 2, dtype=torch.float64)),
                               torch.zeros(2, 2, dtype=torch.float64))
        layers = landscape.layer_curvature(landscape.HessianOperator(net, (x, y)), probes=4)
        assert layers["unused"].top_eigenvalue == 0 and layers["unused"].trace.value == 0
    finally:
        del net._parameters["unused"]


def test_batch_statistics_are_one_line_and_bfloat16_exports_to_scipy_as_float32():
    torch.manual_seed(6)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    coupled = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                            nn.Linear(4, 2))
    for kind in ("hessian", "ggn"):
        with pytest.raises(BadInput, match="failed on one row, which .*Expected more"):
            KINDS[kind](coupled, (x, y)).matvec(torch.zeros(34))
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    exact = landscape.HessianOperator(net, (x, y)).matvec(torch.ones(26))
    scipy = landscape.HessianOperator(copy.deepcopy(net).bfloat16(), (x, y)).to_scipy()
    assert scipy.dtype == np.float32
    np.testing.assert_allclose(scipy.matvec(np.ones(26, dtype=np.float32)), exact.numpy(),
                               rtol=0.05, atol=0.02 * float(exact.abs().max()))


def test_weights_that_are_not_finite_give_nan_not_an_error():
    """A diverged checkpoint among many: its spectrum is NaN (one product), where LAPACK's and
    scipy's errors ended the whole measurement."""
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    with torch.no_grad():
        net[0].weight[0, 0] = math.nan
    H = landscape.HessianOperator(net, (torch.randn(10, 4), torch.randint(0, 3, (10,))))
    for method in ("lanczos", "power"):
        value, products = top_eigenvalue(H, method=method)
        assert math.isnan(value) and products == 1
    assert np.isnan(eigenpairs(H, k=2)[0]).all() and np.isnan(spectrum_ends(H)[0]).all()
    density = spectral_density(H, iterations=10)
    assert np.isnan(density.nodes).all() and math.isnan(hutchinson_trace(H, probes=4).value)


def test_the_fisher_of_a_model_vmap_cannot_run_is_one_line():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.head = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.gru(x)[0][:, -1])

    torch.manual_seed(3)
    x, y = torch.randn(6, 5, 3), torch.randint(0, 2, (6,))
    F_ = landscape.FisherOperator(Recurrent(), (x, y))
    with pytest.raises(BadInput, match="per-sample gradients by torch.func.vmap"):
        F_.matvec(torch.ones(F_.shape[0]))


def test_a_pass_read_in_inference_mode_is_kept_for_products(transformer):
    """Dict batches and pairs share the kept pass (sources.KeptPasses): a first pass read under
    inference mode (an evaluation) is kept as tensors autograd may save."""
    from landscape.measures.objective import DictBatches
    from landscape.measures.sources import LoaderSource

    net, ids, labels, loader = transformer
    pairs = DataLoader(TensorDataset(ids, labels), batch_size=4)
    for kept in (DictBatches(loader, device=torch.device("cpu"), dtype=torch.float64),
                 LoaderSource(pairs, device=torch.device("cpu"), dtype=torch.float64)):
        with torch.inference_mode():
            first = list(kept.batches(4))
        again = list(kept.batches(4))
        tensors = [t for batch in again for t in (batch.values() if isinstance(batch, dict)
                                                   else batch)]
        assert len(first) == len(loader) and all(not t.is_inference() for t in tensors)
    H = landscape.HessianOperator(net, loader, loss=_by_sample)
    with torch.inference_mode():
        list(H.objective.source.batches(4))
    assert torch.isfinite(H.matvec(torch.ones(H.shape[0], dtype=torch.float64))).all()


def test_top_eigenvalue_is_the_largest_magnitude_with_fewer_products_than_power_iteration():
    """Lanczos without reorthogonalization on known spectra (float32, as models are held):
    a dominant negative eigenvalue, a small gap at the top, a zero operator."""
    torch.manual_seed(7)
    basis = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64)).Q

    def operator(values):
        A = (basis * torch.as_tensor(values, dtype=torch.float64)) @ basis.T
        return Operator({"w": torch.zeros(300)}, lambda V: V @ A.float())

    bulk = np.linspace(-1.0, 1.0, 298)
    for values, expected in ((np.r_[-5.0, 3.0, bulk], -5.0), (np.r_[2.0, 1.9, bulk], 2.0)):
        value, products = top_eigenvalue(operator(values), iterations=1000, tolerance=1e-6)
        power, power_products = top_eigenvalue(operator(values), iterations=1000,
                                               tolerance=1e-6, method="power")
        assert value == pytest.approx(expected, rel=1e-4)
        assert abs(value - expected) <= abs(power - expected) + 1e-6
        assert products < power_products
    for method in ("lanczos", "power"):
        assert top_eigenvalue(operator(np.zeros(300)), method=method)[0] == 0.0
    with pytest.raises(BadInput, match="method"):
        top_eigenvalue(operator(np.zeros(300)), method="arnoldi")


def test_a_given_start_replaces_the_gaussian(case):
    """A warm start from eigenpairs' eigenvector: the top eigenvalue in one or two products.
    A start along another eigenvector stays on it (the documented risk of a start without
    weight on the top eigenvector); bad starts are one line."""
    net, x, y, dense = case
    H = landscape.HessianOperator(net, (x, y))
    values, vectors, _ = eigenpairs(H, k=2, tolerance=1e-10, iterations=200, vectors=True)
    expected = torch.linalg.eigvalsh(dense["hessian"])
    top = float(expected[-1] if expected[-1].abs() >= expected[0].abs() else expected[0])
    value, products = top_eigenvalue(H, start=vectors[0], tolerance=1e-8)
    assert value == pytest.approx(top, rel=1e-7) and products <= 2
    flat = torch.cat([t.reshape(-1) for t in vectors[0].values()])
    assert top_eigenvalue(H, start=3 * flat, tolerance=1e-8)[0] == pytest.approx(top, rel=1e-7)
    found, _, products = eigenpairs(H, k=1, start=flat, tolerance=1e-8)
    assert found[0] == pytest.approx(values[0], rel=1e-7) and products <= 2
    assert top_eigenvalue(H, start=vectors[1], tolerance=1e-8)[0] == pytest.approx(
        values[1], rel=1e-6)
    for bad, match in ((flat[:-1], "numbers"), (0 * flat, "zero"), (flat * math.nan, "finite"),
                       ({"0.weight": flat}, "each of")):
        with pytest.raises(BadInput, match=match):
            top_eigenvalue(H, start=bad)


def test_eval_batchnorm_is_differentiated_as_its_affine_map():
    """The operators' objective evaluates eval-mode BatchNorm as x * s + (b - mean s): the same
    outputs as torch's batch norm, and no batch-norm node in the graph it differentiates twice
    (whose double backward is the general formula for batch statistics)."""
    from landscape.measures.objective import objective

    net = _cnn().eval()
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    made = objective(net, (x, torch.zeros(6, dtype=torch.long)))
    leaves = {k: p.detach().requires_grad_() for k, p in made.params.items()}
    out = made.output(leaves, (x, None))
    torch.testing.assert_close(out, net(x), rtol=1e-12, atol=1e-12)
    names = _graph_names(out)
    assert "ConvolutionBackward0" in names and not any("BatchNorm" in n for n in names)
    net.train()  # batch statistics go to torch unchanged
    assert "NativeBatchNormBackward0" in _graph_names(made.output(leaves, (x, None)))


def _graph_names(out: torch.Tensor) -> set[str]:
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return {type(node).__name__ for node in seen}
