"""Benchmark (issue 25, connectivity): the loss along the linear path (1 - t) a + t b between two
models of the paper's synthetic architecture (MLP 10 -> depth x width -> 1 on Two Gaussians, 100
training and 20,000 test points; `mlp_bn` adds BatchNorm), train and test loss and accuracy at P
values of t, two ways:

  ours   landscape.interpolate (slices.evaluate_combinations: each point written into one
         preallocated parameter set, BatchNorm statistics re-estimated functionally);
  loop   the plain reference: for each t, load_state_dict the interpolated weights into the
         module, with BatchNorm reset its running statistics and re-estimate them by a forward
         pass of the training inputs in train mode (momentum None), then evaluate both splits.

Prints the ratio loop/ours, measured in the same run with the modes alternating (a shared machine
slows both alike), medians of `--repeat` runs beside the spread of the ratios (helpers from
sweep.py), after checking that both give the same numbers.

    python benchmarks/connect.py                         # CPU, width 32, both models, ~1 min
    python benchmarks/connect.py --widths 32,500 --device cuda --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

import numpy as np
import torch
from sweep import (  # same folder
    config_for,
    machine,
    matmul_rate,
    parse_with_device,
    report,
    timed,
)

from landscape.analysis.loading import split_sources
from landscape.config import ModelConfig, RunConfig
from landscape.data import load
from landscape.flooding import per_sample_loss, predictions
from landscape.measures.connectivity import interpolate
from landscape.memory import models_at_once
from landscape.models import build_model, count_parameters

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def path_runners(config: RunConfig, points: int, device: torch.device
                 ) -> dict[str, Callable[[int], np.ndarray]]:
    """Closures evaluating the whole path each way (their argument, the timer's count, is not
    used): [points, 4] train loss, train accuracy, test loss, test accuracy."""
    data = load(config.data, device=device)
    models = []
    for seed in (0, 1):  # two inits: the path's ends
        torch.manual_seed(seed)
        models.append(build_model(config.model, data.input_shape, 1).to(device).eval())
    a, b = (m.state_dict() for m in models)
    template, module = models
    t = np.linspace(0, 1, points)
    loss = config.objective.loss
    batch_norm = [m for m in module.modules()
                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    stack = models_at_once(config.model, count_parameters(template), device)

    def ours(_: int) -> np.ndarray:
        got = interpolate(template, a, b, split_sources(data), points=points, loss=loss,
                          stack=stack)
        return np.stack([got[m] for m in METRICS], 1)

    def loop(_: int) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in t:
                module.load_state_dict({n: (1 - s) * a[n] + s * b[n] if a[n].is_floating_point()
                                        else a[n] for n in a})
                if batch_norm:
                    for m in batch_norm:
                        m.reset_running_stats()
                        m.momentum = None
                    module.train()(data.train.x)
                    module.eval()
                for split in (data.train, data.test):
                    logits = module(split.x)[None]
                    out += [float(per_sample_loss(logits, split.y, loss).mean()),
                            float((predictions(logits, loss) == split.y).double().mean())]
        return np.array(out).reshape(-1, 4)

    return {"ours": ours, "loop": loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32", help="MLP widths, comma-separated")
    parser.add_argument("--models", default="mlp,mlp_bn", help="mlp and/or mlp_bn")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--points", type=int, default=21, help="values of t")
    args, device = parse_with_device(parser)
    peak = matmul_rate(device)
    print(machine(device, peak) + "; "
          f"{args.points}-point linear path, "
          f"train and test, depth {args.depth}, repeat {args.repeat}, medians")
    for name in args.models.split(","):
        for width in map(int, args.widths.split(",")):
            base = config_for(width, args.depth, epochs=1)
            config = dataclasses.replace(base, model=ModelConfig(name, depth=args.depth,
                                                                 width=width))
            runners = path_runners(config, args.points, device)
            gap = np.abs(runners["ours"](args.points) - runners["loop"](args.points)).max()
            if gap > 1e-4:  # else a speed-up would mean nothing
                raise SystemExit(f"{name} width {width}: ours and the loop disagree by {gap:.2g}")
            times = timed(runners, args.points, args.repeat, device)
            n_params = count_parameters(build_model(config.model, (10,), 1))
            rows = config.data.n_train * (2 if name == "mlp_bn" else 1) + config.data.n_test
            work = 2.0 * n_params * rows * args.points  # forward only: ~2 FLOPs a weight and row
            report(f"path  {name:<6} width {width:<4}", times, "loop", "ours",
                   {k: work for k in times}, peak)


if __name__ == "__main__":
    main()
