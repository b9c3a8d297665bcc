"""The Hessian's trace and diagonal split along the generalized Gauss-Newton matrix:
tr H = tr G + tr R.

H = G + R, with G = (1/n) sum_i J_i' H_i J_i (fisher.py) and R = (1/n) sum_i sum_k r_ik d2 f_ik,
the curvature of the model's own outputs f_i weighted by the loss gradient r_i = dl_i / df_i.

- tr G exactly, no Hessian-vector product: (1/n) sum_i <H_i, J_i J_i'>, H_i [d, d] sample i's
  loss Hessian by its d outputs. Layers with a rule (layerrules.py: linear, convolution,
  BatchNorm, LayerNorm, embedding) take d backward passes of the batch; the other parameters
  per-sample Jacobians J_i [d, N'] (torch.func's vmap over the rows of jacrev), which work for
  any module that runs on one sample. The trace and the diagonal are sums over parameters, so
  the two parts add.
- tr R is zero when the model is piecewise linear in each chosen parameter on its own
  (`piecewise_linear`: linear and convolutional layers, ReLU, max pooling, BatchNorm in eval
  mode, residual sums, ...): every d2 f / d theta_j^2 then vanishes, and with it R's diagonal.
  The trace is exact, standard error 0.
- Otherwise Hutchinson estimates tr R from R's products (R is the Hessian of the per-sample
  losses <f_i, r_i> with r_i held fixed: `Linearized`). Its variance is R's off-diagonal mass
  instead of H's: fewer probes for the same standard error where G carries most of H
  (benchmarks/RESULTS.md).
- The diagonal alike (`split_diagonal`): G's exactly, each column's (1/n) sum_i J_i[:, p]' H_i
  J_i[:, p], plus R's, zero or estimated (Bekas et al.).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

from landscape.errors import BadInput
from landscape.measures import layerrules
from landscape.measures.model import Tensors, _first_line
from landscape.measures.objective import Batch, Objective, evaluating, rows_in, rows_of
from landscape.measures.operators import HessianOperator, ModelOperator
from landscape.measures.trace import Diagonal, Estimate, diagonal, hutchinson_trace
from landscape.memory import GRAPH_NUMBERS, JACOBIAN_NUMBERS

# autograd nodes by how they map their inputs: jointly linear ones; ones linear in each input
# with the others fixed (a product, a layer's weight times its input); piecewise linear ones.
# A name not listed counts as nonlinear: the check may miss a piecewise-linear model, never
# pass a curved one.
LINEAR = frozenset("""AddBackward0 AddBackward1 SubBackward0 SubBackward1 RsubBackward0
    RsubBackward1 NegBackward0 MulBackward1 DivBackward1 ViewBackward0 UnsafeViewBackward0
    ReshapeAliasBackward0 AsStridedBackward0 AliasBackward0 PermuteBackward0 TransposeBackward0
    TBackward0 ExpandBackward0 CloneBackward0 SqueezeBackward0 SqueezeBackward1 SqueezeBackward2
    UnsqueezeBackward0 SumBackward0 SumBackward1 MeanBackward0 MeanBackward1 CatBackward0
    StackBackward0 SelectBackward0 SliceBackward0 IndexBackward0 IndexSelectBackward0
    GatherBackward0 SplitBackward0 SplitWithSizesBackward0 UnbindBackward0 RepeatBackward0
    FlipBackward0 RollBackward0 ToCopyBackward0 EmbeddingBackward0 WhereBackward0
    ConstantPadNdBackward0 ReflectionPad1DBackward0 ReflectionPad2DBackward0
    ReplicationPad1DBackward0 ReplicationPad2DBackward0 AvgPool2DBackward0 AvgPool3DBackward0
    AdaptiveAvgPool2DBackward0 AdaptiveAvgPool3DBackward0 UpsampleNearest2DBackward0
    UpsampleBilinear2DBackward0 PixelShuffleBackward0""".split())
BILINEAR = frozenset("""MulBackward0 MmBackward0 AddmmBackward0 BmmBackward0 BaddbmmBackward0
    MvBackward0 AddmvBackward0 DotBackward0 ConvolutionBackward0""".split())
PIECEWISE = frozenset("""ReluBackward0 LeakyReluBackward0 HardtanhBackward0 ThresholdBackward0
    ClampBackward1 ClampMinBackward0 ClampMaxBackward0 AbsBackward0 MaxPool2DWithIndicesBackward0
    MaxPool3DWithIndicesBackward0 AdaptiveMaxPool2DBackward0 MaxBackward0 MaxBackward1
    MinBackward0 MinBackward1 AmaxBackward0 AminBackward0""".split())


def piecewise_linear(output: torch.Tensor, leaves: Sequence[torch.Tensor]) -> bool:
    """Whether `output`'s autograd graph is piecewise linear in each of `leaves` on its own:
    every node jointly linear or piecewise linear, or linear in each input where no leaf reaches
    two of its inputs (x * x, attention's Q K', a tied weight are not)."""
    if output.grad_fn is None:
        return True
    bit = {id(leaf): 1 << i for i, leaf in enumerate(leaves)}
    reach: dict[Any, int] = {}   # node -> the leaves it depends on, as a bit mask
    stack = [(output.grad_fn, False)]
    while stack:  # depth first, children before parents, no recursion (deep networks)
        node, ready = stack.pop()
        if node in reach:
            continue
        inputs = [fn for fn, _ in node.next_functions if fn is not None]
        if not ready:
            stack.append((node, True))
            stack.extend((fn, False) for fn in inputs if fn not in reach)
            continue
        name = type(node).__name__
        masks = [reach[fn] for fn in inputs]
        if name == "AccumulateGrad":
            reach[node] = bit.get(id(node.variable), 0)
            continue
        if name == "DivBackward0":  # x / y: linear in x while y is constant in every leaf
            divisor = node.next_functions[1][0]
            if divisor is not None and reach[divisor]:
                return False
        elif name in BILINEAR:
            seen = 0
            for mask in masks:
                if seen & mask:
                    return False
                seen |= mask
        elif name not in LINEAR and name not in PIECEWISE and any(masks):
            return False
        combined = 0
        for mask in masks:
            combined |= mask
        reach[node] = combined
    return True


@dataclasses.dataclass(frozen=True)
class Linearized(Objective):
    """The per-sample losses <f_i, r_i>, r_i = dl_i / df_i at the model's own output held
    fixed: the same first derivative as the loss, and R (the module's text) as Hessian."""

    def scored(self, output: Any, batch: Batch) -> torch.Tensor:
        z = output.detach().requires_grad_()
        with torch.enable_grad():
            (r,) = torch.autograd.grad(super().scored(z, batch).sum(), z)
        return (output * r).reshape(len(r), -1).sum(1)


def linearized(made: Objective) -> Linearized:
    return Linearized(**{f.name: getattr(made, f.name) for f in dataclasses.fields(made)})


def ggn_diagonal(operator: ModelOperator) -> Tensors:
    """The diagonal of G exactly, {name: tensor shaped as the parameter}: (1/n) sum_i of each
    column's J_i[:, p]' H_i J_i[:, p] (the module's text), for the model, data, loss and
    parameters of any model operator (a HessianOperator's or GGNOperator's)."""
    return _ggn(operator, diagonal=True)[1]


def ggn_trace(operator: ModelOperator) -> float:
    """tr G exactly: (1/n) sum_i <H_i, J_i J_i'>, the sum of ggn_diagonal (per-sample Jacobians
    reduced to [d, d] Gram matrices, without the [m, d, N] product a diagonal needs)."""
    return _ggn(operator, diagonal=False)[0]


def _ggn(operator: ModelOperator, *, diagonal: bool) -> tuple[float, Tensors]:
    """(tr G, diag G if `diagonal`): the ruled parameters' by layer rules, the rest's from
    per-sample Jacobians; both go over every row once, the first of them counts the rows."""
    made, outputs = _of_model(operator)
    names, copied = _ruled(made)
    total, n = 0.0, 0
    squares = {k: torch.zeros_like(p) for k, p in made.params.items()} if diagonal else {}
    for batch in _chunks(made, _rule_rows(made, names, copied)) if names else ():
        n += rows_in(batch)
        found, ruled = layerrules.sums(made, names, copied, batch, _factors(made, batch),
                                       diagonal=diagonal)
        total += found
        for name, t in (ruled or {}).items():
            squares[name] += t
    rest = made.restricted([k for k in made.wrt if k not in names])
    for hessians, jacobian in _per_sample(rest, outputs) if rest.wrt else ():
        m, d = hessians.shape[:2]
        n += 0 if names else m
        for name, j in jacobian.items():
            flat = j.reshape(m, d, -1)                                          # [m, d, P]
            if diagonal:
                squares[name] += (flat * (hessians @ flat)).sum((0, 1)).view_as(squares[name])
            else:
                total += float((hessians * (flat @ flat.transpose(1, 2))).sum())
        del hessians, jacobian  # freed before the next chunk's are made, not after
    if diagonal:
        total = float(sum(t.sum() for t in squares.values()))
    return total / n, {k: t.div_(n) for k, t in squares.items()}


def _of_model(operator: ModelOperator) -> tuple[Objective, int]:
    """(the operator's objective, a sample's outputs d), checked: a model operator whose model
    returns a tensor."""
    if not isinstance(operator, ModelOperator):
        raise BadInput("the GGN's diagonal and trace need an operator of a model "
                       "(HessianOperator, GGNOperator or FisherOperator)")
    made = operator.objective
    with evaluating(made.template), sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        try:
            output = made.output(made.params, rows_of(next(iter(made.batches(1))), slice(1)))
        except Exception as err:  # noqa: BLE001 - e.g. BatchNorm on batch statistics
            raise BadInput(f"the GGN's per-sample terms need a model that runs on one sample: "
                           f"{_first_line(err)}") from None
    if not isinstance(output, torch.Tensor):
        raise BadInput(f"the GGN (exact in the split trace and diagonal) needs a model that "
                       f"returns a tensor, not a {type(output).__name__}: hutchinson_trace and "
                       "diagonal take any model")
    return made, output[0].numel()


def _ruled(made: Objective) -> tuple[tuple[str, ...], frozenset[str]]:
    """layerrules.covered on the objective's first three rows."""
    with evaluating(made.template), sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        return layerrules.covered(made, next(iter(made.batches(3))))


def _rule_rows(made: Objective, names: tuple[str, ...], copied: frozenset[str]) -> int:
    with evaluating(made.template), sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        return layerrules.chunk_rows(made, names, copied, next(iter(made.batches(2))))


def _chunks(made: Objective, rows: int) -> Iterator[Batch]:
    """The data in chunks of at most `rows` rows (a DataLoader's batches cut, not joined), under
    eval mode and the math attention kernel."""
    with evaluating(made.template), sdpa_kernel(SDPBackend.MATH):
        for batch in made.batches(rows):
            for start in range(0, rows_in(batch), rows):
                yield rows_of(batch, slice(start, start + rows))


def _factors(made: Objective, batch: Batch) -> Callable[[torch.Tensor],
                                                        tuple[torch.Tensor, torch.Tensor]]:
    """output -> (eigenvalues [m, d], eigenvectors [m, d, d]) of each sample's loss Hessian by
    its output: H_i = sum_c l_ic u_ic u_ic'."""
    return lambda output: _eigh(_loss_hessians(made, output, batch))


def _eigh(hessians: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh of [m, d, d], in its dtype: a half or bfloat16 model's in float32 and
    cast back, as eigh has no half kernels (the d x d matrices are small)."""
    if hessians.dtype not in (torch.float16, torch.bfloat16):
        return torch.linalg.eigh(hessians)
    values, vectors = torch.linalg.eigh(hessians.float())
    return values.to(hessians.dtype), vectors.to(hessians.dtype)


def _loss_hessians(made: Objective, output: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Each sample's loss Hessian by its output [m, d, d] (zero for a loss linear in it)."""
    m, d = len(output), output[0].numel()
    z = output.detach().requires_grad_()
    with torch.enable_grad():
        (dz,) = torch.autograd.grad(made.scored(z, batch).sum(), z, create_graph=True)
        if not dz.requires_grad:  # a loss linear in the output: G = 0
            return output.new_zeros(m, d, d)
        units = torch.eye(d, dtype=output.dtype, device=output.device)
        (columns,) = torch.autograd.grad(dz, z, units.reshape(d, 1, *z.shape[1:]).expand(
            d, *z.shape), is_grads_batched=True)                   # column k of every H_i
    return columns.reshape(d, m, d).transpose(0, 1)


def _per_sample(made: Objective, outputs: int) -> Iterator[tuple[torch.Tensor, Tensors]]:
    """(per-sample loss Hessians by the output [m, d, d], per-sample Jacobians {name: [m, d,
    *shape]}) for chunks of rows whose Jacobians hold about JACOBIAN_NUMBERS numbers (`outputs`:
    d, a sample's outputs)."""
    params = {k: p.detach() for k, p in made.params.items()}
    count = sum(p.numel() for p in params.values())
    if outputs * count > GRAPH_NUMBERS:
        raise BadInput(f"one sample's Jacobian ({outputs} outputs x {count:,} parameters) does "
                       "not fit the memory budget: use Hutchinson's trace instead")
    for batch in _chunks(made, max(1, JACOBIAN_NUMBERS // (outputs * count))):
        yield _chunk(made, params, batch)


def _chunk(made: Objective, params: Tensors, batch: Batch) -> tuple[torch.Tensor, Tensors]:
    """_per_sample's pair for one chunk of rows."""
    def one(chosen: Tensors, sample: Any) -> torch.Tensor:
        return made.output(chosen, tree_map(lambda t: t.unsqueeze(0), sample)).reshape(-1)

    with torch.no_grad():
        output = made.output(params, batch)
    hessians = _loss_hessians(made, output, batch)
    try:
        jacobian = torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0))(
            params, batch)                                                  # {name: [m, d, ...]}
    except Exception as err:  # noqa: BLE001 - whatever torch.func refuses, said in one line
        raise BadInput(f"per-sample Jacobians need a model that runs on one sample under "
                       f"torch.func.vmap: {_first_line(err)}") from None
    return hessians, jacobian


def split_trace(operator: HessianOperator, *, probes: int = 100, stderr: float | None = None,
                seed: int = 0) -> Estimate:
    """tr H as tr G (exact) plus tr R (the module's text): exact, standard error 0, when the
    model is piecewise linear in each chosen parameter; else Hutchinson on R over `probes`
    Rademacher vectors, or fewer once its standard error is at most `stderr`."""
    residual = _residual(operator, "trace")
    if residual is None:
        return Estimate(ggn_trace(operator), 0.0)
    rest = hutchinson_trace(residual, probes=probes, stderr=stderr, seed=seed)
    del residual  # its kept graphs freed before the Jacobians take their (smaller) memory
    return Estimate(ggn_trace(operator) + rest.value, rest.stderr)


def split_diagonal(operator: HessianOperator, *, probes: int = 100, seed: int = 0) -> Diagonal:
    """H's diagonal as G's (exact) plus R's: exact, standard errors 0, when the model is piecewise
    linear in each chosen parameter (then R's diagonal is zero); else Bekas et al.'s estimate
    of R's over `probes` Rademacher vectors (trace.diagonal), with its standard errors."""
    residual = _residual(operator, "diagonal")
    if residual is None:
        exact = ggn_diagonal(operator)
        return Diagonal(exact, {k: torch.zeros_like(t) for k, t in exact.items()})
    rest = diagonal(residual, probes=probes, seed=seed)
    del residual  # as in split_trace
    exact = ggn_diagonal(operator)
    return Diagonal({k: exact[k] + rest.value[k] for k in exact}, rest.stderr)


def _residual(operator: HessianOperator, what: str) -> HessianOperator | None:
    """R's operator, or None when R's diagonal is zero (the model piecewise linear in each
    chosen parameter)."""
    if not isinstance(operator, HessianOperator):
        raise BadInput(f"the split {what} is the Hessian's: it needs a HessianOperator")
    _of_model(operator)  # a model that returns a tensor (G's J), said before any work
    if _piecewise(operator.objective):
        return None
    return HessianOperator.on(linearized(operator.objective), rows=operator.rows)


def _piecewise(made: Objective) -> bool:
    """piecewise_linear on the graph of the objective's first row."""
    leaves = {k: p.detach().requires_grad_() for k, p in made.params.items()}
    with evaluating(made.template), sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        output = made.output(leaves, next(iter(made.batches(1))))
    return isinstance(output, torch.Tensor) and piecewise_linear(output, list(leaves.values()))
