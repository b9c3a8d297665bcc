"""The training objectives: flooding (Ishida et al. 2020, Eq. 1), iFlood (Xie et al. 2022) and
AdaFlood (Bae et al. 2023: a level per sample, from adaflood.py).

The surrogate losses of paper Sec. 3.1: softmax cross-entropy, and the logistic loss
log(1 + exp(-t g(x))) with t = +-1 for binary data scored by one output unit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Surrogate loss of each sample. logits [..., n, C], y [..., n] int -> [..., n]."""
    if loss == "logistic":
        margin = (2 * y - 1).to(logits.dtype) * logits[..., 0]
        return F.softplus(-margin)
    log_p = torch.log_softmax(logits, dim=-1)
    # y may be shared by K members ([n] against logits [K, n, C]): gather needs it broadcast.
    return -log_p.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def predictions(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Predicted labels [..., n] from logits [..., n, C]."""
    if loss == "logistic":
        return (logits[..., 0] > 0).to(torch.int64)
    return logits.argmax(dim=-1)


def flood(objective: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """|J - b| + b (Eq. 1): descent above the flood level b, ascent below it; J itself when b = 0."""
    return (objective - b).abs() + b


def flooded_objective(losses: torch.Tensor, b: torch.Tensor | float,
                      kind: str = "flood") -> torch.Tensor:
    """The mini-batch objective from per-sample losses [..., n] -> [...].

    "flood": flooding of the batch mean, |mean_i l_i - b| + b (Eq. 1).
    "iflood": flooding of each sample, mean_i |l_i - b| + b (Xie et al. 2022).
    "adaflood": each sample at its own level, mean_i |l_i - theta_i| + theta_i (Bae et al. 2023):
    b holds the levels theta, shaped as the losses.
    """
    if kind == "flood":
        return flood(losses.mean(dim=-1), b)
    if kind == "iflood":
        b = torch.as_tensor(b, dtype=losses.dtype, device=losses.device)
        return flood(losses, b.unsqueeze(-1) if b.dim() else b).mean(dim=-1)
    if kind == "adaflood":
        return flood(losses, b).mean(dim=-1)
    raise ValueError(f"unknown objective {kind!r}")
