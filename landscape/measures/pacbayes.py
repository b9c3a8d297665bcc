"""PAC-Bayesian flatness on any model (Jiang et al. 2020, "Fantastic generalization measures and
where to find them", App. C, the PAC-Bayesian sharpness and magnitude-aware perturbation
measures, after Neyshabur et al. 2017): the largest noise scale sigma under which the expected
loss rises by at most `bound`,

    sigma* = max { sigma : E_u [L(w + u)] - L(w) <= bound },
    u ~ N(0, sigma^2 I)                              (plain; Jiang et al.'s 1 / sigma^2 measure)
    u_i ~ N(0, sigma^2 w_i^2 + eps^2), eps = 1e-3    (magnitude-aware; 1 / sigma'^2).

The expectation is a mean over `draws` antithetic pairs u, -u of seeded Gaussian draws z, the
same draws at every sigma (u = s(sigma) * z, s = sigma or sqrt(sigma^2 w^2 + eps^2)): the estimate
is then a smooth function of sigma, and for a quadratic loss exactly sigma^2 mean(z'Hz) / 2
(the pairs cancel the gradient's term). sigma* is bracketed by doubling from 1 (or halving
towards 0) and bisected until the bracket is within `tolerance` of its top; the lower end, where
the rise is within the bound, is returned. Jiang et al. perturb all parameters; their search (as
Dziugaite et al. 2020 reimplement it) bisects [0, 2] 15 times on the training error's rise (0.1)
with 10 draws; here the rise of the loss, and a bracket that also finds sigma* > 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.flooding import Loss
from landscape.measures.batches import Point, taken
from landscape.measures.spectrum import flat_draws, unflatten

MAGNITUDE_EPS = 1e-3   # Jiang et al. 2020, App. C: the magnitude-aware noise's epsilon
DOUBLINGS = 60         # 2^60 > any useful sigma: beyond it the loss does not rise (inf)


@dataclass(frozen=True)
class PacBayes:
    """sigma* and the estimated rise E[L(w + u)] - L(w) at it (with its standard error over the
    draws); `loss` is L(w), `evaluations` the sigmas tried."""

    sigma: float
    rise: float
    stderr: float
    loss: float
    evaluations: int


def bisect_sigma(rise, bound: float, *, tolerance: float) -> tuple[float, int]:
    """(the largest sigma found with rise(sigma) <= bound, sigmas tried): a bracket [lo, hi]
    with rise(lo) <= bound < rise(hi), from doubling up from 1 or bisecting down from it, cut in
    half until hi - lo <= tolerance * hi. inf where no sigma up to 2^DOUBLINGS exceeds the bound,
    0 where sigma = 0 already does (possible only for the magnitude-aware noise's eps)."""
    tried = 1
    lo, hi = 0.0, 1.0
    if rise(hi) <= bound:
        for _ in range(DOUBLINGS):
            lo, hi = hi, 2 * hi
            tried += 1
            if rise(hi) > bound:
                break
        else:
            return math.inf, tried
    elif rise(0.0) > bound:
        return 0.0, tried + 1
    while hi - lo > tolerance * hi:
        middle = (lo + hi) / 2
        tried += 1
        if rise(middle) <= bound:
            lo = middle
        else:
            hi = middle
    return lo, tried


def pac_bayes_sigma(model: nn.Module, data: Any, *, bound: float = 0.1,
                    magnitude_aware: bool = False, draws: int = 10, tolerance: float = 1e-3,
                    loss: Loss = "cross_entropy",
                    params: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
                    device: torch.device | str | None = None) -> PacBayes:
    """The largest sigma whose Gaussian noise on all parameters raises the mean loss over `data`
    by at most `bound` (module docstring; eval mode, buffers unperturbed). The draws z: torch.randn
    of each parameter's shape in order (float32, CPU) from a generator seeded with `seed`, one
    vector per antithetic pair."""
    if not (math.isfinite(bound) and bound > 0):
        raise BadInput(f"bound must be a finite number > 0, got {bound}")
    if draws < 1:
        raise BadInput(f"draws must be at least 1, got {draws}")
    if not 0 < tolerance < 1:
        raise BadInput(f"tolerance must be in (0, 1), got {tolerance}")
    with taken(model, data, loss, params, device) as ready:
        point = Point(ready)
        theta = ready.theta
        w = torch.cat([p.reshape(-1) for p in theta.values()])
        generator = torch.Generator().manual_seed(seed)
        z = torch.stack([flat_draws(theta, lambda s: torch.randn(s, generator=generator))
                         for _ in range(draws)]).to(w)                      # [draws, N]
        base, _ = point.loss(theta)
        seen: dict[float, np.ndarray] = {}

        def pairs(sigma: float) -> np.ndarray:
            """Each pair's (L(w + u) + L(w - u)) / 2 - L(w) [draws]."""
            if sigma not in seen:
                scale = (torch.sqrt(sigma ** 2 * w ** 2 + MAGNITUDE_EPS ** 2) if magnitude_aware
                         else torch.full_like(w, sigma))
                seen[sigma] = np.array([
                    (point.loss(unflatten(w + scale * u, theta))[0]
                     + point.loss(unflatten(w - scale * u, theta))[0]) / 2 - base for u in z])
            return seen[sigma]

        sigma, tried = bisect_sigma(lambda s: float(pairs(s).mean()), bound, tolerance=tolerance)
        at = pairs(sigma) if math.isfinite(sigma) else np.full(draws, math.nan)
    stderr = float(at.std(ddof=1) / math.sqrt(draws)) if draws > 1 else math.nan
    return PacBayes(sigma, float(at.mean()), stderr, base, tried)
