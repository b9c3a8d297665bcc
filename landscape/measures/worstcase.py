"""Worst-case sharpness on any model: the largest rise of the loss within a ball around the
weights (Keskar et al. 2017, their sharpness metric; Foret et al. 2021, SAM, the max in Eq. 1),
plain or adaptive (Kwon et al. 2021, ASAM, Sec. 3), over the whole data or as m-sharpness (Foret
et al. 2021, Sec. 4.1; Andriushchenko et al. 2023, "A modern look at the relationship between
sharpness and generalization", whose definitions these are):

    S(w) = E_B [ max_{||d / c||_2 <= rho} L_B(w + d) - L_B(w) ]

with c = 1 (plain) or c = |w| + eta elementwise (adaptive), B the whole data, or with m the
n / m disjoint batches of m samples, each with its own worst perturbation.

The maximum is searched in the coordinates u = d / c, where the ball is round: L_B(w + c u) has
the gradient c * grad L, and projecting onto ||u|| <= rho is a rescaling. Projected gradient
ascent with normalized steps (Andriushchenko et al.'s l2 ascent, without its momentum) from
`restarts` seeded points on the sphere ||u|| = rho; a step that does not raise the loss is
halved and retried, one that does doubles the next (up to 2 rho, a step that can reach any
point of the ball). The value is the best loss seen, never below L_B(w) (d = 0 is in the ball).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.flooding import Loss
from landscape.measures.batches import Point, Taken, all_rows, disjoint_batches, taken
from landscape.measures.model import Tensors
from landscape.measures.sources import Source, TensorSource
from landscape.measures.spectrum import flat_draws, unflatten

Objective = Callable[[torch.Tensor], tuple[float, torch.Tensor]]  # u [N] -> (f(u), grad f(u))


@dataclass(frozen=True)
class Sharpness:
    """A worst-case sharpness: `value` (the mean over the m-batches with m), `std` of the
    per-batch values (NaN for one batch), `loss` L(w) (mean over batches), and of the worst
    perturbation found (the largest over batches): `norm` ||d||_2 and `radius` ||d / c||_2 (at
    most rho)."""

    value: float
    std: float
    loss: float
    norm: float
    radius: float
    batches: int


def project(u: torch.Tensor, rho: float) -> torch.Tensor:
    """u rescaled into the ball ||u||_2 <= rho."""
    norm = float(u.norm())
    return u * (rho / norm) if norm > rho else u


def ascend(objective: Objective, start: torch.Tensor, *, rho: float, steps: int
           ) -> tuple[float, torch.Tensor]:
    """(the largest f seen, where) by projected normalized-gradient ascent on ||u|| <= rho from
    `start`, in `steps` evaluations of f; every point evaluated lies in the ball."""
    u = project(start, rho)
    value, grad = objective(u)
    step = 2 * rho
    for _ in range(steps - 1):
        length = float(grad.norm())
        if length == 0 or not math.isfinite(length):  # a stationary point, or a diverged loss
            break
        candidate = project(u + grad * (step / length), rho)
        new, new_grad = objective(candidate)
        if new > value:
            u, value, grad = candidate, new, new_grad
            step = min(2 * step, 2 * rho)
        else:
            step /= 2
    return value, u


def scale_of(theta: Tensors, adaptive: bool, eta: float) -> torch.Tensor:
    """c [N]: 1, or |w| + eta (ASAM's T_w, elementwise, for every parameter: biases and
    normalization parameters too, as Andriushchenko et al. perturb all of them)."""
    flat = torch.cat([p.reshape(-1) for p in theta.values()])
    return flat.abs() + eta if adaptive else torch.ones_like(flat)


def batch_sharpness(point: Point, source: Source | None, c: torch.Tensor, *, rho: float,
                    steps: int, restarts: int, generator: torch.Generator
                    ) -> tuple[float, float, torch.Tensor]:
    """(max_{||u|| <= rho} L(w + c u) - L(w), L(w), the best u) on one batch (or all data)."""
    theta = point.model.theta
    w = torch.cat([p.reshape(-1) for p in theta.values()])

    def objective(u: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, grads = point.loss(unflatten(w + c * u, theta), source, gradients=True)
        return value, c * torch.cat([g.reshape(-1) for g in grads.values()])

    base, _ = point.loss(theta, source)
    best, where = base, torch.zeros_like(w)
    for _ in range(restarts):
        z = flat_draws(theta, lambda shape: torch.randn(shape, generator=generator)).to(w)
        z = z * (c != 0)  # no share of the radius along coordinates that cannot move
        value, u = ascend(objective, z * (rho / float(z.norm())), rho=rho, steps=steps)
        if value > best:
            best, where = value, u
    return best - base, base, where


def worst_case_sharpness(model: nn.Module, data: Any, *, rho: float = 0.05,
                         adaptive: bool = False, eta: float = 0.0, m: int | None = None,
                         steps: int = 20, restarts: int = 3, loss: Loss = "cross_entropy",
                         params: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
                         device: torch.device | str | None = None) -> Sharpness:
    """max_{||d / c||_2 <= rho} L(w + d) - L(w) over all parameters (eval mode; buffers such as
    BatchNorm statistics stay), found by `restarts` projected gradient ascents of `steps` loss
    and gradient evaluations each (module docstring).

    adaptive: c = |w| + eta elementwise (Kwon et al. 2021; Andriushchenko et al. 2023 use
    eta = 0, ASAM trains with eta = 0.01); a parameter with c = 0 is not perturbed. Otherwise c = 1.
    m: m-sharpness, the mean over n / m disjoint batches of m samples (rows drawn by
    torch.randperm(n) from a generator seeded with `seed`; m must divide n) of each batch's
    own worst-case sharpness; m = n is the plain value. The ascents' starts, batch after batch:
    torch.randn of each parameter's shape in order (float32, CPU) from one generator seeded with
    `seed`, scaled onto the sphere ||u|| = rho."""
    if not (math.isfinite(rho) and rho > 0):
        raise BadInput(f"rho must be a finite number > 0, got {rho}")
    if not (math.isfinite(eta) and eta >= 0):
        raise BadInput(f"eta must be a finite number >= 0, got {eta}")
    if steps < 1 or restarts < 1:
        raise BadInput(f"steps and restarts must be at least 1, got {steps} and {restarts}")
    with taken(model, data, loss, params, device, gradients=True) as ready:
        return _sharpness(ready, rho=rho, c=scale_of(ready.theta, adaptive, eta), m=m,
                          steps=steps, restarts=restarts, seed=seed)


def _sharpness(ready: Taken, *, rho: float, c: torch.Tensor, m: int | None, steps: int,
               restarts: int, seed: int) -> Sharpness:
    point = Point(ready)
    if m is None:
        sources = [None]
    else:
        x, y = all_rows(ready.source, ready.rows)
        if not 1 <= m <= len(y) or len(y) % m:
            raise BadInput(f"m must divide the data's {len(y)} rows (a batch size from 1 to "
                           f"{len(y)}), got {m}")
        sources = [TensorSource(x[i], y[i]) for i in disjoint_batches(len(y), m, seed)]
    generator = torch.Generator().manual_seed(seed)
    values, bases, norms, radii = [], [], [], []
    for source in sources:
        value, base, u = batch_sharpness(point, source, c, rho=rho, steps=steps,
                                         restarts=restarts, generator=generator)
        values.append(value)
        bases.append(base)
        norms.append(float((c * u).norm()))
        radii.append(float(u.norm()))
    return Sharpness(float(np.mean(values)),
                     float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                     float(np.mean(bases)), max(norms), max(radii), len(values))
