"""The Hessian's exact diagonal and trace on benchmarks/curvature.py's three models: ours
(split_diagonal / split_trace: G's exactly from per-sample Jacobians, plus the rest's, zero for
a model piecewise linear in its parameters) against BackPACK's DiagHessian (Dangel et al.
2020: exact, by backpropagating the loss Hessian's square-root factors layer by layer, for the
layers it has rules for), in one run.

Each (model, tool) runs in a fresh process with one thread after benchmarks/curvature.py's
set-up; reported: seconds, the trace (the diagonal's sum), whether the tool ran, and the
largest difference between the two diagonals relative to the largest entry.

    pip install backpack-for-pytorch      # (not a dependency of the package)
    python benchmarks/diagonal.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from curvature import setting, warm_up  # benchmarks/curvature.py, same folder
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape

MODELS = ("mlp", "cnn", "transformer")


def ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    found = landscape.split_diagonal(landscape.HessianOperator(model, (x, y)))
    return torch.cat([t.reshape(-1) for t in found.value.values()])


def backpack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from backpack import backpack as context
    from backpack import extend
    from backpack.extensions import DiagHessian

    model, loss = extend(model), extend(nn.CrossEntropyLoss())
    value = loss(model(x), y)
    with context(DiagHessian()):
        value.backward()
    return torch.cat([p.diag_h.reshape(-1) for p in model.parameters()])


def one(model_name: str, tool: str) -> dict:
    torch.set_num_threads(1)
    model, x, y = setting(model_name)
    with sdpa_kernel(SDPBackend.MATH):
        warm_up(model, x, y)
        tic = time.perf_counter()
        try:
            found = globals()[tool](model, x, y)
        except Exception as error:  # noqa: BLE001  (a peer's failure is a result)
            return {"error": f"{type(error).__name__}: {error}"[:100]}
        seconds = time.perf_counter() - tic
    return {"seconds": seconds, "diagonal": found.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    print(f"1 thread per process, median of {args.repeat}; load {os.getloadavg()[0]:.1f}")
    for model_name in args.models.split(","):
        runs = {}
        for tool in ("ours", "backpack"):
            found = [json.loads(subprocess.run(
                [sys.executable, __file__, "--one", model_name, tool], capture_output=True,
                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.splitlines()[-1])
                for _ in range(args.repeat)]
            runs[tool] = {**found[-1], "seconds": statistics.median(
                r["seconds"] for r in found)} if "seconds" in found[-1] else found[-1]
        mine = torch.tensor(runs["ours"]["diagonal"])
        for tool, r in runs.items():
            if "error" in r:
                print(f"{model_name:<12} {tool:<9} fails: {r['error']}")
                continue
            theirs = torch.tensor(r["diagonal"])
            print(f"{model_name:<12} {tool:<9} {r['seconds']:7.3f} s  trace {theirs.sum():.5g}  "
                  f"differs from ours by {(theirs - mine).abs().max() / mine.abs().max():.1e}")


if __name__ == "__main__":
    main()
