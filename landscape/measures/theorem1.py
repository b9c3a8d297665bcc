"""Theorem 1 of the paper (Sec. 5.4, Appendix A) on sampled risks: the MSE of the flooded risk
estimate against the plain one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.flooding import Loss, check_loss
from landscape.measures.evaluation import sample_losses
from landscape.measures.model import _dtype, _prepared, check_data
from landscape.measures.options import MseOptions
from landscape.measures.sources import as_source
from landscape.memory import DRAW_NUMBERS, rows_of
from landscape.progress import progress_bar
from landscape.results import PANELS


def risk_mse(model: nn.Module, pool: Any, *, sample_size: int, samples: int = 2000,
             flood_grid: Sequence[float] | None = None, train: Any = None,
             loss: Loss = "cross_entropy", params: Mapping[str, torch.Tensor] | None = None,
             seed: int = 0, device: torch.device | str | None = None):
    """Theorem 1 (paper Sec. 5.4) for this model: R is the mean loss over `pool` (data
    independent of the model's training data), R^ the means of `samples` index draws of
    `sample_size` from it, R~ = |R^ - b| + b over `flood_grid` (default: 201 levels in
    [0, 2 max(R, training loss)]). With `train` (the model's training data), a second panel draws
    R^ from it. Returns an analysis.mse.Check: the risk, the grid, the panels and the claims
    checked on each (`.holds`)."""
    loss = check_loss(loss)
    MseOptions(samples=samples, sample_size=sample_size, flood_grid=tuple(flood_grid or ()),
               draw_seed=seed)
    with _prepared(model, params, device) as (template, state):
        first = next(iter(state.values()))

        sources = {split: as_source(data, device=first.device, dtype=_dtype(state))
                   for split, data in (("pool", pool), ("train", train)) if data is not None}
        check_data(template, state, sources, loss)
        pool_losses, train_losses = (
            sample_losses(template, state, sources[s], loss,
                          rows_of(template, sources[s], 1, first.device))
            if s in sources else None for s in ("pool", "train"))
    return check_panels(pool_losses, train_losses, sample_size=sample_size, samples=samples,
                        flood_grid=flood_grid, seed=seed)




GRID_POINTS = 201


def flooded_risk(risk_hat: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """R~ = |R^ - b| + b (Appendix A, Eq. 10)."""
    return np.abs(risk_hat - b) + b


def gain_term(risk_hat: np.ndarray, risk: float, b: np.ndarray | float) -> np.ndarray:
    """(R^ - R)^2 - (R~ - R)^2 per draw, in closed form: 4 (b - R^)(R - b) 1[R^ < b]
    (Appendix A, B of Eq. 15-18 with the sign of MSE(R^) - MSE(R~))."""
    return 4 * (b - risk_hat) * (risk - b) * (risk_hat < b)


@dataclass(frozen=True)
class Panel:
    """MSEs over a grid of b of one set of draws of R^ against the risk R."""

    risk_hat: np.ndarray      # [M] the draws
    mse_plain: float          # MSE(R^)
    mse_flooded: np.ndarray   # [G] MSE(R~) per b
    gain: np.ndarray          # [G] mean over draws of gain_term
    below: np.ndarray         # [G] share of draws with R^ < b
    identity_error: float     # max over draws and b of |per-draw identity residual|


def mse_panel(risk_hat: np.ndarray, risk: float, flood: np.ndarray, *, progress: bool = False,
              label: str = "MSEs") -> Panel:
    """The Monte-Carlo MSEs of R^ and R~ (float64), and the per-draw identity's largest residual;
    in chunks of draws, so that the [draws, G] terms stay near DRAW_NUMBERS entries whatever M is."""
    risk_hat = np.asarray(risk_hat, dtype=np.float64)
    flood = np.asarray(flood, dtype=np.float64)
    rows = max(1, DRAW_NUMBERS // max(len(flood), 1))
    plain, flooded, gains, below = 0.0, np.zeros(len(flood)), np.zeros(len(flood)), 0
    residual = 0.0
    with progress_bar(range(0, len(risk_hat), rows), enabled=progress, label=label) as starts:
        for s in starts:
            r = risk_hat[s:s + rows, None]
            err_plain = (r - risk) ** 2                                # [m, 1]
            err_flooded = (flooded_risk(r, flood) - risk) ** 2         # [m, G]
            gain = gain_term(r, risk, flood)                           # [m, G]
            plain += float(err_plain.sum())
            flooded += err_flooded.sum(0)
            gains += gain.sum(0)
            below = below + (r < flood).sum(0)
            residual = max(residual, float(np.abs(err_plain - err_flooded - gain).max()))
    m = len(risk_hat)
    return Panel(risk_hat, plain / m, flooded / m, gains / m, below / m, residual)


@dataclass(frozen=True)
class Claims:
    """Theorem 1's statements checked on one panel's draws."""

    tolerance: float                    # float64 rounding allowance for equalities
    identity_error: float               # max per-draw residual of the identity
    difference_error: float             # max over b of |(MSE(R^) - MSE(R~)) - mean gain|
    sign_levels: int                    # grid levels with b <= R
    sign_violations: tuple[float, ...]  # b <= R where MSE(R~) > MSE(R^)
    strict_levels: int                  # b < R with some draw R^ < b
    strict_violations: tuple[float, ...]
    helpful_up_to: float                # largest b of the grid with MSE(R~) < MSE(R^); NaN if none
    best_b: float                       # the b of smallest MSE(R~)
    best_mse: float

    @property
    def identity_holds(self) -> bool:
        return max(self.identity_error, self.difference_error) <= self.tolerance

    @property
    def holds(self) -> bool:
        return self.identity_holds and not self.sign_violations and not self.strict_violations

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "identity_holds": self.identity_holds,
                "holds": self.holds}


def check_claims(panel: Panel, risk: float, flood: np.ndarray) -> Claims:
    """Eq. (8): b <= R => MSE(R~) <= MSE(R^); Eq. (9): strict when b < R and Pr[R^ < b] > 0
    (here: some draw below b); and MSE(R^) - MSE(R~) = mean of gain_term, exactly."""
    # errors are squares of numbers up to |R~| <= 2b + |R^|; means of M of them round at ~1e-14
    scale = max(1.0, abs(risk), 2 * float(np.max(flood, initial=0)) + float(np.abs(panel.risk_hat).max()))
    tolerance = 256 * np.finfo(np.float64).eps * scale ** 2
    difference = panel.mse_plain - panel.mse_flooded
    sign = flood <= risk
    strict = (flood < risk) & (panel.below > 0)
    helpful = flood[difference > 0]
    best = int(np.argmin(panel.mse_flooded))
    return Claims(
        tolerance=float(tolerance), identity_error=panel.identity_error,
        difference_error=float(np.abs(difference - panel.gain).max()),
        sign_levels=int(sign.sum()),
        sign_violations=tuple(float(b) for b in flood[sign & (difference < -tolerance)]),
        strict_levels=int(strict.sum()),
        strict_violations=tuple(float(b) for b in flood[strict & ~(difference > 0)]),
        helpful_up_to=float(helpful.max()) if len(helpful) else math.nan,
        best_b=float(flood[best]), best_mse=float(panel.mse_flooded[best]))


def draw_means(losses: np.ndarray, samples: int, size: int, rng: np.random.Generator, *,
               progress: bool = False, label: str = "draws") -> np.ndarray:
    """[samples] means of `size` i.i.d. index draws (with replacement) from `losses`; chunked so
    that the index array stays near DRAW_NUMBERS entries."""
    rows = max(1, DRAW_NUMBERS // size)
    with progress_bar(range(0, samples, rows), enabled=progress, label=label) as starts:
        return np.concatenate([losses[rng.integers(0, len(losses), (min(rows, samples - s), size))]
                               .mean(1) for s in starts])


def default_grid(risk: float, train_loss: float) -> np.ndarray:
    return np.linspace(0.0, 2 * max(risk, train_loss), GRID_POINTS)


@dataclass(frozen=True)
class Check:
    """Theorem 1 checked on one model's per-sample losses: R, the grid of b, and per panel
    ("pool": R^ on draws from the pool; "train": on the training set, when given) the MSEs and
    the claims."""

    risk: float
    risk_se: float
    train_loss: float           # NaN without training data
    flood: np.ndarray           # [G]
    panels: dict[str, Panel]
    claims: dict[str, Claims]

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.claims.values())


def check_panels(pool_losses: np.ndarray, train_losses: np.ndarray | None, *, sample_size: int,
                 samples: int, flood_grid: Sequence[float] | None, seed: int,
                 progress: bool = False) -> Check:
    """Theorem 1 from per-sample losses: R = the pool's mean loss, M = `samples` draws of R^ of
    `sample_size` each, from the pool and (if given) from the training losses."""
    risk = float(pool_losses.mean())
    train_loss = float(train_losses.mean()) if train_losses is not None else math.nan
    flood = (np.asarray(sorted(flood_grid), dtype=np.float64) if flood_grid
             else default_grid(risk, 0.0 if train_losses is None else train_loss))
    rng = np.random.default_rng(seed)
    given = {"pool": pool_losses, "train": train_losses}
    panels = {name: mse_panel(draw_means(given[name], samples, sample_size, rng,
                                         progress=progress, label=f"{name} draws"), risk, flood,
                              progress=progress, label=f"{name} MSEs")
              for name in PANELS if given[name] is not None}
    return Check(risk, float(pool_losses.std(ddof=1) / math.sqrt(len(pool_losses))), train_loss,
                 flood, panels, {name: check_claims(p, risk, flood) for name, p in panels.items()})
