"""The generalized Gauss-Newton matrix and the empirical Fisher of a loss as linear operators
(operators.py: the conventions, the arguments and the memory rule they share).

- GGN (Schraudolph 2002; Martens 2020, Sec. 8): G = (1/n) sum_i J_i' H_i J_i, J_i the Jacobian
  of sample i's model output by the parameters, H_i the Hessian of its loss by that output
  (for softmax cross-entropy diag(p) - p p'). It is the Hessian without the term of the
  output's own curvature, positive semi-definite for a convex loss. H_i comes from autograd on
  the loss as given (any loss, named or callable), J v from the double-backward trick (J v is
  the derivative by u of J'u, a graph linear in u) and J'w from one backward pass: each chunk
  keeps the forward graph, the graph of J'u and the loss's gradient by the output, so that a
  product costs three backward passes through kept graphs and no forward pass.
- Empirical Fisher (Martens 2020, Sec. 11): F = (1/n) sum_i g_i g_i', g_i the gradient of
  sample i's loss, from torch.func's vmap(grad) over the rows. A chunk keeps its per-sample
  gradients [m, N]; a product is two matrix products. The memory rule counts them as N numbers
  a row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_map

from landscape.errors import BadInput
from landscape.measures.graphs import add_gradients
from landscape.measures.model import Tensors, _first_line
from landscape.measures.objective import Batch, Objective
from landscape.measures.operators import ModelOperator
from landscape.memory import GRAPH_NUMBERS


class GGNOperator(ModelOperator):
    """The generalized Gauss-Newton matrix J'HJ of the mean loss (see the module's text and
    operators.ModelOperator for the arguments); the model must return a tensor."""

    def _build(self, batch: Batch) -> tuple:
        leaves = {k: p.detach().requires_grad_() for k, p in self.params.items()}
        out = self.objective.output(leaves, batch)
        if not isinstance(out, torch.Tensor):
            raise BadInput(f"the GGN needs a model that returns a tensor, not a "
                           f"{type(out).__name__}")
        z = out.detach().requires_grad_()   # the output as the loss's own variable
        (dz,) = torch.autograd.grad(self.objective.scored(z, batch).sum(), z, create_graph=True)
        u = torch.zeros_like(out, requires_grad=True)
        inputs = list(leaves.values())
        if not out.requires_grad:  # no chosen parameter moves the output: a zero block
            return inputs, out, z, dz, u, []
        jtu = torch.autograd.grad(out, inputs, u, create_graph=True, allow_unused=True)
        used = [(i, g) for i, g in enumerate(jtu) if g is not None and g.requires_grad]
        return inputs, out, z, dz, u, used

    def _apply(self, state, vectors: torch.Tensor, out: torch.Tensor) -> None:
        inputs, output, z, dz, u, used = state
        if not used or not dz.requires_grad:  # no parameter moves the output, or a linear loss
            return
        for v, row in zip(vectors, out):
            pieces = v.split(self.sizes)
            (jv,) = torch.autograd.grad([g for _, g in used], u,
                                        [pieces[i].view(g.shape) for i, g in used],
                                        retain_graph=True)                    # J v: [m, ...]
            (hjv,) = torch.autograd.grad(dz, z, jv, retain_graph=True)      # H J v
            add_gradients([output], [hjv], inputs, row.split(self.sizes))     # J' H J v


class FisherOperator(ModelOperator):
    """The empirical Fisher (1/n) sum_i g_i g_i' of the per-sample loss gradients (see the
    module's text and operators.ModelOperator for the arguments)."""

    def _build(self, batch: Batch) -> torch.Tensor:
        grads = per_sample_gradients(self.objective, batch)
        m = next(iter(grads.values())).shape[0]
        return torch.cat([g.reshape(m, -1) for g in grads.values()], 1)     # [m, N]

    def _numbers(self, batch: Batch, total: int | None = None,
                 budget: int = GRAPH_NUMBERS) -> tuple[int, int]:
        return self.shape[0], 0  # a row's gradient, whatever the budget

    def _counted(self, batch: Batch) -> tuple[torch.Tensor, int]:
        state = self._build(batch)
        return state, state.numel()

    def _apply(self, state: torch.Tensor, vectors: torch.Tensor, out: torch.Tensor) -> None:
        out.addmm_(vectors @ state.T, state)                                   # V G' G


def per_sample_gradients(made: Objective, batch: Batch) -> Tensors:
    """Each sample's loss gradient {name: [m, *shape]} over the chosen parameters: vmap(grad)
    over the batch's rows, each seen as a batch of one."""
    def one(chosen: Tensors, sample: Any) -> torch.Tensor:
        return made.losses(chosen, tree_map(lambda t: t.unsqueeze(0), sample)).sum()

    try:
        return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0))(
            {k: p.detach() for k, p in made.params.items()}, batch)
    except Exception as err:  # noqa: BLE001 - whatever torch.func refuses (nn.GRU, nn.LSTM)
        raise BadInput(f"the empirical Fisher needs per-sample gradients by torch.func.vmap, "
                       f"which this model does not run under ({_first_line(err)}); "
                       "wrt= the parameters of the layers it can run, or the GGN") from None
