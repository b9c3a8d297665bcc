"""Benchmark (issue 25, item 1; docs/guides/beyond.md: Tracking): what `landscape train --track`
costs. A small stacked sweep of K flood levels (Two Gaussians, `--n-train` points, batch 100,
MLP depth x width; Adam, as the synthetic recipe, or `--optimizer sgd`) trained end to end by
`landscape.train`, two ways:

  plain    no tracking;
  tracked  the same sweep with `--track MEASURES --track-every N --track-samples S`, for each
           (N, S) asked for.

Prints, per (N, S), the ratio tracked/plain of the wall times (medians of `--repeat` runs, the
modes alternating so that a shared machine slows them alike, beside the spread of the ratios)
and the share the run files themselves report, sum(track_seconds) / sum(seconds) (tracking
against the training and evaluation it excludes): the cost grows with S and falls as 1 / N.

    python benchmarks/tracking.py --threads 1            # CPU defaults, about 2 minutes
    python benchmarks/tracking.py --every 1,10 --samples 100,1000 --device cuda --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sweep import machine, parse_with_device, timed  # same folder

from landscape.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from landscape.config.execution import Execution
from landscape.config.tracking import TrackConfig
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import train


def runners(configs: list[RunConfig], device: torch.device, folder: str
            ) -> dict[str, Callable[[int], None]]:
    """Closures training the sweep into its own folder (overwritten each time); the timer's
    argument is not used (the epochs are the configs')."""
    execution = Execution(device=str(device), progress=False)

    def run(name: str, sweep: list[RunConfig]) -> Callable[[int], None]:
        return lambda _: train(sweep, out=Path(folder) / name, execution=execution,
                               overwrite=True)

    return {"plain": run("plain", [dataclasses.replace(c, track=None) for c in configs]),
            "tracked": run("tracked", configs)}


def reported_share(folder: Path) -> float:
    """sum(track_seconds) / sum(seconds) over the tracked sweep's run files (a stacked group's
    members record the group's times: each file gives the same share)."""
    metrics = [Run(p).metrics() for p in sorted(folder.rglob("*.h5"))]
    return float(np.nansum([m["track_seconds"] for m in metrics])
                 / np.nansum([m["seconds"] for m in metrics]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measures", default="top_eigenvalue", help="what --track records")
    parser.add_argument("--every", default="1,5", help="N values, comma-separated")
    parser.add_argument("--samples", default="100,1000", help="S values, comma-separated")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--floods", type=int, default=4, help="K flood levels: 0 ... 0.3")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    args, device = parse_with_device(parser)
    floods = [round(0.3 * i / max(args.floods - 1, 1), 4) for i in range(args.floods)]
    base = RunConfig(DataConfig("two_gaussians", noise=0.1, n_train=args.n_train),
                     ModelConfig("mlp", depth=args.depth, width=args.width),
                     optim=OptimConfig(name=args.optimizer, batch_size=100, epochs=args.epochs),
                     save="last", eval_test="best")
    measures = tuple(args.measures.split(","))
    print(machine(device) + "; "
          f"K = {args.floods} flood levels stacked, MLP {args.depth} x {args.width}, "
          f"{args.n_train} training points, {args.optimizer}, {args.epochs} epochs; tracking "
          f"{', '.join(measures)}; repeat {args.repeat}, medians", flush=True)
    for every in map(int, args.every.split(",")):
        for samples in map(int, args.samples.split(",")):
            track = TrackConfig(measures, every=every, samples=samples)
            configs = expand(dataclasses.replace(base, track=track), floods, [0])
            with tempfile.TemporaryDirectory() as folder:
                times = timed(runners(configs, device, folder), 1, args.repeat, device)
                share = reported_share(Path(folder) / "tracked")
            med = {k: statistics.median(v) for k, v in times.items()}
            ratios = [t / p for t, p in zip(times["tracked"], times["plain"])]
            print(f"every {every:<3} samples {samples:<5}  plain {med['plain']:.2f} s  tracked "
                  f"{med['tracked']:.2f} s  ratio tracked/plain {med['tracked'] / med['plain']:.2f}"
                  f" (runs: {min(ratios):.2f}-{max(ratios):.2f})  reported share "
                  f"{share:.0%}", flush=True)


if __name__ == "__main__":
    main()
