"""Benchmark (issue 23's first step): the Hessian measures on a small CNN with BatchNorm (3 conv
blocks, 114k parameters, 512 images of 3 x 32 x 32) under the measured memory rules against the
estimates they replaced, in one run:

  measured   memory.row_numbers from one forward pass of a zero row, and operators.graph_numbers
             from what autograd saves while it builds a chunk's gradient graph;
  estimated  the earlier rules, restored for the run: a conv feature map as 64 x the input per
             row, and 4 x weight layers x that widest layer per row of a kept gradient graph.

Both give the same numbers up to float32 summation order (checked); the measured rule keeps the 512 images' gradient graph
(261k numbers a row) where the estimate (524k) re-ran forward and backward for every product.

    python benchmarks/memory_rules.py              # one thread, a few minutes on a 2-core CPU
    python benchmarks/memory_rules.py --device cuda --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
from sweep import machine, report  # same folder
from torch import nn

import landscape
from landscape import memory
from landscape.device import resolve_device
from landscape.measures import operators


@contextlib.contextmanager
def estimated_rules():
    """The rules before measurement: row_numbers' estimate, and a graph of 4 numbers per unit of
    every weight layer's widest output."""
    widest, graph = memory._measured_widest, operators.graph_numbers
    model: list[nn.Module] = []

    def per_row(build, batch):
        x = batch[0]
        return 4 * memory.layers(model[0]) * memory.row_numbers(model[0], tuple(x.shape[1:])), 0

    memory._measured_widest = lambda template, shape: None
    operators.graph_numbers = per_row
    try:
        yield model
    finally:
        memory._measured_widest, operators.graph_numbers = widest, graph


def cnn() -> nn.Module:
    torch.manual_seed(0)

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                         nn.Linear(128 * 4 * 4, 10)).eval()


def measure(model: nn.Module, data, device, iterations: int, probes: int) -> dict[str, tuple]:
    out = {}
    tic = time.perf_counter()
    top = landscape.hessian_top_eigenvalue(model, data, iterations=iterations, tolerance=0,
                                           device=device)
    out["top eigenvalue"] = (time.perf_counter() - tic, top)
    tic = time.perf_counter()
    trace = landscape.hessian_trace(model, data, probes=probes, device=device)
    out["trace"] = (time.perf_counter() - tic, trace.value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=10, help="power iterations (products)")
    parser.add_argument("--probes", type=int, default=16, help="Hutchinson probes (products)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    model = cnn()
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(args.images, 3, 32, 32, generator=g),
            torch.randint(0, 10, (args.images,), generator=g))
    print(machine(device) + "; "
          f"CNN of {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{args.images} images; {args.iterations} power iterations, {args.probes} probes")
    times: dict[str, dict[str, list[float]]] = {"measured": {}, "estimated": {}}
    values: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):  # alternately, so that a busy machine slows both alike
        for rule in times:
            with contextlib.ExitStack() as stack:
                if rule == "estimated":
                    stack.enter_context(estimated_rules()).append(model)
                for name, (seconds, value) in measure(model, data, device, args.iterations,
                                                      args.probes).items():
                    times[rule].setdefault(name, []).append(seconds)
                    values.setdefault(rule, {})[name] = value
    for name in times["measured"]:
        a, b = values["measured"][name], values["estimated"][name]
        # float32 sums over other chunkings of the rows: equal to a few 1e-4 (trace: 1.4e-4)
        assert math.isclose(a, b, rel_tol=1e-3), (name, a, b)
        report(name, {rule: times[rule][name] for rule in ("estimated", "measured")},
               "estimated", "measured")


if __name__ == "__main__":
    main()
