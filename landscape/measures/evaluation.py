"""Whole-data evaluation for every measurement: mean loss, accuracy and gradients of one or many
parameter sets of one architecture (mean_loss), the mean loss under many state dicts
(losses_at) and per-sample losses (sample_losses).

Data come from a Source (sources.py): our in-memory splits, a user's tensors or a DataLoader. One
rule sizes a chunk of rows for the trainer and the analyses alike (memory.rows_for): the device's
evaluation budget (memory.eval_numbers) over members x the numbers one row occupies in the
widest layer, which the module itself tells.

Analyses evaluate whole splits (20,000 test points for the synthetic sets), not mini-batches, so
one model's matmuls over a cache-sized chunk of rows already keep a CPU busy at every width:
measured on this 2-core CPU (one thread), a width-32 MLP took 8 ms per model alone against 12-16 ms
stacked 4-51 under vmap, width 128 about the same either way, width 500 0.87 s alone against
0.93 s stacked 4. So on a CPU analyses loop. On a GPU one model's evaluation is launch overhead,
which stacking shares: there the training rule (memory.auto_chunk_size) decides, within a memory
bound, since analyses stack whole copies of the parameters (and, for gradients, as many gradients).
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.flooding import Loss, per_sample_loss, predictions, token_means
from landscape.measures.sources import Source
from landscape.measures.stack import Ensemble
from landscape.progress import progress_bar


def mean_loss(ensemble: Ensemble, source: Source, loss: Loss, rows: int, *,
              gradients: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """Each member's mean loss [K] and accuracy [K] over the whole source (eval mode); with
    `gradients`, also each member's gradient of its mean loss ({name: [K, ...]}). Every chunk adds
    grad(sum of its losses), divided by n at the end, so the total is the full-data mean's gradient
    at the memory of one chunk; members are independent, so the gradient w.r.t. the stacked
    parameters holds each member's own. Accuracy is NaN for labels that are not classes."""
    if ensemble.template.training:  # walking the modules costs ~0.4 ms, a tenth of a narrow point
        ensemble.train(False)
    params = list(ensemble.params.values())
    grads = [torch.zeros_like(p) for p in params] if gradients else []
    loss_sum = hits = None
    n = 0
    with contextlib.nullcontext() if gradients else torch.inference_mode():
        for x, y in source.batches(rows):
            logits = ensemble.forward(x, shared=True)                      # [K, c, C]
            losses = token_means(per_sample_loss(logits, y, loss), 1)      # [K, c]
            if gradients:
                for total, g in zip(grads, torch.autograd.grad(losses.sum(), params)):
                    total += g
            chunk_loss = losses.detach().sum(-1).double()
            chunk_hits = (token_means((predictions(logits.detach(), loss) == y).double(),
                                      1).sum(-1)
                          if not y.is_floating_point() else torch.full_like(chunk_loss, math.nan))
            loss_sum = chunk_loss if loss_sum is None else loss_sum + chunk_loss
            hits = chunk_hits if hits is None else hits + chunk_hits
            n += len(y)
    if gradients:
        for g in grads:
            g /= n
    return ((loss_sum / n).cpu(), (hits / n).cpu(),
            dict(zip(ensemble.params, grads)) if gradients else None)


def losses_at(template: nn.Module, states: list[Mapping[str, torch.Tensor]], source: Source,
              loss: Loss, *, at_once: int, rows: int) -> np.ndarray:
    """The mean loss under each state dict [len(states)], `at_once` stacked."""
    first = next(iter(states[0].values()))
    out = []
    for start in range(0, len(states), at_once):
        ensemble = Ensemble(template, [dict(s) for s in states[start:start + at_once]],
                            device=first.device, dtype=first.dtype)
        out.append(mean_loss(ensemble, source, loss, rows)[0].numpy())
    return np.concatenate(out)


@torch.inference_mode()
def sample_losses(model: nn.Module, state: Mapping[str, torch.Tensor], source: Source,
                  loss: Loss, rows: int, *, progress: bool = False, label: str = "") -> np.ndarray:
    """Each point's loss [n] (float64) under the weights `state`, eval mode, in source order."""
    model.eval()
    out = []
    length = source.count(rows)
    with progress_bar(source.batches(rows), enabled=progress and length is not None, label=label,
                      length=length) as batches:
        for x, y in batches:
            logits = functional_call(model, dict(state), (x,))
            out.append(token_means(per_sample_loss(logits, y, loss)).double().cpu())
    return torch.cat(out).numpy()


