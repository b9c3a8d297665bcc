"""Our measurements on a user's model against what the peers' algorithms do, on the same model and
data, measured side by side in one run (docs/guides/own-model.md).

  slice   a 51-point 1-D slice, train and test loss and accuracy:
          ours         landscape.loss_slice on the DataLoaders, and on the tensors
          crunch       what loss-landscape's crunch does: load_state_dict of each perturbed point
                       into the module, then the train and test DataLoaders (batch 128), eval mode
          random_line  the loss-landscapes package's random_line (51 steps, filter-normalized,
                       test loss only, the whole test set as one batch), where it is installed;
                       ours on the same one split beside it
  eigen   the top Hessian eigenvalue of the mean training loss, relative tolerance 1e-3 and at
          most 100 products (PyHessian's defaults), and the top 5:
          ours         landscape.hessian_top_eigenvalue on the tensors
          pyhessian    PyHessian's algorithm for one batch: the loss gradient built once with
                       create_graph, each product an autograd.grad through it (retain_graph),
                       power iteration stopping at |change| / (|lambda| + 1e-6) < tol; top 5:
                       its deflated power iteration, one eigenvalue after another (ours: Lanczos,
                       landscape.hessian_eigenvalues, the same tolerance on every residual)

The model is a plain nn.Sequential MLP (10 inputs, DEPTH hidden ReLU layers of WIDTH, 2 outputs,
cross-entropy); data: two Gaussian classes in 10-d, 1,000 training and 20,000 test points.
Ratios are reference / ours (> 1: ours is faster), medians of --repeat alternating runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sweep import machine, parse_with_device, sync  # benchmarks/sweep.py, same folder
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape


def user_model(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(10 if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 2)).eval()


def user_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    return torch.randn(n, 10, generator=g) + y[:, None].float() * 0.3, y


def crunch(model: nn.Module, direction: dict[str, torch.Tensor], alphas, loaders) -> list[float]:
    """load_state_dict per point, then every loader: loss-landscape's crunch loop."""
    start = {k: v.clone() for k, v in model.state_dict().items()}
    out = []
    with torch.no_grad():
        for alpha in alphas:
            model.load_state_dict({k: v + float(alpha) * direction[k] if k in direction else v
                                   for k, v in start.items()})
            model.eval()
            for loader in loaders:
                total = correct = count = 0.0
                for x, y in loader:
                    logits = model(x)
                    total += float(F.cross_entropy(logits, y, reduction="sum"))
                    correct += float((logits.argmax(1) == y).sum())
                    count += len(y)
                out += [total / count, correct / count]
    model.load_state_dict(start)
    return out


def pyhessian_power(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iterations: int = 100,
                    tol: float = 1e-3, seed: int = 0) -> float:
    """Power iteration as PyHessian runs it on one batch (see the module docstring)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator) for p in params]
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    v = [t / norm for t in v]
    eigenvalue = None
    for _ in range(iterations):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        estimate = float(sum((a * b).sum() for a, b in zip(hv, v)))
        norm = torch.sqrt(sum((t * t).sum() for t in hv))
        v = [t / norm for t in hv]
        if eigenvalue is not None and abs(eigenvalue - estimate) / (abs(eigenvalue) + 1e-6) < tol:
            break
        eigenvalue = estimate
    return estimate


def pyhessian_top_n(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int, *,
                    iterations: int = 100, tol: float = 1e-3, seed: int = 0) -> list[float]:
    """PyHessian's top_n: power iteration for each eigenvalue in turn, the iterate
    orthonormalized against the eigenvectors found before at every step (deflation)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    found: list[list[torch.Tensor]] = []
    values = []

    def dot(a, b):
        return sum((s * t).sum() for s, t in zip(a, b))

    for _ in range(n):
        v = [torch.randn(p.shape, generator=generator) for p in params]
        eigenvalue = None
        for _ in range(iterations):
            for u in found:  # Gram-Schmidt against the eigenvectors found
                c = dot(v, u)
                v = [s - c * t for s, t in zip(v, u)]
            norm = torch.sqrt(dot(v, v))
            v = [t / norm for t in v]
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            estimate = float(dot(hv, v))
            norm = torch.sqrt(dot(hv, hv))
            v = [t / norm for t in hv]
            if eigenvalue is not None and abs(eigenvalue - estimate) / (abs(eigenvalue) + 1e-6) < tol:
                break
            eigenvalue = estimate
        values.append(estimate)
        found.append(v)
    return values


def timed(runners: dict[str, Callable[[], object]], repeat: int, device: torch.device
          ) -> dict[str, float]:
    """Median seconds per runner, the runners alternating so that a busy machine slows them alike."""
    for fn in runners.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeat):
        for name, fn in runners.items():
            sync(device)
            tic = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - tic)
    return {k: statistics.median(v) for k, v in times.items()}


def line(label: str, times: dict[str, float], pairs: list[tuple[str, str]]) -> None:
    shown = "  ".join(f"{k} {v:.3f} s" for k, v in times.items())
    ratios = "  ".join(f"{ref}/{ours} {times[ref] / times[ours]:.2f}" for ref, ours in pairs)
    print(f"{label:<22} {shown}  | {ratios}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,500", help="MLP widths, comma-separated")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--points", type=int, default=51)
    args, device = parse_with_device(parser)
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError:
        loss_landscapes = None
    print(machine(device) + ", "
          f"repeat {args.repeat}; loss-landscapes "
          f"{'installed' if loss_landscapes else 'not installed (pip install loss-landscapes)'}")
    train, test = user_data(1000, 1), user_data(20000, 2)
    train, test = tuple(t.to(device) for t in train), tuple(t.to(device) for t in test)
    loaders = [DataLoader(TensorDataset(*s), batch_size=128) for s in (train, test)]
    for width in map(int, args.widths.split(",")):
        model = user_model(width, args.depth).to(device)
        ours = landscape.loss_slice(model, {"train": train, "test": test}, points=args.points)
        alphas, d = ours.x, ours.directions[0]
        reference = crunch(model, d, alphas, loaders)
        mine = [v for i in range(len(alphas)) for s in ("train", "test")
                for v in (ours[f"{s}_loss"][i], ours[f"{s}_acc"][i])]
        gap = max(abs(a - b) for a, b in zip(reference, mine))
        if gap > 1e-4:  # else a speed-up would mean nothing
            raise SystemExit(f"width {width}: ours and the crunch loop disagree by {gap:.2g}")
        splits = {"train": train, "test": test}
        runners = {
            "ours": lambda: landscape.loss_slice(model, splits, points=args.points),
            "ours_loader": lambda: landscape.loss_slice(
                model, dict(zip(splits, loaders)), points=args.points),
            "crunch": lambda: crunch(model, d, alphas, loaders)}
        line(f"slice  width {width}", timed(runners, args.repeat, device),
             [("crunch", "ours"), ("crunch", "ours_loader")])
        if loss_landscapes is not None:
            metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), *test)
            one = {"ours_test": lambda: landscape.loss_slice(model, test, points=args.points),
                   "random_line": lambda: loss_landscapes.random_line(
                       model, metric, distance=1.0, steps=args.points, normalization="filter",
                       deepcopy_model=True)}
            line(f"line   width {width}", timed(one, args.repeat, device),
                 [("random_line", "ours_test")])
        top = landscape.hessian_top_eigenvalue(model, train, tolerance=1e-3)
        peer = pyhessian_power(model, *train)
        if abs(top - peer) > 1e-2 * abs(peer):
            raise SystemExit(f"width {width}: top eigenvalues differ: ours {top}, peer {peer}")
        eigen = {"ours": lambda: landscape.hessian_top_eigenvalue(model, train, tolerance=1e-3),
                 "pyhessian": lambda: pyhessian_power(model, *train)}
        line(f"eigen  width {width}", timed(eigen, args.repeat, device), [("pyhessian", "ours")])
        ours5 = landscape.hessian_eigenvalues(model, train, k=5, tolerance=1e-3)
        peer5 = pyhessian_top_n(model, *train, 5)
        gap = max(abs(a - b) / abs(b) for a, b in zip(ours5, sorted(peer5, reverse=True)))
        top5 = {"ours": lambda: landscape.hessian_eigenvalues(model, train, k=5, tolerance=1e-3),
                "pyhessian": lambda: pyhessian_top_n(model, *train, 5)}
        line(f"top-5  width {width}", timed(top5, args.repeat, device), [("pyhessian", "ours")])
        print(f"       top-5 ours {np.round(ours5, 4).tolist()}, pyhessian "
              f"{np.round(peer5, 4).tolist()}: largest relative difference {gap:.2g}")


if __name__ == "__main__":
    main()
