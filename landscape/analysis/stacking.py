"""Evaluating many parameter sets of one architecture on whole splits, stacked as an Ensemble:
how many at once, and their loss, accuracy and (optionally) gradients.

Analyses evaluate whole splits (20,000 test points for the synthetic sets), not mini-batches, so
one model's matmuls over a cache-sized chunk of rows already keep a CPU busy at every width:
measured on this 2-core CPU (one thread, chunks of ensemble.eval_chunk's CPU size), a width-32
MLP took 8 ms per model alone against 12-16 ms stacked 4-51 under vmap, width 128 about the same
either way, width 500 0.87 s alone against 0.93 s stacked 4 (DESIGN.md section 4 measured a
width-500 slice 0.65x under vmap). So on a CPU analyses loop. On a GPU one model's evaluation is
launch overhead, which stacking shares: there the training rule (ensemble.auto_chunk_size)
decides, within a memory bound, since analyses stack whole copies of the parameters (and, for
gradients, as many gradients).
"""

from __future__ import annotations

import contextlib

import torch

from ..config import ModelConfig
from ..data import Split
from ..ensemble import Ensemble, auto_chunk_size
from ..flooding import per_sample_loss, predictions

STACKED_NUMBERS = 1 << 27  # parameters held stacked at once (512 MB in float32)


def models_at_once(model: ModelConfig, n_params: int, device: torch.device) -> int:
    """Parameter sets to stack per evaluation: one on a CPU; the device's rule, within the
    memory bound, elsewhere."""
    if device.type == "cpu":
        return 1
    return max(1, min(auto_chunk_size(model, device), STACKED_NUMBERS // max(n_params, 1)))


def split_loss(ensemble: Ensemble, split: Split, loss: str, rows: int, *, gradients: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """Each member's mean loss [K] and accuracy [K] over the whole split (labels as trained, eval
    mode), `rows` rows at a time; with `gradients`, also each member's gradient of its mean loss
    ({name: [K, ...]}). Every chunk adds grad(sum of its losses) / n, so the total is the full-set
    mean's gradient at the memory of one chunk; members are independent, so the gradient w.r.t.
    the stacked parameters holds each member's own. Only loss and accuracy: a slice's points are
    cheap at narrow widths, and training.evaluate's clean-label metrics cost 60% more there."""
    if ensemble.template.training:  # walking the modules costs ~0.4 ms, a tenth of a narrow point
        ensemble.train(False)
    n = len(split)
    params = list(ensemble.params.values())
    grads = [torch.zeros_like(p) for p in params] if gradients else []
    loss_sum = torch.zeros(ensemble.size, dtype=torch.float64, device=split.y.device)
    hits = torch.zeros_like(loss_sum)
    with contextlib.nullcontext() if gradients else torch.inference_mode():
        for start in range(0, n, rows):
            x, y = split.inputs(slice(start, start + rows)), split.y[start:start + rows]
            logits = ensemble.forward(x, shared=True)                      # [K, c, C]
            losses = per_sample_loss(logits, y, loss)                      # [K, c]
            if gradients:
                for total, g in zip(grads, torch.autograd.grad(losses.sum() / n, params)):
                    total += g
            loss_sum += losses.detach().sum(-1).double()
            hits += (predictions(logits.detach(), loss) == y).sum(-1).double()
    return ((loss_sum / n).cpu(), (hits / n).cpu(),
            dict(zip(ensemble.params, grads)) if gradients else None)
