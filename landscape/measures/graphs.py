"""Autograd graphs kept between backward passes, as the curvature operators keep a chunk's
gradient graph (operators.py): what building one saves, counted for the memory rule, and
gradients through one added into place."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from landscape.measures.objective import Batch, rows_in, rows_of
from landscape.memory import GRAPH_NUMBERS


def add_gradients(outputs: list[torch.Tensor], grad_outputs: list[torch.Tensor],
                  leaves: list[torch.Tensor], targets: list[torch.Tensor]) -> None:
    """Adds the gradient of sum(outputs * grad_outputs) by each leaf to its flat target (a
    piece of a product's [N] row), in place, through a kept graph (retained). Autograd adds a
    leaf's gradient into an existing .grad in place, so each one is freed as it lands instead
    of all N numbers being held at once (the MLP's top eigenvalue: at PyHessian's peak memory
    rather than a vector above it)."""
    for leaf, target in zip(leaves, targets):
        leaf.grad = target.view(leaf.shape)
    try:
        torch.autograd.backward(outputs, grad_outputs, retain_graph=True, inputs=leaves)
    finally:
        for leaf in leaves:
            leaf.grad = None


def graph_numbers(build: Callable[[Batch], Any], batch: Batch, total: int | None = None,
                  budget: int = GRAPH_NUMBERS, held: Iterable[torch.Tensor] = ()
                  ) -> tuple[int, int]:
    """(numbers per row, numbers per chunk) that `build` keeps for later products: the tensors
    autograd saves while it runs, counted by their storages, for the batch's first row and its
    first two. A CNN of 3 conv blocks on 32 x 32 images keeps 261k numbers a row for its
    gradient graph, half of the earlier estimate (4 x weight layers x the widest layer). When
    the data's `total` rows times the first row's numbers fit a chunk's `budget`, all of them
    fit in one chunk: the second build is skipped (a tenth of a small model's top eigenvalue)
    and (first row's numbers, 0) returned, a bound. Tensors `held` anyway (the model's
    parameters and the data's tensors, which a linear layer's graph saves) cost a kept graph
    nothing and are not counted: counted, they were a chunk's fixed part again for every
    chunk, and they made an MLP's first row look 47 times its size, so that it needed the
    second build."""
    one = saved_numbers(build, rows_of(batch, slice(1)), held)[1]
    if rows_in(batch) < 2 or (total is not None and total * one <= budget):
        return one, 0  # one-row batches: the whole graph counted per row
    per_row = max(saved_numbers(build, rows_of(batch, slice(2)), held)[1] - one, 1)
    return per_row, max(one - per_row, 0)


def saved_numbers(build: Callable[[Batch], Any], batch: Batch,
                  held: Iterable[torch.Tensor] = ()) -> tuple[Any, int]:
    """(build(batch), the numbers autograd saved meanwhile, counted once per storage, except
    the storages of the tensors `held`)."""
    skipped = {t.untyped_storage().data_ptr() for t in held}
    storages: dict[tuple[int, torch.dtype], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skipped:
            storages[(storage.data_ptr(), tensor.dtype)] = (storage.nbytes()
                                                            // tensor.element_size())
        # detached: a saved output packed as itself holds its own grad_fn, a cycle through C++
        # that Python's collector cannot see, and the graph was never freed (every kept graph
        # counted on a GPU, and the rule's one- and two-row graphs everywhere: 20 MB a build
        # for a CNN). Autograd gives the unpacked tensor its grad_fn back.
        return tensor.detach()

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        state = build(batch)
    return state, sum(storages.values())
