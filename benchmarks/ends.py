"""Both ends of a Hessian's spectrum (a convexity map's point, `flatness --eigen`): one Lanczos
run stopped when both ends have converged (landscape.spectrum_ends) against a run for each end
(eigenpairs largest, then smallest: what the convexity map did before) and against ARPACK's
both-ends mode (scipy's eigsh(which="BE", k=2) on the operator's to_scipy()), on
benchmarks/curvature.py's three models, in one process, one thread, relative tolerance 1e-4.
Seconds (median of --repeat), products, and the two eigenvalues.

    python benchmarks/ends.py --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from curvature import setting, warm_up  # benchmarks/curvature.py, same folder
from scipy.sparse.linalg import eigsh
from sweep import machine  # benchmarks/sweep.py, same folder
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape

TOLERANCE = 1e-4


def one_run(H):
    top, bottom, _ = landscape.spectrum_ends(H, tolerance=TOLERANCE)
    return top[0], bottom[0]


def two_runs(H):
    top = landscape.eigenpairs(H, k=1, which="largest", tolerance=TOLERANCE)[0]
    bottom = landscape.eigenpairs(H, k=1, which="smallest", tolerance=TOLERANCE)[0]
    return top[0], bottom[0]


def arpack(H):
    values = eigsh(H.to_scipy(), k=2, which="BE", tol=TOLERANCE)[0]
    return values.max(), values.min()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine(torch.device("cpu")))
    for name in args.models.split(","):
        model, x, y = setting(name)
        with sdpa_kernel(SDPBackend.MATH):
            warm_up(model, x, y)
            found = {}
            for method in (one_run, two_runs, arpack):
                times = []
                for _ in range(args.repeat):
                    H = landscape.HessianOperator(model, (x, y))
                    tic = time.perf_counter()
                    values = method(H)
                    times.append(time.perf_counter() - tic)
                found[method.__name__] = statistics.median(times), H.products, values
        for method, (seconds, products, (top, bottom)) in found.items():
            print(f"{name:<12} {method:<9} {seconds:7.3f} s {products:4d} products  "
                  f"largest {top:.6g}  smallest {bottom:.6g}")
        reference = found["arpack"][2]
        agree = all(np.isclose(found["one_run"][2][i], reference[i], rtol=1e-3) for i in (0, 1))
        ours = found["one_run"][0]
        print(f"{name:<12} ratio two_runs/one_run {found['two_runs'][0] / ours:.2f}, "
              f"arpack/one_run {found['arpack'][0] / ours:.2f}; one_run within "
              f"0.1% of ARPACK at both ends: {agree}", flush=True)


if __name__ == "__main__":
    main()
