"""The optimizer of a stacked group: one torch.optim SGD or Adam over the members' parameters
[K, ...], each member at its own learning rate and L2 weight decay.

Members of a chunk share the optimizer, its momentum, batch size and schedule (planner.group_key)
but may differ in learning rate and weight decay, so that sweeps over --lr and --weight-decay
stack:
- weight decay: torch's SGD and Adam add wd p to the gradient before the momentum or the moments
  see it. Where the members' differ, the optimizer's own is 0 and each member's wd_k p is added to
  its gradient instead: the same sum.
- learning rate: SGD (p -= lr buf) and Adam (p -= lr m_hat / (sqrt(v_hat) + eps)) move a parameter
  by lr times a direction that does not depend on lr. The optimizer steps at the group's largest
  rate lr_ref and each member's move is scaled by s_k = lr_k / lr_ref: p_old + s_k (p_step - p_old)
  is the member's own step, to rounding. s_k <= 1, so the rounding of p_step - p_old (about
  eps |p|) is not magnified; s_k = 1 keeps the step bit for bit (lerp with weight 1).
The optimizer state (momentum buffers, Adam's moments and step) stays each member's own, so run
files keep what the member alone would have and resume in any chunk. (Scaling each gradient by
s_k would do for SGD but not for Adam, which is invariant to it, and would store scaled momentum
buffers.) A group whose members share both takes torch's plain step: no copies, and the numbers
such groups always had.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from landscape.config import OptimConfig


def make_optimizer(optim: OptimConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """torch's optimizer of a (resolved) OptimConfig at its first learning rate."""
    kwargs = {"lr": optim.lr, "weight_decay": optim.weight_decay}
    if optim.name == "sgd":
        kwargs["momentum"] = optim.momentum
    cls = torch.optim.Adam if optim.name == "adam" else torch.optim.SGD
    try:  # fused kernels are faster where the build has them (benchmarks/RESULTS.md)
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def rates_at(optims: Sequence[OptimConfig], epoch: int) -> torch.Tensor:
    """[K] float64: each member's learning rate while training `epoch` (1-based)."""
    return torch.tensor([o.lr_at(epoch) for o in optims], dtype=torch.float64)


def per_member(values: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """values [K] as one tensor per parameter, [K, 1, ...]: broadcast over each member's slice."""
    return [values.to(p.device, p.dtype).view(-1, *[1] * (p.dim() - 1)) for p in params]


class MemberOptimizer:
    """The group's optimizer, stepping each member at its own learning rate and weight decay."""

    def __init__(self, optims: Sequence[OptimConfig], params: list[torch.Tensor]) -> None:
        self.optims, self.params = list(optims), params
        decays = torch.tensor([o.weight_decay for o in optims], dtype=torch.float64)
        shared = bool((decays == decays[0]).all())
        self.optimizer = make_optimizer(dataclasses.replace(
            optims[0], weight_decay=float(decays[0]) if shared else 0.0), params)
        self.decay = None if shared else per_member(decays, params)
        # Epoch 0 is measured (and its edge of stability tracked) at the first epoch's rates.
        self.start_epoch(1)

    def start_epoch(self, epoch: int) -> torch.Tensor:
        """Set the rates of `epoch` (1-based) and return each member's, [K] float64."""
        rates = rates_at(self.optims, epoch)
        reference = rates.max()
        for group in self.optimizer.param_groups:
            group["lr"] = float(reference)
        self.ratio = rates / reference  # [K] float64: s_k, 1 for the members at lr_ref
        self.scale = None if bool((self.ratio == 1).all()) else per_member(self.ratio, self.params)
        return rates

    def step(self) -> None:
        """One step of every member from the gradients in .grad."""
        with torch.no_grad():
            if self.decay is not None:  # g + wd_k p, as torch's weight_decay adds it
                for p, wd in zip(self.params, self.decay):
                    p.grad.addcmul_(p, wd)
            before = None if self.scale is None else [p.clone() for p in self.params]
        self.optimizer.step()
        if before is not None:
            with torch.no_grad():  # p_old + s_k (p_step - p_old)
                for p, old, s in zip(self.params, before, self.scale):
                    p.copy_(old.lerp_(p, s))
