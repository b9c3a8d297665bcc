"""Measures of a model's outputs and gradients on data (Jiang et al. 2020, "Fantastic
generalization measures and where to find them", App. C): the output margin, the Fisher-Rao
norm, and the gradient noise of mini-batches.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

from landscape.errors import BadInput
from landscape.flooding import Loss, per_sample_loss
from landscape.measures.batches import Point, all_rows, disjoint_batches, taken
from landscape.measures.sources import TensorSource


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's margin [n]: the true class's logit minus the largest other one (logits
    [n, C], C >= 2), or (2 y - 1) f(x) for one output and labels 0/1 (logits [n, 1])."""
    if logits.shape[-1] == 1:
        return (2 * y - 1).to(logits) * logits[:, 0]
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -math.inf)
    return true - others.max(1).values


def output_margin(model: nn.Module, data: Any, *, quantile: float = 0.1,
                  loss: Loss = "cross_entropy", params: Mapping[str, torch.Tensor] | None = None,
                  device: torch.device | str | None = None) -> float:
    """The `quantile` of the output margins over the data (eval mode; margins()): the k-th
    smallest, k = max(1, floor(quantile n)), as Jiang et al. 2020 take the 10th percentile for
    their margin measures (Eq. 22 is 1 / margin^2; Bartlett et al. 2017). Labels must be classes."""
    if not 0 < quantile <= 1:
        raise BadInput(f"quantile must be in (0, 1], got {quantile}")
    with taken(model, data, loss, params, device) as ready:
        out, labels = [], []
        with torch.no_grad():
            for x, y in ready.source.batches(ready.rows):
                if y.is_floating_point():
                    raise BadInput("the output margin needs class labels, the data's are float")
                out.append(functional_call(ready.template, (ready.theta, ready.buffers), (x,)))
                labels.append(y)
        values = margins(torch.cat(out).double(), torch.cat(labels)).cpu()
    k = max(1, math.floor(quantile * len(values)))
    return float(values.kthvalue(k).values)


def fisher_rao_norm(model: nn.Module, data: Any, *, loss: Loss = "cross_entropy",
                    params: Mapping[str, torch.Tensor] | None = None,
                    device: torch.device | str | None = None) -> float:
    """||w||_fr = sqrt(<w, I(w) w>) with the empirical Fisher I = mean_i grad l_i grad l_i^T on
    the data's labels (Liang et al. 2019, "Fisher-Rao metric, geometry, and complexity of neural
    networks", the Fisher-Rao norm's definition), i.e. sqrt(mean_i <w, grad_w l_i(w)>^2) over all
    parameters (eval mode). Each <w, grad l_i> is one forward-mode derivative of the per-sample
    losses along w (a jvp), so per-sample gradients are never formed. For bias-free ReLU networks
    with L hidden layers <w, grad l_i> = (L + 1) <dl_i/df, f(x_i)> (Liang et al.'s structural
    lemma), the form in which Jiang et al. 2020 (App. C) state the measure; the inner product
    needs no depth and holds for any model."""
    with taken(model, data, loss, params, device) as ready:
        def losses(weights, x, y):
            logits = functional_call(ready.template, (weights, ready.buffers), (x,))
            return per_sample_loss(logits, y, ready.loss)

        total, n = 0.0, 0
        for x, y in ready.source.batches(ready.rows):
            _, along = jvp(partial(losses, x=x, y=y), (ready.theta,), (ready.theta,))
            total += float(along.double().square().sum())
            n += len(y)
    return math.sqrt(total / n)


def gradient_noise(model: nn.Module, data: Any, *, batch_size: int = 32,
                   loss: Loss = "cross_entropy", params: Mapping[str, torch.Tensor] | None = None,
                   seed: int = 0, device: torch.device | str | None = None) -> float:
    """E_B ||g_B - g||_2^2: the mean over the n // batch_size disjoint batches B of
    `batch_size` samples (batches.disjoint_batches: seeded rows, the remainder unused) of the
    squared distance of the batch's mean-loss gradient g_B from the whole data's g, over all
    parameters (eval mode) -- the trace of the mini-batch gradient's covariance, the noise
    behind SGD's implicit regularization (Jastrzebski et al. 2018, "Three factors influencing
    minima in SGD"; McCandlish et al. 2018, the gradient noise scale tr(Sigma) / |G|^2)."""
    with taken(model, data, loss, params, device, gradients=True) as ready:
        point = Point(ready)
        _, full = point.loss(ready.theta, gradients=True)
        x, y = all_rows(ready.source, ready.rows)
        distances = []
        for rows in disjoint_batches(len(y), batch_size, seed, "batch_size"):
            _, grads = point.loss(ready.theta, TensorSource(x[rows], y[rows]), gradients=True)
            distances.append(sum(float((grads[k] - full[k]).double().square().sum())
                                 for k in full))
    return float(np.mean(distances))
