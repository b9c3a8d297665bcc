"""Curvature as linear operators on flat parameter vectors: the base class, the memory rule every
model operator shares, and the Hessian (the generalized Gauss-Newton and the empirical Fisher
are in fisher.py). The estimators (spectrum.py, trace.py) take any operator.

Convention: a vector is flat [N] over the chosen parameters (`wrt`, the model's order); a block
of k vectors is k rows [k, N] and `matmat(V)` is V A (A symmetric), as torch keeps a batch in
the leading axis. `to_scipy()` gives scipy's LinearOperator, which holds blocks as columns.

Memory, one rule for every model operator: what a chunk of rows keeps between products (its gradient
graph for the Hessian and the GGN, its per-sample gradients for the Fisher) is measured on the
data's first rows (graph_numbers: autograd's saved tensors for one row and for two), and chunks keep
it while their total fits GRAPH_NUMBERS; the chunks beyond are rebuilt at every product (then at
most twice the budget is held). Tensor data are cut into chunks of as many rows as fit a chunk's
budget: GRAPH_NUMBERS on a GPU (all rows when they fit: one call per product), CPU_GRAPH_NUMBERS on
a CPU, where a product's transient memory is its chunk's and smaller chunks run as fast (memory.py);
a DataLoader keeps its own batches. On a GPU, a product through kept chunks is replayed as a CUDA
graph (replay.py) and the Hessian takes a block of vectors in one batched backward pass.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.errors import BadInput
from landscape.measures.graphs import add_gradients, graph_numbers, saved_numbers
from landscape.measures.model import Tensors, _first_line
from landscape.measures.objective import (
    Batch,
    Inputs,
    Objective,
    Wrt,
    evaluating,
    objective,
    rows_in,
    rows_of,
)
from landscape.measures.replay import Replay
from landscape.measures.sources import KeptPasses, TensorSource
from landscape.memory import CPU_GRAPH_NUMBERS, GRAPH_NUMBERS


class Operator:
    """A symmetric linear operator on flat vectors over `params` ({name: tensor}: their shapes,
    order, dtype and device), from `product` ([k, N] -> [k, N]) or a subclass's; `products`
    counts the vectors multiplied so far."""

    def __init__(self, params: Tensors, product: Callable[[torch.Tensor], torch.Tensor]
                 | None = None) -> None:
        self.params = dict(params)
        self.sizes = [p.numel() for p in self.params.values()]
        self.products = 0
        self._function = product

    @property
    def shape(self) -> tuple[int, int]:
        n = sum(self.sizes)
        return n, n

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def matmat(self, vectors: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """A times each row of `vectors` [k, N] -> [k, N]; with `add_to` ([k, N], the
        operator's dtype and device) the product is added to it in place and it is returned,
        so that an iteration's update (Lanczos's A q - beta q') holds no [k, N] of its own."""
        vectors = torch.as_tensor(vectors, dtype=self.dtype)  # a list or an array too
        if vectors.dim() != 2 or vectors.shape[1] != self.shape[0]:
            raise BadInput(f"vectors must be rows [k, {self.shape[0]}], got {list(vectors.shape)}")
        if add_to is not None and (add_to.shape != vectors.shape or add_to.dtype != self.dtype
                                   or add_to.device != self.device):
            raise BadInput(f"add_to must be {list(vectors.shape)} of {self.dtype} on "
                           f"{self.device}, got {list(add_to.shape)} of {add_to.dtype} on "
                           f"{add_to.device}")
        if add_to is not None and (add_to.untyped_storage().data_ptr()
                                   == vectors.untyped_storage().data_ptr()):
            raise BadInput("add_to must not share memory with the vectors: the product reads "
                           "them while it adds")
        self.products += len(vectors)
        vectors = vectors.to(self.device, self.dtype)
        return self._product(vectors) if add_to is None else self._add_product(vectors, add_to)

    def matvec(self, vector: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """A v for one vector [N] (`add_to`: [N], as matmat's)."""
        return self.matmat(torch.as_tensor(vector, dtype=self.dtype).reshape(1, -1),
                           None if add_to is None else add_to.view(1, -1))[0]

    def _product(self, vectors: torch.Tensor) -> torch.Tensor:
        return self._function(vectors)

    def _add_product(self, vectors: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.add_(self._product(vectors))

    def to_scipy(self):
        """scipy.sparse.linalg.LinearOperator over numpy arrays ([N] or columns [N, k]), e.g.
        for scipy.sparse.linalg.eigsh."""
        from scipy.sparse.linalg import LinearOperator

        n = self.shape[0]
        # numpy has no bfloat16: such an operator's products come back in float32
        exported = torch.float32 if self.dtype == torch.bfloat16 else self.dtype

        def columns(block: np.ndarray) -> np.ndarray:
            rows = torch.as_tensor(np.asarray(block).reshape(n, -1).T.copy())
            return self.matmat(rows).T.cpu().to(exported).numpy()

        dtype = torch.empty((), dtype=exported).numpy().dtype
        return LinearOperator((n, n), matvec=lambda v: columns(v).reshape(np.shape(v)),
                              rmatvec=lambda v: columns(v).reshape(np.shape(v)),
                              matmat=columns, dtype=dtype)


class ModelOperator(Operator):
    """A curvature matrix of the mean loss of `model` over `data` (a pair of tensors, a split,
    or any iterable of pair or dict batches: objective.py) with respect to the parameters `wrt`
    (names or a predicate on a name; all by default), at the weights `params` (a state dict;
    the model's own by default), the model in eval mode. `loss` is a name or a callable:
    (logits, y) -> per-sample losses for pairs, (output, batch) -> per-sample losses for dict
    batches, whose model arguments `inputs(batch)` gives (objective.default_inputs by default).
    `rows` fixes the chunk size (tests); by default the memory rule chooses it. Products
    follow the weights: after an in-place change (an optimizer's step on the model's tensors,
    which the operator shares unless `params` or `device` made copies) the kept state is
    rebuilt at the next product.

        H = HessianOperator(model, loader, wrt=lambda name: name.startswith("head."))
        H.matmat(V)        # V: [k, N] -> [k, N]
    """

    def __init__(self, model: nn.Module, data: Any, *, loss: Any = "cross_entropy",
                 params: Mapping[str, torch.Tensor] | None = None, wrt: Wrt = None,
                 inputs: Inputs | None = None, device: torch.device | str | None = None,
                 rows: int | None = None) -> None:
        self._attach(objective(model, data, loss=loss, params=params, wrt=wrt, inputs=inputs,
                               device=device), rows)

    @classmethod
    def on(cls, made: Objective, *, rows: int | None = None):
        """The operator of an Objective already taken (the analyses' route)."""
        operator = cls.__new__(cls)
        operator._attach(made, rows)
        return operator

    def _attach(self, made: Objective, rows: int | None) -> None:
        if rows is not None and rows < 1:
            raise BadInput(f"rows must be at least 1, got {rows}")
        super().__init__(made.params)
        self.objective, self.rows = made, rows
        self._kept: list[Any] | None = None
        self._complete = False
        self.n = 0
        self._replay = Replay(self.device)

    def blocks(self) -> dict[str, ModelOperator]:
        """The diagonal blocks, one per layer (parameters grouped by their module's name, e.g.
        "fc.weight" and "fc.bias" as "fc"), each an operator of the same kind."""
        groups: dict[str, list[str]] = {}
        for name in self.objective.wrt:
            groups.setdefault(name.rpartition(".")[0] or name, []).append(name)
        return {group: type(self).on(self.objective.restricted(names), rows=self.rows)
                for group, names in groups.items()}

    # what a subclass defines: a chunk's kept state, how much it keeps, its share of a product
    def _build(self, batch: Batch) -> Any:
        raise NotImplementedError

    def _numbers(self, batch: Batch, total: int | None = None,
                 budget: int = GRAPH_NUMBERS) -> tuple[int, int]:
        """(numbers per row, per chunk) that _build keeps (`total`: the data's rows, if known;
        `budget`: a chunk's)."""
        made, source = self.objective, self.objective.source
        data = [source.x, source.y] if isinstance(source, TensorSource) else []
        try:
            return graph_numbers(self._build, batch, total, budget, held=[
                *made.theta.values(), *made.buffers.values(),
                *(t for t in data if t is not None)])
        except (RuntimeError, ValueError) as err:  # e.g. BatchNorm on batch statistics
            raise BadInput(f"the model failed on one row, which the operators' memory rule "
                           f"measures ({_first_line(err)}): a model coupling a batch's rows (BatchNorm on "
                           "batch statistics) has no Hessian independent of the chunks") from None

    def _counted(self, batch: Batch) -> tuple[Any, int]:
        """(_build(batch), the numbers it keeps)."""
        return saved_numbers(self._build, batch)

    def _apply(self, state: Any, vectors: torch.Tensor, out: torch.Tensor) -> None:
        raise NotImplementedError

    def _product(self, vectors: torch.Tensor) -> torch.Tensor:
        return self._add_product(vectors, torch.zeros_like(vectors))

    def _add_product(self, vectors: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # attention's fused kernels have no second derivative: the math kernel has
        with evaluating(self.objective.template), torch.enable_grad(), sdpa_kernel(
                SDPBackend.MATH), self._replay.active():
            if self._kept is None or self._versions != _versions(self.objective):
                self._keep()  # first, or the weights changed in place (an optimizer's step)
            if self._complete and self._replay.enabled:
                # the same kernels on the same memory: a CUDA graph
                return out.add_(self._replay(self._mean_of_kept, vectors))
            out.mul_(self.n)  # the chunks' shares are sums over their rows
            for state in self._kept:
                self._apply(state, vectors, out)
            for batch in () if self._complete else self._rest():
                self._apply(self._build(batch), vectors, out)
            return out.div_(self.n)

    def _rest(self) -> Iterator[Batch]:
        """A pass's rows after those of the kept chunks. The kept chunks are the first pass's
        batches: a DataLoader's own, where later passes replay its rows cut to `rows` rows."""
        skip = self._kept_rows
        for batch in self.objective.batches(self._rows):
            m = rows_in(batch)
            if skip < m:
                yield rows_of(batch, slice(skip, None)) if skip else batch
            skip = max(skip - m, 0)

    def _mean_of_kept(self, vectors: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vectors)
        for state in self._kept:
            self._apply(state, vectors, out)
        return out.div_(self.n)

    def _keep(self) -> None:
        """The memory rule (module docstring): chunk size, and the chunks whose state is kept."""
        source = self.objective.source
        total = len(source) if isinstance(source, TensorSource) else None
        chunk = GRAPH_NUMBERS if self.device.type == "cuda" else CPU_GRAPH_NUMBERS
        per_row, per_chunk = self._numbers(next(iter(self.objective.batches(2))), total, chunk)
        rows = self.rows or max(1, (chunk - per_chunk) // max(per_row, 1))
        if self.rows is None and total is not None:  # chunks of equal size, none left short
            rows = -(-total // -(-total // rows))
        kept, held, n, complete = [], 0, 0, True
        self._held = self._kept_rows = 0  # what the kept chunks hold and cover
        self._kept = None  # a rebuild's old graphs freed before the new ones are made,
        self._replay = Replay(self.device)  # and the CUDA graphs captured over their memory
        for batch in self.objective.batches(rows):
            n += rows_in(batch)
            held += per_chunk + rows_in(batch) * per_row
            if complete and held <= GRAPH_NUMBERS:
                # counted only where the count is read, a GPU's block width (_width): the
                # counting hooks cost half of a small model's build on a CPU (an MLP's kept
                # graph: 2.0 ms built, 3.1 ms counted; a sixth of its top eigenvalue)
                state, numbers = (self._counted(batch) if self.device.type == "cuda"
                                  else (self._build(batch), 0))
                kept.append(state)
                self._held += numbers
                self._kept_rows += rows_in(batch)
            else:
                complete = False
        if not complete and isinstance(source, KeptPasses) and source.kept is None:
            kept, self._held, self._kept_rows = [], 0, 0  # a loader read again at every pass
            # may shuffle: kept chunks from this pass and the rest from another would count
            # some rows twice and miss others
        self._kept, self._rows, self.n, self._complete = kept, rows, n, complete
        self._versions = _versions(self.objective)


def _versions(made: Objective) -> tuple[int, ...]:
    """The version counters of the objective's weights and buffers, which an in-place change
    (an optimizer's step on the model's own tensors) moves."""
    return tuple(t._version for t in itertools.chain(made.theta.values(),
                                                     made.buffers.values()))


class HessianOperator(ModelOperator):
    """The Hessian of the mean loss (see ModelOperator for the arguments). Each product is
    Pearlmutter's (1994) R-operator as reverse over reverse, as PyHessian (Yao et al. 2020):
    a chunk's gradient is built with its graph (create_graph) and each vector costs one backward
    pass through it; kept graphs (the memory rule) save a forward and a backward pass a
    product."""

    def _build(self, batch: Batch) -> tuple[list[torch.Tensor], list[tuple[int, torch.Tensor]]]:
        leaves = {k: p.detach().requires_grad_() for k, p in self.params.items()}
        total = self.objective.losses(leaves, batch).sum()
        if not total.requires_grad:  # no chosen parameter reaches the loss: a zero block
            return list(leaves.values()), []
        grads = torch.autograd.grad(total, list(leaves.values()), create_graph=True,
                                    allow_unused=True)
        # a parameter the loss does not reach (or reaches linearly) has no second derivative
        return list(leaves.values()), [(i, g) for i, g in enumerate(grads)
                                       if g is not None and g.requires_grad]

    def _apply(self, state, vectors: torch.Tensor, out: torch.Tensor) -> None:
        leaves, used = state
        if not used:
            return
        graphs, width = [g for _, g in used], self._width(vectors)
        for start in range(0, len(vectors), width):
            block = vectors[start:start + width]
            pieces = [p.unflatten(1, leaf.shape) for p, leaf in zip(block.split(self.sizes, 1),
                                                                     leaves)]
            targets = out[start:start + len(block)].split(self.sizes, 1)
            if len(block) == 1:
                add_gradients(graphs, [pieces[i][0] for i, _ in used], leaves,
                              [t[0] for t in targets])
                continue
            hv = torch.autograd.grad(graphs, leaves, [pieces[i] for i, _ in used],
                                     retain_graph=True, allow_unused=True,
                                     is_grads_batched=True)
            for h, piece in zip(hv, targets):
                if h is not None:
                    piece.add_(h.reshape(len(block), -1))

    def _width(self, vectors: torch.Tensor) -> int:
        """Vectors per backward pass. On a GPU a block goes through one batched backward
        (vmap; an H200, a block of 8: MLP 0.92 ms a vector against 3.6 ms one by one, CNN 2.3
        against 5.7, transformer 2.7 against 7.9) as far as its transients, up to the kept
        graph's size per vector, fit the graph budget again; on a CPU one at a time, which was
        faster there (8 vectors, MLP 0.073 s against 0.115 s batched; benchmarks/RESULTS.md)."""
        if not vectors.is_cuda:
            return 1
        return max(1, min(len(vectors), GRAPH_NUMBERS // max(self._held, 1)))
