"""Hessian products of models with BatchNorm in eval mode: the operators' objective evaluates
BatchNorm as its affine map (landscape/measures/objective.py, AffineBatchNorm) against torch's
batch norm, whose double backward runs its general formula for batch statistics. Same model,
data and vectors; one thread; per-product milliseconds, median of --repeat rounds of 5 products,
the two alternating; and the largest relative difference of the products.

    python benchmarks/batchnorm.py --repeat 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from curvature import setting, warm_up  # benchmarks/curvature.py, same folder
from sweep import machine  # benchmarks/sweep.py, same folder
from torch import nn

import landscape
import landscape.measures.objective as objective


def models():
    yield "cnn", *setting("cnn")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    layers = [nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU()]
    mlp_bn = nn.Sequential(*layers, nn.Linear(256, 10))
    for m in mlp_bn.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
    yield "mlp_bn", mlp_bn.eval(), torch.randn(1000, 784, generator=g), torch.randint(
        0, 10, (1000,), generator=g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine(torch.device("cpu")))
    for name, model, x, y in models():
        warm_up(model, x, y)
        operators, products = {}, {}
        v = torch.randn(1, sum(p.numel() for p in model.parameters()),
                        generator=torch.Generator().manual_seed(1))
        for affine in (False, True):  # the kept graph is built at the first product
            objective.AFFINE_BATCHNORM = affine
            operators[affine] = landscape.HessianOperator(model, (x, y))
            products[affine] = operators[affine].matmat(v)
        times = {False: [], True: []}
        for _ in range(args.repeat):
            for affine, H in operators.items():
                tic = time.perf_counter()
                for _ in range(5):
                    H.matmat(v)
                times[affine].append((time.perf_counter() - tic) / 5)
        torch_bn, affine = (statistics.median(times[k]) for k in (False, True))
        gap = float((products[True] - products[False]).abs().max() / products[False].abs().max())
        print(f"{name:<8} torch's batch norm {torch_bn * 1e3:.1f} ms, affine {affine * 1e3:.1f} "
              f"ms a product: ratio {torch_bn / affine:.2f}; largest difference {gap:.1e} of "
              "the largest entry", flush=True)
    objective.AFFINE_BATCHNORM = True


if __name__ == "__main__":
    main()
