"""Curvature by layer, as PyHessian's users ask of it: each layer's diagonal block of a model
operator (operators.ModelOperator.blocks: the Hessian's, the GGN's or the Fisher's) with its
top eigenvalue and trace."""

from __future__ import annotations

from typing import Callable, NamedTuple

from landscape.errors import BadInput
from landscape.measures.operators import ModelOperator
from landscape.measures.spectrum import top_eigenvalue
from landscape.measures.trace import Estimate, hutchinson_trace


class LayerCurvature(NamedTuple):
    """One layer's diagonal block: its top eigenvalue (Lanczos) and trace (Hutchinson)."""

    top_eigenvalue: float
    trace: Estimate


def layer_curvature(operator: ModelOperator, *, iterations: int = 100, tolerance: float = 1e-4,
                    probes: int = 100, seed: int = 0,
                    trace: Callable[..., Estimate] = hutchinson_trace
                    ) -> dict[str, LayerCurvature]:
    """{layer: LayerCurvature} over the operator's per-layer diagonal blocks (`blocks()`), as
    PyHessian's users ask of it: which layers are sharp. The blocks' traces sum to the whole
    operator's trace, and each block's largest eigenvalue is at most the whole's (Cauchy's
    interlacing). `trace`: each block's trace, a function (operator, probes=, seed=) ->
    Estimate: hutchinson_trace, or split.split_trace (exact for a block whose parameters the
    model is piecewise linear in)."""
    if not isinstance(operator, ModelOperator):
        raise BadInput("per-layer blocks need an operator of a model (HessianOperator, "
                       "GGNOperator or FisherOperator)")
    blocks, found = operator.blocks(), {}
    for layer in list(blocks):  # each block's kept graph (the whole forward) freed after it
        block = blocks.pop(layer)
        found[layer] = LayerCurvature(
            top_eigenvalue(block, iterations=iterations, tolerance=tolerance, seed=seed)[0],
            trace(block, probes=probes, seed=seed))
    return found
