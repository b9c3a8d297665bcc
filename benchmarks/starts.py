"""The top eigenvalue's start: Hessian-vector products to a relative change of 1e-3 (the rule of
benchmarks/curvature.py's `top`) and the error at the stop, over seeds, for
- ours: top_eigenvalue on the HessianOperator, Lanczos from a seeded Gaussian plus the gradient
  (the operator's start hint, spectrum.py);
- gaussian: the same Lanczos from the Gaussian alone (the same products, through an Operator
  that has no hint);
- power: PyHessian's power iteration from torch.randn under the seed (if pyhessian imports);
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
import sys

import torch
import torch.nn.functional as F
from curvature import setting  # benchmarks/curvature.py, same folder
from sweep import machine  # benchmarks/sweep.py, same folder
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape

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
    """PyHessian's eigenvalues(top_n=1) and the products it asked for."""
    import pyhessian  # noqa: F401  (the package's `hessian` class hides its module)

    module = sys.modules["pyhessian.hessian"]
    inner, count = module.hessian_vector_product, [0]

    def counted(*args):
        count[0] += 1
        return inner(*args)

    module.hessian_vector_product = counted
    try:
        torch.manual_seed(seed)
        found = module.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        return found.eigenvalues(maxIter=100, tol=TOLERANCE, top_n=1)[0][0], count[0]
    finally:
        module.hessian_vector_product = inner


def row(label: str, found: list[tuple[float, int]], reference: float) -> str:
    products = [n for _, n in found]
    error = max(abs(value - reference) / abs(reference) for value, _ in found)
    return (f"  {label:<9} products {min(products)}-{max(products)} (median "
            f"{statistics.median(products):g}), largest error {error:.1e}")


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
    with sdpa_kernel(SDPBackend.MATH):
        for name in args.models.split(","):
            for steps in map(int, args.steps.split(",")):
                model, x, y = trained(name, steps)
                H = landscape.HessianOperator(model, (x, y))
                plain = landscape.Operator(H.params, H.matmat)  # the same products, no hint
                reference = float(landscape.eigenpairs(H, k=1, tolerance=1e-7,
                                                       iterations=300)[0][0])
                print(f"\n{name} after {steps} SGD steps: top eigenvalue {reference:.6g}, "
                      f"seeds 0-{args.seeds - 1}")
                seeds = range(args.seeds)
                print(row("ours", [landscape.top_eigenvalue(H, tolerance=TOLERANCE, seed=s)
                                   for s in seeds], reference))
                print(row("gaussian", [landscape.top_eigenvalue(plain, tolerance=TOLERANCE,
                                                                seed=s) for s in seeds],
                          reference))
                if peer:
                    print(row("power", [power(model, x, y, s) for s in seeds], reference))


if __name__ == "__main__":
    main()
