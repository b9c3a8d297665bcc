"""The filter-normalized gradient amplitude (paper Sec. 5.2) of one or many parameter sets.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.flooding import Loss, check_loss
from landscape.measures.evaluation import mean_loss
from landscape.measures.filternorm import amplitude
from landscape.measures.model import _dtype, _norm, _prepared, check_data
from landscape.measures.options import Normalization
from landscape.measures.sources import Source, as_source
from landscape.measures.stack import Ensemble
from landscape.memory import rows_of
from landscape.progress import progress_bar


def gradient_amplitude(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                       params: Mapping[str, torch.Tensor] | None = None,
                       normalization: str = "filter", include_biasbn: bool = False,
                       device: torch.device | str | None = None) -> float:
    """The l2 norm of the gradient of the mean loss over `data` with each filter's entries
    multiplied by the filter's norm (paper Sec. 5.2; `normalization="layer"`: each tensor's)."""
    loss = check_loss(loss)
    with _prepared(model, params, device) as (template, state):
        first = next(iter(state.values()))
        source = {"data": as_source(data, device=first.device, dtype=_dtype(state))}
        check_data(template, state, source, loss)
        out = amplitudes(template, [state], source, loss, _norm(normalization, include_biasbn),
                         splits=("data",))
    return float(out["data_grad"][0])


def amplitudes(template: nn.Module, states: Sequence[Mapping[str, torch.Tensor]],
               sources: Mapping[str, Source], loss: Loss, normalization: Normalization, *,
               splits: Sequence[str], members: int = 1, progress: bool = False,
               label: str = "") -> dict[str, np.ndarray]:
    """Per state dict: `<name>_loss` and `<name>_acc` on every source, and `<name>_grad`, the
    gradient amplitude of its mean loss, for the sources named in `splits` (NaN for the others).
    `members` states are stacked as one Ensemble. Returns 1-D arrays over the states."""
    first = next(iter(states[0].values()))
    rows = {name: rows_of(template, source, members, first.device, gradients=True)
            for name, source in sources.items()}
    out = {f"{name}_{m}": np.full(len(states), np.nan) for name in sources
           for m in ("grad", "loss", "acc")}
    starts = range(0, len(states), members)
    with progress_bar(starts, enabled=progress, label=label) as bar:
        for start in bar:
            chunk = [dict(s) for s in states[start:start + members]]
            ensemble = Ensemble(template, chunk, device=first.device, dtype=first.dtype)
            theta = {n: p.detach() for n, p in ensemble.params.items()}
            where = slice(start, start + len(chunk))
            for name, source in sources.items():
                split_loss, split_acc, grads = mean_loss(ensemble, source, loss, rows[name],
                                                         gradients=name in splits)
                if grads is not None:
                    out[f"{name}_grad"][where] = amplitude(grads, theta, normalization,
                                                           batch=1).double().cpu().numpy()
                out[f"{name}_loss"][where] = split_loss.numpy()
                out[f"{name}_acc"][where] = split_acc.numpy()
    return out
