"""The spectrum of a curvature operator A (operators.py: the Hessian, the GGN, the Fisher, or
any Operator): its top eigenvalue, its k largest or smallest eigenvalues (and eigenvectors) and
its spectral density, all by the Lanczos iteration.

- top eigenvalue (`top_eigenvalue`, the sharpness): Lanczos without reorthogonalization, two
  vectors of memory whatever the number of steps (w made in q_{j-1}'s memory: the operator's
  matmat adds into it): from a seeded Gaussian start q_1,
  w = A q_j - beta_{j-1} q_{j-1}, alpha_j = w'q_j, beta_j = ||w - alpha_j q_j||. The estimate is
  the extreme eigenvalue of the tridiagonal T_j of largest magnitude, stopped when it changes by
  less than `tolerance` (relative): the rule of power iteration (PyHessian's), but the Krylov
  space holds every power iterate, so the estimate is at least as good for the same products
  (benchmarks/starts.py, ten seeds: a CNN 8-11 products where PyHessian's power iteration
  took 9-22, a transformer 6-10 where it took 7-35, and closer to the converged value). Lost
  orthogonality only repeats converged values (Paige 1976).
  `method="power"`: power iteration v <- A v / ||A v|| from the same start, the Rayleigh
  quotient v'Av stopped by the same rule (PyHessian's algorithm).

The others run it with full reorthogonalization: from a unit start q_1, each step multiplies by
A, removes the components along every earlier q (twice: one pass loses orthogonality in
float32) and normalizes, building A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T with T_m tridiagonal.
The eigenvalues of T_m (Ritz values) approach A's extreme eigenvalues first.

- top-k (as PyHessian's `eigenvalues(top_n=k)` answers, by a faster route than its deflated
  power iteration) and bottom-k: the k algebraically largest (or smallest) Ritz values, stopped
  when each one's residual |beta_m s_mi| (the distance of A y_i from theta_i y_i, y_i = Q_m s_i)
  is below `tolerance` times |theta_i|, or after `iterations` products; eigenvectors y_i. Both
  ends at once (`spectrum_ends`): one run, stopped when both have converged.
- density (stochastic Lanczos quadrature, Ghorbani et al. 2019; PyHessian's `density`): for each
  of `runs` Rademacher starts, m steps give nodes theta_j and weights (first entry of T's j-th
  eigenvector)^2 summing to 1, a quadrature of the spectral measure seen from the start vector:
  sum_j w_j theta_j^p = q_1' A^p q_1, whose expectation is tr(A^p) / n. The density is that
  measure averaged over runs and broadened by a Gaussian of width `sigma` (a share of the
  spectrum's range), integrating to 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Mapping, Union

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from landscape.errors import BadInput
from landscape.measures.density import Density

if TYPE_CHECKING:
    from landscape.measures.operators import Operator

Tensors = dict[str, torch.Tensor]
Start = Union[torch.Tensor, Mapping[str, torch.Tensor], None]


def draws(seed: int) -> torch.Generator:
    """The generator of the estimators' random starts and probes for `seed`: a stream apart from
    torch.manual_seed(seed)'s. A model initialized under the same seed (0, most often) would
    otherwise meet its own weights' random numbers in the start: seed 0's start correlated
    -0.26 with a small tanh MLP's initial weights, its overlap with the top eigenvector of the
    first layer's block was 5e-4 (4th smallest of 2,000 seeds; typical 0.08) and the change
    rule stopped 8% low, on the second eigenvalue; twice, on two users' models, both made
    under torch.manual_seed(0)."""
    return torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + 0x5DEECE66D) % 2**63)


def flat_draws(params: Tensors, draw: Callable[[tuple[int, ...]], torch.Tensor]) -> torch.Tensor:
    """One random vector [N] over all parameters, drawn parameter by parameter in order (so a
    seed's draws do not depend on how the vector is held)."""
    return torch.cat([draw(tuple(p.shape)).reshape(-1) for p in params.values()])


def unflatten(flat: torch.Tensor, params: Tensors) -> Tensors:
    """A flat vector [N] as {name: tensor shaped as the parameter}."""
    sizes = [p.numel() for p in params.values()]
    return {k: t.view(p.shape) for (k, p), t in zip(params.items(), flat.split(sizes))}


REORTHOGONALIZE_AGAIN = 0.5 ** 0.5  # a pass that leaves less of w than this goes again
BASIS_BLOCK = 16  # Lanczos vectors allocated at a time: a run holds the vectors it made, not
                  # `steps` of them (eigenpairs' default 100 x N, for a k = 5 run of 30-50)


@dataclass
class Lanczos:
    """m steps of the iteration: T's diagonal (alpha [m]) and off-diagonal (beta [m]: the last
    is the residual norm beyond step m) and the basis Q [m, N], held as blocks of BASIS_BLOCK
    rows (the last one's rows past m unset)."""

    alpha: list[float]
    beta: list[float]
    blocks: list[torch.Tensor]

    def rows(self, count: int) -> list[torch.Tensor]:
        """Q's first `count` rows, as pieces of the blocks."""
        return [b[:count - i * BASIS_BLOCK] for i, b in enumerate(self.blocks)
                if count > i * BASIS_BLOCK]

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """coefficients [k, m] times Q: [k, N], block by block."""
        found = 0
        for i, rows in enumerate(self.rows(len(self.alpha))):
            found = found + coefficients[:, i * BASIS_BLOCK:i * BASIS_BLOCK + len(rows)] @ rows
        return found

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors (columns) of T."""
        m = len(self.alpha)
        if not np.all(np.isfinite(self.alpha + self.beta[:m - 1])):  # NaN/inf weights or data
            return np.full(m, np.nan), np.full((m, m), np.nan)
        t = np.diag(np.asarray(self.alpha, dtype=np.float64))
        off = np.asarray(self.beta[:m - 1], dtype=np.float64)
        t += np.diag(off, 1) + np.diag(off, -1)
        return np.linalg.eigh(t)


def top_eigenvalue(operator: Operator, *, iterations: int = 100, tolerance: float = 1e-4,
                   seed: int = 0, method: Literal["lanczos", "power"] = "lanczos",
                   start: Start = None) -> tuple[float, int]:
    """(the eigenvalue of largest magnitude, products used) by the Lanczos iteration without
    reorthogonalization from a seeded Gaussian start (see the module's text), or with
    method="power" by power iteration from the same start and with the same rule (PyHessian's
    algorithm, and this function's before 2026-12). `start` replaces the Gaussian (`_start`)."""
    if method not in ("lanczos", "power"):
        raise BadInput(f"method must be lanczos or power, got {method!r}")
    _check_stopping(iterations, tolerance)
    q = _start(operator, seed, start)
    q = q / q.norm()  # the unscaled start released: one vector fewer beside each product
    estimates = (_power_estimates if method == "power" else _lanczos_estimates)(operator, q)
    estimate, step = math.nan, 0
    for step, found in enumerate(itertools.islice(estimates, iterations), 1):
        last, estimate = estimate, found
        if abs(estimate - last) <= tolerance * abs(estimate):
            break
    return estimate, step


def _lanczos_estimates(operator: Operator, q: torch.Tensor) -> Iterator[float]:
    """top_eigenvalue's estimate after each step of Lanczos without reorthogonalization from
    the unit q (whose memory it reuses): the extreme eigenvalue of T_j of largest magnitude;
    the last one exact when the Krylov space is exhausted."""
    previous = torch.zeros_like(q)
    alpha: list[float] = []
    beta: list[float] = []
    while True:
        # A q - beta q' in the memory of q' (its last use): two vectors and the product's
        # transients, as power iteration's v and A v
        w = operator.matvec(q, add_to=previous.mul_(-beta[-1] if beta else 0.0))
        alpha.append(float(w @ q))
        if not math.isfinite(alpha[-1]):  # NaN/inf weights or data (a diverged checkpoint)
            yield math.nan
            return
        w.sub_(q, alpha=alpha[-1])
        values = eigh_tridiagonal(np.asarray(alpha), np.asarray(beta), eigvals_only=True)
        yield float(values[-1] if abs(values[-1]) >= abs(values[0]) else values[0])
        norm = float(w.norm())
        if norm <= 1e-10 * max(abs(a) for a in alpha):
            return
        beta.append(norm)
        previous, q = q, w.div_(norm)


def _power_estimates(operator: Operator, v: torch.Tensor) -> Iterator[float]:
    """Power iteration v <- A v / ||A v|| from the unit v: the Rayleigh quotient v'Av at each
    step; it ends at 0 where v falls in the null space (the loss flat along it)."""
    while True:
        av = operator.matvec(v)
        yield float(v @ av)
        norm = float(av.norm())
        if norm == 0 or not math.isfinite(norm):
            return
        v = av / norm


def lanczos(operator: Operator, start: torch.Tensor, *, steps: int,
            stop: Callable[[Lanczos], bool] | None = None) -> Lanczos:
    """Up to `steps` Lanczos steps from `start` [N] (any scale), fewer when the Krylov space is
    exhausted (beta ~ 0) or `stop(state)` says the answer is there."""
    n = start.numel()
    steps = min(steps, n)
    state = Lanczos([], [], [])
    q, previous = start / start.norm(), None
    for j in range(steps):
        if j % BASIS_BLOCK == 0:
            state.blocks.append(start.new_empty(min(BASIS_BLOCK, steps - j), n))
        state.blocks[-1][j % BASIS_BLOCK] = q
        w = operator.matmat(q[None])[0]
        alpha = float(w @ q)
        # the three-term step first, so that what full reorthogonalization removes is rounding
        # and one pass of it suffices unless it cancels most of w (Daniel, Gragg, Kaufman and
        # Stewart's test, as ARPACK's): then a second (one pass loses orthogonality in float32)
        w.sub_(q, alpha=alpha)
        if previous is not None:
            w.sub_(previous, alpha=state.beta[-1])
        norm = float(w.norm())
        for _ in range(2):
            for rows in state.rows(j + 1):
                w.sub_(rows.T @ (rows @ w))
            before, norm = norm, float(w.norm())
            if norm > REORTHOGONALIZE_AGAIN * before:
                break
        beta = norm
        state = Lanczos(state.alpha + [alpha], state.beta + [beta], state.blocks)
        scale = max(abs(a) for a in state.alpha) or 1.0
        if (j + 1 == steps or not beta > 1e-10 * scale  # exhausted, or NaN: nothing further
                or (stop is not None and stop(state))):
            return state
        previous, q = q, w.div_(beta)
    return state


def eigenpairs(operator: Operator, *, k: int, which: Literal["largest", "smallest"] = "largest",
               iterations: int = 100, tolerance: float = 1e-4, seed: int = 0,
               vectors: bool = False, start: Start = None
               ) -> tuple[np.ndarray, list[Tensors] | None, int]:
    """(the k largest eigenvalues, descending, or the k smallest, ascending; their eigenvectors
    {name: tensor} if asked; products used) by Lanczos from a seeded Gaussian start, at most
    max(`iterations`, k) products. Near-zero eigenvalues converge slowly under the relative
    `tolerance` (a Hessian's bottom end is often a cluster around 0). `start` replaces the
    Gaussian (`_start`). Fewer than k values come back when the Krylov space is exhausted (k
    beyond the distinct eigenvalues): a repeated eigenvalue is counted once."""
    if which not in ("largest", "smallest"):
        raise BadInput(f"which must be largest or smallest, got {which!r}")
    state, k = _converged_run(operator, k, (which,), iterations, tolerance, seed, start)
    values, s = state.ritz()
    order = np.argsort(values)[::-1][:k] if which == "largest" else np.argsort(values)[:k]
    found = None
    if vectors:
        ritz = state.combine(torch.as_tensor(s[:, order].T.copy(), dtype=operator.dtype,
                                             device=operator.device))              # [k, N]
        found = [unflatten(y, operator.params) for y in ritz]
    return values[order], found, len(state.alpha)


def spectrum_ends(operator: Operator, *, k: int = 1, iterations: int = 100,
                  tolerance: float = 1e-4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(the k largest eigenvalues, descending; the k smallest, ascending; products used) from
    one Lanczos run from eigenpairs' seeded start, stopped when both ends have converged: the
    two ends of eigenpairs' two runs come from the same Krylov space, so this is each of them at
    least as converged, for the products of the slower end alone (a Hessian's bottom end: 31 of
    37 products for an MLP, 32 of 47 for a CNN; benchmarks/RESULTS.md)."""
    state, k = _converged_run(operator, k, ("largest", "smallest"), iterations, tolerance, seed)
    values = np.sort(state.ritz()[0])
    return values[::-1][:k], values[:k], len(state.alpha)


def _converged_run(operator: Operator, k: int, ends: tuple[str, ...], iterations: int,
                   tolerance: float, seed: int, start: Start = None) -> tuple[Lanczos, int]:
    """Lanczos from the seeded start until the k extreme Ritz values at each of `ends` have a
    residual |beta_m s_mi| below `tolerance` times |theta_i|; (the run, k within N)."""
    if k < 1:
        raise BadInput(f"k must be at least 1, got {k}")
    _check_stopping(iterations, tolerance)
    start = _start(operator, seed, start)
    k = min(k, start.numel())

    def converged(state: Lanczos) -> bool:
        if len(state.alpha) < k:
            return False
        values, s = state.ritz()
        for end in ends:
            at = slice(len(values) - k, None) if end == "largest" else slice(0, k)
            residual = np.abs(state.beta[-1] * s[-1, at])
            if not np.all(residual <= tolerance * np.maximum(np.abs(values[at]), 1e-30)):
                return False
        return True

    return lanczos(operator, start, steps=max(iterations, k), stop=converged), k


def _check_stopping(iterations: int, tolerance: float) -> None:
    if iterations < 1 or not tolerance >= 0:  # not >= : a NaN tolerance too
        raise BadInput(f"iterations must be at least 1 and tolerance at least 0, got "
                       f"{iterations} and {tolerance}")


def _start(operator: Operator, seed: int, given: Start = None) -> torch.Tensor:
    """The start [N] of top_eigenvalue and the Lanczos runs, on the operator's device and
    dtype: the seeded Gaussian, or the vector `given` ([N] in the operator's order, or {name:
    tensor} as eigenpairs' eigenvectors; any scale), as scipy's eigsh takes v0: a warm start
    from a nearby point's eigenvector. A start without weight on the top eigenvector (a
    gradient can be one) lets the change rule stop on a lower eigenvalue's plateau: the seeded
    Gaussian has weight on every direction (benchmarks/RESULTS.md: the gradient as a start),
    though little of it can still fool the rule at any tolerance (1e-3: one start in 20 on a
    transformer's Fisher, benchmarks/stopping.py; 1e-4: one in 20 on a small MLP, 8% low, its
    overlap 5e-4 against a typical 0.08)."""
    if given is None:
        generator = draws(seed)
        found = flat_draws(operator.params, lambda shape: torch.randn(shape, generator=generator))
    elif isinstance(given, Mapping):
        if set(given) != set(operator.params):
            raise BadInput("start must hold a tensor for each of the operator's parameters "
                           f"({', '.join(operator.params)}), got {', '.join(map(str, given))}")
        found = torch.cat([torch.as_tensor(given[k]).reshape(-1) for k in operator.params])
    else:
        found = torch.as_tensor(given).reshape(-1)
    if found.numel() != operator.shape[0]:
        raise BadInput(f"start must have {operator.shape[0]} numbers (the operator's size), "
                       f"got {found.numel()}")
    found = found.to(operator.device, operator.dtype)
    norm = found.norm()
    if not (torch.isfinite(norm) and norm > 0):
        raise BadInput("start must be finite and not zero")
    return found


def spectral_density(operator: Operator, *, iterations: int = 90, runs: int = 1,
                     seed: int = 0) -> Density:
    """Stochastic Lanczos quadrature of the operator's spectral density (see the module's
    text): `.nodes`, `.weights` (summing to 1), `.curve()` and `.moment(p)` (~ tr(A^p) / n)."""
    if iterations < 1 or runs < 1:
        raise BadInput(f"iterations and runs must be at least 1, got {iterations} and {runs}")
    generator = draws(seed)
    nodes, weights = [], []
    for _ in range(runs):
        start = flat_draws(operator.params, lambda shape: torch.randint(
            0, 2, shape, generator=generator) * 2.0 - 1).to(operator.device, operator.dtype)
        values, s = lanczos(operator, start, steps=iterations).ritz()
        nodes.append(values)
        weights.append(s[0] ** 2 / runs)
    return Density(np.concatenate(nodes), np.concatenate(weights))
