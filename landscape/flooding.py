"""The training objectives: flooding (Ishida et al. 2020, Eq. 1), iFlood (Xie et al. 2022) and
AdaFlood (Bae et al. 2023: a level per sample, from adaflood.py).

The surrogate losses of paper Sec. 3.1: softmax cross-entropy, and the logistic loss
log(1 + exp(-t g(x))) with t = +-1 for binary data scored by one output unit. Measurements also
take a user's loss: a callable (logits [n, C], y [n]) -> per-sample losses [n].

`flood` and `iflood` are the drop-ins for any training loop (docs/guides/own-model.md):

    loss = landscape.flood(F.cross_entropy(model(x), y), b=0.02)          # flooding
    loss = landscape.iflood(F.cross_entropy(model(x), y, reduction="none"), b=0.02)  # iFlood
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

LOSSES = ("cross_entropy", "logistic")
ALIASES = {"ce": "cross_entropy"}  # a run config's names (config.Loss), which runs pass on
Loss = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def check_loss(loss: Loss) -> Loss:
    """A loss name we know (an alias as the name it stands for) or a callable; anything else is
    bad input."""
    from landscape.errors import BadInput

    if callable(loss) or loss in LOSSES:
        return loss
    if loss in ALIASES:
        return ALIASES[loss]
    raise BadInput(f"unknown loss {loss!r}; use cross_entropy, logistic or a callable "
                   "(logits, y) -> per-sample losses")


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Surrogate loss of each sample. logits [..., n, C], y [..., n] int -> [..., n]. A callable
    loss sees 2-D logits [m, C] (stacked members' rows flattened into one batch) and y [m]."""
    if callable(loss):
        c = logits.shape[-1]
        flat_y = y.expand(logits.shape[:-1] + y.shape[logits.dim() - 1:]).reshape(
            -1, *y.shape[logits.dim() - 1:])
        out = loss(logits.reshape(-1, c), flat_y)
        if out.shape != flat_y.shape[:1]:
            from landscape.errors import BadInput
            raise BadInput(f"the loss callable must return one loss per sample (shape "
                           f"[{flat_y.shape[0]}]), got shape {list(out.shape)}; use "
                           "reduction='none'")
        return out.reshape(logits.shape[:-1])
    if loss == "logistic":
        margin = (2 * y - 1).to(logits.dtype) * logits[..., 0]
        return F.softplus(-margin)
    log_p = torch.log_softmax(logits, dim=-1)
    # y may be shared by K members ([n] against logits [K, n, C]): gather needs it broadcast.
    return -log_p.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def token_means(values: torch.Tensor, samples: int = 0) -> torch.Tensor:
    """Per-sample values [..., n] (the samples on axis `samples`) from per-label values [..., n,
    T, ...] (labels [n, T]: a sequence's tokens) as each sample's mean over its labels; values
    with nothing after the samples' axis unchanged. The measurements score a sample so,
    whatever holds its data."""
    return values if values.dim() == samples + 1 else values.flatten(samples + 1).mean(-1)


def predictions(logits: torch.Tensor, loss: Loss) -> torch.Tensor:
    """Predicted labels [..., n] from logits [..., n, C]: the sign of a single score (the
    logistic loss, or any loss on one output unit), else the arg max."""
    if loss == "logistic" or logits.shape[-1] == 1:
        return (logits[..., 0] > 0).to(torch.int64)
    return logits.argmax(dim=-1)


def flood(objective: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """|J - b| + b (Eq. 1): descent above the flood level b, ascent below it; J itself when b = 0.
    J is the mini-batch objective (the batch's mean loss)."""
    return (objective - b).abs() + b


def iflood(losses: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """mean_i |l_i - b| + b (iFlood, Xie et al. 2022): flooding of each sample's loss l_i
    (per-sample losses [..., n], e.g. reduction="none") -> [...]."""
    return flooded_objective(losses, b, "iflood")


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
