"""Stopping rules for the top eigenvalue, by their error at the stop: for each setting (a model
of benchmarks/curvature.py as built or after SGD steps; the Hessian, the GGN or the empirical
Fisher) and each seed, the largest-magnitude Ritz value of Lanczos without reorthogonalization
(top_eigenvalue's iteration) and the Rayleigh quotient of power iteration (PyHessian's), step by
step from the seeded Gaussian start; then where each rule stops and how far from the converged
value (Lanczos with full reorthogonalization to a residual of 1e-8):

- change: stop when the estimate changes by at most `tolerance` (relative): top_eigenvalue's
  rule, and PyHessian's for power iteration;
- geometric: stop when the last change, extrapolated as a geometric series of ratio
  r = d_k / d_(k-1) (Aitken), |d_k| r / (1 - r), is at most `tolerance`: a product earlier where
  the iteration converges fast, rejected for stopping far from the value on a trained
  transformer (benchmarks/RESULTS.md).

Counts, not seconds: a product costs the same in each.

    python benchmarks/stopping.py --seeds 20                  # about 20 minutes, one core
    python benchmarks/stopping.py --models mlp --seeds 3 --steps 0 --tolerances 1e-3
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from typing import Callable

import torch
from starts import trained  # benchmarks/starts.py, same folder
from sweep import machine  # benchmarks/sweep.py
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape
from landscape.measures.spectrum import _lanczos_estimates, _power_estimates
from landscape.measures.spectrum import _start as gaussian  # the seeded Gaussian

OPERATORS = {"hessian": landscape.HessianOperator, "ggn": landscape.GGNOperator,
             "fisher": landscape.FisherOperator}


def recorded(estimates: Callable, operator: landscape.Operator, q: torch.Tensor,
             steps: int) -> list[float]:
    """The first `steps` estimates of top_eigenvalue's iteration (spectrum.py's) from q."""
    return list(itertools.islice(estimates(operator, q / q.norm()), steps))


def change(estimates: list[float], tolerance: float) -> int:
    """The index where the change rule stops (the last one if it never does)."""
    for k in range(1, len(estimates)):
        if abs(estimates[k] - estimates[k - 1]) <= tolerance * abs(estimates[k]):
            return k
    return len(estimates) - 1


def geometric(estimates: list[float], tolerance: float) -> int:
    for k in range(2, len(estimates)):
        last, before = estimates[k] - estimates[k - 1], estimates[k - 1] - estimates[k - 2]
        if last == 0:
            return k
        r = last / before if before else -1.0
        if 0 <= r < 1 and abs(last) * r / (1 - r) <= tolerance * abs(estimates[k]):
            return k
    return len(estimates) - 1


def row(label: str, runs: list[list[float]], rule: Callable[[list[float], float], int],
        tolerance: float, reference: float) -> tuple[str, float]:
    stops = [rule(r, tolerance) for r in runs]
    error = max(abs(r[k] - reference) / abs(reference) for r, k in zip(runs, stops))
    products = [k + 1 for k in stops]
    return (f"{label} {min(products)}-{max(products)} (median {statistics.median(products):g})"
            f" {error:.0e}"), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", default="0,300,2000", help="SGD steps before measuring")
    parser.add_argument("--tolerances", default="1e-3,1e-4")
    parser.add_argument("--iterations", type=int, default=20, help="steps recorded a run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine(torch.device("cpu")))
    tolerances = [float(t) for t in args.tolerances.split(",")]
    worst = {(t, rule): 0.0 for t in tolerances for rule in ("change", "geometric", "power")}
    with sdpa_kernel(SDPBackend.MATH):
        for name in args.models.split(","):
            for steps in map(int, args.steps.split(",")):
                model, x, y = trained(name, steps)
                for kind, make in OPERATORS.items():
                    operator = make(model, (x, y))
                    top = landscape.eigenpairs(operator, k=1, tolerance=1e-8, iterations=300)[0]
                    bottom = landscape.eigenpairs(operator, k=1, which="smallest",
                                                  tolerance=1e-6, iterations=300)[0]
                    reference = float(top[0] if abs(top[0]) >= abs(bottom[0]) else bottom[0])
                    starts = [gaussian(operator, s) for s in range(args.seeds)]
                    lanczos = [recorded(_lanczos_estimates, operator, q, args.iterations)
                               for q in starts]
                    power = [recorded(_power_estimates, operator, q, args.iterations + 10)
                             for q in starts]
                    for tolerance in tolerances:
                        found = [row("change", lanczos, change, tolerance, reference),
                                 row("geometric", lanczos, geometric, tolerance, reference),
                                 row("power", power, change, tolerance, reference)]
                        for rule, (_, error) in zip(("change", "geometric", "power"), found):
                            worst[tolerance, rule] = max(worst[tolerance, rule], error)
                        print(f"{name}/{steps}/{kind} tol {tolerance:g}: "
                              + " | ".join(text for text, _ in found), flush=True)
    print("\nlargest error at the stop over every setting and seed (products range, median, "
          "largest relative error above):")
    for (tolerance, rule), error in worst.items():
        print(f"  tolerance {tolerance:g}  {rule:<9} {error:.1e}")


if __name__ == "__main__":
    main()
