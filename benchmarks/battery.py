"""Benchmark (issue 24): the generalization-measure battery's time per model, two ways, on a user's
model and DataLoader (an MLP 784 -> width -> width -> 10 on N MNIST-shaped images; a CNN with
BatchNorm with --model cnn):

  ours   landscape.generalization_measures(model, loader, init=...): the loader read once into
         a source every measure shares (sources.LoaderSource), the model prepared once;
  loop   the straightforward loop a study script writes: each measure's public function called
         on the same model, loader and options (landscape.worst_case_sharpness(model, loader,
         ...), landscape.pac_bayes_sigma(...), ...), one after the other.

Both compute the same numbers with the same seeds (checked before timing). Prints the ratio
loop/ours per model, measured in the same run with the modes alternating, medians of --repeat runs
beside the spread of the ratios, and each measure's share of the battery's time.

    python benchmarks/battery.py                      # CPU, MLP, 2,000 images, ~3 min
    python benchmarks/battery.py --model cnn --device cuda --repeat 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sweep import machine, matmul_rate, parse_with_device, report, timed  # same folder
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape
from landscape.measures.generalization import MEASURES


def model_of(kind: str, width: int) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(),
                             nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def trained(model: nn.Module, loader: DataLoader, epochs: int) -> nn.Module:
    """A few epochs of SGD, so that the measures see a model away from its initialization."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--probes", type=int, default=20, help="hessian_trace's probes")
    args, device = parse_with_device(parser)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 1, 28, 28, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1) + (torch.rand(args.samples, generator=g) < 0.1)) % 10
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size)
    model = model_of(args.model, args.width)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model = trained(model, loader, epochs=2).to(device)
    options = {"hessian_trace": {"probes": args.probes}}

    def ours(_: int) -> dict[str, float]:
        return landscape.generalization_measures(model, loader, init=init, options=options,
                                                 device=device)

    shares: dict[str, float] = {}

    def loop(_: int) -> dict[str, float]:
        out = {}
        for name, entry in MEASURES.items():  # each public function, as a study script calls it
            tic = time.perf_counter()
            leading = {"data": (model, loader), "weights": (model,), "init": (model, init),
                       "shape": (model, (1, 28, 28))}[entry.takes]
            kwargs = {**entry.fixed, **options.get(name, {}),
                      **({"device": device} if entry.takes == "data" else {})}
            result = entry.function(*leading, **kwargs)
            out[name] = float(result if entry.value is None else getattr(result, entry.value))
            shares[name] = shares.get(name, 0.0) + time.perf_counter() - tic
        return out

    a, b = ours(0), loop(0)
    # The loop's first pass over each fresh loader sums its own batches where the battery's
    # replays one kept tensor in larger chunks: float sums differ in the last bits, and an
    # ascent of 20 steps carries that a little further; anything beyond 1e-3 is a real difference.
    differ = {n: (a[n], b[n]) for n in a if not np.isclose(a[n], b[n], rtol=1e-3, atol=1e-9)}
    if differ:
        raise SystemExit(f"ours and the loop disagree: {differ}")
    shares.clear()
    peak = matmul_rate(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(machine(device, peak) + "; "
          f"{args.model} ({n_params:,} "
          f"parameters), {args.samples} images in a DataLoader of batch {args.batch_size}, "
          f"{len(MEASURES)} measures (hessian_trace {args.probes} probes), repeat "
          f"{args.repeat}, medians")
    times = timed({"loop": loop, "ours": ours}, 1, args.repeat, device)
    report("battery per model", times, "loop", "ours")
    total = sum(shares.values())
    print("the loop's time by measure: " + ", ".join(
        f"{n} {100 * s / total:.0f}%" for n, s in sorted(shares.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
