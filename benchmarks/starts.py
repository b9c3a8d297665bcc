"""The top eigenvalue's start: Hessian-vector products to a relative change of 1e-3 (the rule of
benchmarks/curvature.py's `top`) and the error at the stop, over seeds, for
- gaussian: top_eigenvalue on the HessianOperator from its seeded Gaussian start (the default);
- gradient: the same from the gradient plus the seeded Gaussian, both of unit length (start=):
  near a minimum theta*, g ~ H (theta - theta*), one free power step;
- power: PyHessian's power iteration from torch.randn under the seed (if pyhessian imports);
- fisher: the empirical Fisher's top eigenvalue from the Gaussian and from the gradient start;
on benchmarks/curvature.py's three models as built (random weights) and after --steps steps of
SGD (momentum 0.9, learning rate 0.05, batches of 64) on their own data. The error is against
Lanczos with full reorthogonalization to a residual of 1e-7. Counts, not seconds: a product
costs the same in each (one backward pass through the kept gradient graph).

    pip install -e ".[peers]"
    python benchmarks/starts.py --seeds 10
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from curvature import pyhessian, seeded, setting  # benchmarks/curvature.py
from sweep import machine  # benchmarks/sweep.py, same folder
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape
from landscape.measures.spectrum import _start as gaussian  # the seeded Gaussian

TOLERANCE = 1e-3


def trained(name: str, steps: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = setting(name)
    if steps:
        torch.manual_seed(0)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(steps):
            rows = torch.randint(0, len(x), (64,))
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    return model, x, y


def power(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, int]:
    """PyHessian's top eigenvalue and its products as benchmarks/curvature.py measures them
    (the same tolerance), its draws from `seed`."""
    seeded(seed)
    return pyhessian(model, x, y, "top", seed)


def row(label: str, found: list[tuple[float, int]], reference: float) -> str:
    products = [n for _, n in found]
    error = max(abs(value - reference) / abs(reference) for value, _ in found)
    return (f"  {label:<17} products {min(products)}-{max(products)} (median "
            f"{statistics.median(products):g}), largest error {error:.1e}")


def gradient_starts(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    operator: landscape.Operator, seeds: range) -> list[torch.Tensor]:
    """The mean loss's gradient plus each seed's Gaussian (the operator's own), both unit."""
    loss = F.cross_entropy(model(x), y)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    starts = []
    for seed in seeds:
        w = gaussian(operator, seed)
        starts.append(w / w.norm() + g / g.norm())
    return starts


def compared(label: str, operator: landscape.Operator, starts: list[torch.Tensor],
             seeds: range) -> tuple[list[str], float]:
    reference = float(landscape.eigenpairs(operator, k=1, tolerance=1e-7, iterations=300)[0][0])
    plain = [landscape.top_eigenvalue(operator, tolerance=TOLERANCE, seed=s) for s in seeds]
    given = [landscape.top_eigenvalue(operator, tolerance=TOLERANCE, start=v) for v in starts]
    return [f"  {label}: top eigenvalue {reference:.6g}",
            row(f"{label} gaussian", plain, reference),
            row(f"{label} gradient", given, reference)], reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", default="0,300", help="SGD steps before measuring")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine(torch.device("cpu")))
    try:
        import pyhessian  # noqa: F401
        peer = True
    except ImportError:
        peer = False
    seeds = range(args.seeds)
    with sdpa_kernel(SDPBackend.MATH):
        for name in args.models.split(","):
            for steps in map(int, args.steps.split(",")):
                model, x, y = trained(name, steps)
                print(f"\n{name} after {steps} SGD steps, seeds 0-{args.seeds - 1}")
                H = landscape.HessianOperator(model, (x, y))
                lines, reference = compared("hessian", H, gradient_starts(model, x, y, H, seeds),
                                            seeds)
                print("\n".join(lines))
                if peer:
                    print(row("power (PyHessian)", [power(model, x, y, s) for s in seeds],
                              reference))
                fisher = landscape.FisherOperator(model, (x, y))
                print("\n".join(compared("fisher", fisher, gradient_starts(
                    model, x, y, fisher, seeds), seeds)[0]))


if __name__ == "__main__":
    main()
