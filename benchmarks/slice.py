"""Benchmark (docs/guides/section5.md, flatness): a 1-D flatness slice (paper Sec. 5.3) of the paper's
synthetic model (MLP 10 -> depth x width -> 1 on Two Gaussians, 100 training and 20,000 test
points), train and test loss and accuracy at each of P points theta + alpha d, three ways:

  ours   landscape.measures.slices.evaluate_points with the stacking the library chooses for
         the model and device (memory.models_at_once);
  other  the same function with the other choice (16 points stacked under vmap, or one by one);
  copy   the plain reference: for each alpha, load the perturbed weights into an nn.Module with
         load_state_dict, then evaluate it on both splits.

Prints the ratio copy/ours and the achieved FLOP/s of each as a fraction of a large matmul's FLOP/s
measured in the same run. The machine may be shared: modes are timed alternately, `--repeat`
times, and medians are reported beside the spread of the ratios (helpers from sweep.py).

    python benchmarks/slice.py                     # CPU defaults, a few minutes
    python benchmarks/slice.py --widths 500 --device cuda --repeat 5
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
from sweep import (  # benchmarks/sweep.py, same folder
    config_for,
    machine,
    matmul_rate,
    parse_with_device,
    report,
    timed,
)

from landscape.analysis.loading import split_sources
from landscape.config import RunConfig
from landscape.data import load
from landscape.flooding import per_sample_loss, predictions
from landscape.measures.filternorm import gaussian_directions, parameters_of
from landscape.measures.options import Normalization
from landscape.measures.slices import evaluate_points
from landscape.memory import models_at_once
from landscape.models import build_model, count_parameters


def slice_runners(config: RunConfig, points: int, device: torch.device
                  ) -> dict[str, Callable[[int], np.ndarray]]:
    """Closures evaluating the first k of `points` alphas each way: [k, 4] train loss, train
    accuracy, test loss, test accuracy."""
    data = load(config.data, device=device)
    template = build_model(config.model, data.input_shape, 1).to(device).eval()
    state = {k: v.to(device) for k, v in template.state_dict().items()}
    params, buffers = parameters_of(template, state)
    directions = gaussian_directions(params, 0, Normalization())
    alphas = np.linspace(-1, 1, points)[:, None]
    loss = config.objective.loss
    chosen = models_at_once(config.model, count_parameters(template), device)
    other = 16 if chosen == 1 else 1
    module = build_model(config.model, data.input_shape, 1).to(device).eval()

    def ours(k: int, members: int = chosen) -> np.ndarray:
        got = evaluate_points(template, state, directions, alphas[:k], split_sources(data), loss,
                              members=members)
        return np.stack([got[m] for m in ("train_loss", "train_acc", "test_loss", "test_acc")], 1)

    def copy(k: int) -> np.ndarray:
        out = []
        with torch.no_grad():
            for (alpha,) in alphas[:k]:
                module.load_state_dict({**{n: p + float(alpha) * directions[0][n]
                                           for n, p in params.items()}, **buffers})
                for split in (data.train, data.test):
                    logits = module(split.x)[None]
                    out += [float(per_sample_loss(logits, split.y, loss).mean()),
                            float((predictions(logits, loss) == split.y).double().mean())]
        return np.array(out).reshape(k, 4)

    return {"ours": ours, "other": lambda k: ours(k, other), "copy": copy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,500", help="MLP widths, comma-separated")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--points", type=int, default=51, help="alphas of the slice")
    args, device = parse_with_device(parser)
    peak = matmul_rate(device)
    print(machine(device, peak) + "; "
          f"{args.points}-point slice, train "
          f"and test, depth {args.depth}, repeat {args.repeat}, medians")
    for width in map(int, args.widths.split(",")):
        config = config_for(width, args.depth, epochs=1)
        runners = slice_runners(config, args.points, device)
        gap = np.abs(runners["ours"](args.points) - runners["copy"](args.points)).max()
        if gap > 1e-4:  # else a speed-up would mean nothing
            raise SystemExit(f"width {width}: ours and the copy loop disagree by {gap:.2g}")
        times = timed(runners, args.points, args.repeat, device)
        n_params = count_parameters(build_model(config.model, (10,), 1))
        rows = config.data.n_train + config.data.n_test
        work = 2.0 * n_params * rows * args.points  # forward only: ~2 FLOPs per weight and row
        chosen = models_at_once(config.model, n_params, device)
        report(f"slice  width {width:<4} (ours: {'stack ' + str(chosen) if chosen > 1 else 'loop'})",
               times, "copy", "ours", {k: work for k in times}, peak)


if __name__ == "__main__":
    main()
