"""How a measurement (hessian.py, worstcase.py, pacbayes.py, outputs.py) takes a model and its
data, evaluate it at other weights, and cut the data into disjoint batches of m samples.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from landscape.errors import BadInput
from landscape.flooding import Loss, check_loss
from landscape.measures.evaluation import mean_loss
from landscape.measures.filternorm import parameters_of
from landscape.measures.model import Tensors, _dtype, _prepared, check_data
from landscape.measures.sources import Source, TensorSource, as_source
from landscape.measures.stack import Ensemble
from landscape.memory import rows_of


@dataclass(frozen=True)
class Taken:
    """A model ready to be measured: the module, its parameters theta and buffers (eval mode),
    the data as a Source and the rows a chunk may hold."""

    template: nn.Module
    theta: Tensors
    buffers: Tensors
    source: Source
    loss: Loss
    rows: int


@contextlib.contextmanager
def taken(model: nn.Module, data: Any, loss: Loss, params: Mapping[str, torch.Tensor] | None,
          device: torch.device | str | None, *, gradients: bool = False) -> Iterator[Taken]:
    """The model, state and data of a measurement, checked (bad data in one line)."""
    loss = check_loss(loss)
    with _prepared(model, params, device) as (template, state):
        theta, buffers = parameters_of(template, state)
        first = next(iter(theta.values()))
        source = as_source(data, device=first.device, dtype=_dtype(state))
        check_data(template, state, {"data": source}, loss)
        template.eval()  # every measure reads the model in eval mode (dropout off, BN's statistics)
        rows = rows_of(template, source, 1, first.device, gradients=gradients)
        yield Taken(template, theta, buffers, source, loss, rows)


class Point:
    """One parameter set held as a K = 1 Ensemble, moved to new weights in place (no copy of
    the module per evaluation), evaluated by evaluation.mean_loss."""

    def __init__(self, model: Taken) -> None:
        first = next(iter(model.theta.values()))
        self.model = model
        self.ensemble = Ensemble(model.template, [{**model.theta, **model.buffers}],
                                 device=first.device, dtype=first.dtype)

    def loss(self, weights: Tensors, source: Source | None = None, *,
             gradients: bool = False) -> tuple[float, Tensors | None]:
        """(mean loss over the source, its gradient {name: tensor} if asked) at `weights`."""
        with torch.no_grad():
            for name, slot in self.ensemble.params.items():
                slot[0].copy_(weights[name])
        value, _, grads = mean_loss(self.ensemble, source or self.model.source, self.model.loss,
                                    self.model.rows, gradients=gradients)
        return float(value[0]), None if grads is None else {k: g[0] for k, g in grads.items()}


def all_rows(source: Source, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole data as (x [n, ...], y [n]): a DataLoader's batches gathered once."""
    if isinstance(source, TensorSource) and source.split is None:
        return source.x, source.y
    pairs = list(source.batches(rows))
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


def disjoint_batches(n: int, m: int, seed: int, what: str = "m") -> list[torch.Tensor]:
    """n // m disjoint index batches [m] of rows 0..n-1 (the n mod m others unused): one draw of
    torch.randperm(n, generator=torch.Generator().manual_seed(seed)) cut into m-row pieces, so
    that a data set ordered by class still gives mixed batches; for m = n, the rows in their
    order. Bad input unless 1 <= m <= n (`what` names m in the message)."""
    if not 1 <= m <= n:
        raise BadInput(f"{what} must be between 1 and the data's {n} rows, got {m}")
    if m == n:
        return [torch.arange(n)]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(order[:n - n % m].view(-1, m))
