"""Benchmark (docs/guides/training.md: Sweeps): a sweep of K flood levels of the paper's synthetic
setting (Two Gaussians, 100 training points, batch 100, Adam, MLP depth x width), two ways:

  steps  the training steps alone: K models stacked as one vmap ensemble (what the sweep runs)
         against a plain PyTorch loop over K nn.Modules, each with its own Adam; per width;
  sweep  `landscape.train` end to end (evaluation and run files included) with the
         execution `--ensemble auto` chooses against `--ensemble off` (one model at a time).

Both print the ratio (loop time / chosen time) and the achieved FLOP/s as a fraction of a large
matmul's FLOP/s measured in the same run. The machine may be shared: modes are timed alternately,
`--repeat` times, and medians are reported beside the spread of the ratios.

    python benchmarks/sweep.py                       # CPU defaults, a few minutes
    python benchmarks/sweep.py --widths 500 --floods 51 --device cuda --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from landscape.config import DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig
from landscape.config.execution import Execution
from landscape.data import load
from landscape.device import describe, resolve_device
from landscape.flooding import flooded_objective, per_sample_loss
from landscape.measures.stack import Ensemble
from landscape.memory import auto_chunk_size
from landscape.models import build_model, count_parameters
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.optimizer import make_optimizer
from landscape.training.planner import train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, n: int = 2048, repeat: int = 10) -> float:
    """FLOP/s of an n x n float32 matmul: the device's practical peak for this work."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    tic = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeat / (time.perf_counter() - tic)


def parse_with_device(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, torch.device]:
    """Adds the options every benchmark takes (--repeat, --device, --threads), parses the command
    line and applies --threads."""
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, resolve_device(args.device)


def config_for(width: int, depth: int, epochs: int) -> RunConfig:
    return RunConfig(DataConfig("two_gaussians", noise=0.1), ModelConfig("mlp", depth=depth,
                                                                          width=width),
                     ObjectiveConfig(), OptimConfig(epochs=epochs), eval_test="best",
                     save="last").resolved()


def train_flops(n_params: int, rows: int) -> float:
    """Forward + backward of an MLP on `rows` inputs: ~2 FLOPs per weight and row forward, twice
    that backward."""
    return 6.0 * n_params * rows


def steps_runners(config: RunConfig, floods: list[float], device: torch.device
                  ) -> dict[str, Callable[[int], None]]:
    """Closures running E epochs of full-batch training steps, stacked or one model at a time."""
    data = load(config.data, device=device)
    x, y, loss = data.train.x, data.train.y, config.objective.loss
    states = [build_model(config.model, data.input_shape, 1, seed=k).state_dict()
              for k in range(len(floods))]
    ensemble = Ensemble(build_model(config.model, data.input_shape, 1), states, device=device,
                        dtype=torch.float32)
    stacked_opt = make_optimizer(config.optim, list(ensemble.params.values()))
    b = torch.tensor(floods, device=device)
    modules = [build_model(config.model, data.input_shape, 1, seed=k).to(device)
               for k in range(len(floods))]
    optimizers = [make_optimizer(config.optim, list(m.parameters())) for m in modules]

    def stacked(epochs: int) -> None:
        for _ in range(epochs):
            losses = per_sample_loss(ensemble.forward(x, shared=True), y, loss)   # [K, n]
            stacked_opt.zero_grad(set_to_none=True)
            flooded_objective(losses, b).sum().backward()
            stacked_opt.step()

    def loop(epochs: int) -> None:
        for module, optimizer, flood in zip(modules, optimizers, floods):
            for _ in range(epochs):
                losses = per_sample_loss(module(x)[None], y, loss)
                optimizer.zero_grad(set_to_none=True)
                flooded_objective(losses, flood).sum().backward()
                optimizer.step()

    return {"stacked": stacked, "loop": loop}


def sweep_runners(config: RunConfig, floods: list[float], device: torch.device, folder: str
                  ) -> dict[str, Callable[[int], None]]:
    def run(ensemble: str) -> Callable[[int], None]:
        def go(epochs: int) -> None:
            configs = expand(dataclasses.replace(
                config, optim=dataclasses.replace(config.optim, epochs=epochs)), floods, [0])
            train(configs, out=folder, overwrite=True,
                  execution=Execution(device=str(device), ensemble=ensemble, progress=False))
        return go
    return {"auto": run("auto"), "off": run("off")}


def timed(runners: dict[str, Callable[[int], None]], epochs: int, repeat: int,
          device: torch.device) -> dict[str, list[float]]:
    """Seconds per mode, the modes alternating so that a busy machine slows them alike."""
    for fn in runners.values():  # warm-up: allocations, kernels, imports
        fn(1)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeat):
        for name, fn in runners.items():
            sync(device)
            tic = time.perf_counter()
            fn(epochs)
            sync(device)
            times[name].append(time.perf_counter() - tic)
    return times


def sweep_flops(folder: str, n_params: int) -> float:
    """FLOPs a finished sweep did: training steps, and every evaluation its metrics record."""
    total = 0.0
    for path in sorted(Path(folder).rglob("*.h5")):
        run = Run(path)
        m = run.metrics()
        epochs = run.epochs_done
        d = run.config.data
        steps_rows = epochs * d.n_train
        eval_rows = (epochs + 1) * (d.n_train + d.n_val) + int(
            sum(math.isfinite(v) for v in m["test_acc"])) * d.n_test
        total += train_flops(n_params, steps_rows) + 2.0 * n_params * eval_rows
    return total


def machine(device: torch.device, peak: float | None = None) -> str:
    """How every benchmark's first line begins: the device, torch, its threads and, where given,
    the measured matmul rate."""
    text = (f"device {describe(device)}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    return text if peak is None else f"{text}; matmul 2048^3: {peak / 1e9:.1f} GFLOP/s"


def report(label: str, times: dict[str, list[float]], reference: str, chosen: str,
           flops: dict[str, float] | None = None, peak: float | None = None) -> None:
    """One line: each mode's median seconds, the ratio reference/chosen of the medians with the
    spread of the per-repeat ratios, and (given the work in FLOPs and the matmul rate) the
    achieved rate of each mode."""
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [r / c for r, c in zip(times[reference], times[chosen])]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
    util = "" if flops is None or peak is None else "  | " + "  ".join(
        f"{k} {flops[k] / med[k] / 1e9:.1f} GFLOP/s = {flops[k] / med[k] / peak:.0%}"
        for k in med) + " of matmul"
    print(f"{label:<34} " + "  ".join(f"{k} {v:.3f} s" for k, v in med.items())
          + f"  ratio {reference}/{chosen} {med[reference] / med[chosen]:.2f} (runs: {spread})"
          + util, flush=True)


def write_share(config: RunConfig, floods: list[float], device: torch.device,
                **execution: object) -> tuple[float, float, float]:
    """(wall seconds, seconds inside RunWriter's per-epoch writes, seconds making run files) of one
    stacked sweep trained end to end. Every RunWriter method but opening and closing counts
    as a write; calls nested in another write count once."""
    from landscape.runs import maker as runmaker
    from landscape.runs import writer as runwriter
    spent = {"writes": 0.0, "create": 0.0}
    depth = [0]

    def timing(fn: Callable, bucket: str) -> Callable:
        def wrapped(*args, **kwargs):
            depth[0] += 1
            tic = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[bucket] += time.perf_counter() - tic
        return wrapped

    originals = {name: getattr(runwriter.RunWriter, name) for name in vars(runwriter.RunWriter)
                 if callable(getattr(runwriter.RunWriter, name)) and not name.startswith("_")
                 and name not in ("close", "release")}
    create = runmaker.Maker.create
    try:
        for name, fn in originals.items():
            setattr(runwriter.RunWriter, name, timing(fn, "writes"))
        runmaker.Maker.create = timing(create, "create")
        with tempfile.TemporaryDirectory() as folder:
            tic = time.perf_counter()
            train(expand(config, floods, [0]), out=folder,
                  execution=Execution(device=str(device), ensemble=str(len(floods)),
                                      progress=False, **execution))
            wall = time.perf_counter() - tic
    finally:
        for name, fn in originals.items():
            setattr(runwriter.RunWriter, name, fn)
        runmaker.Maker.create = create
    return wall, spent["writes"], spent["create"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="32,128,256,500", help="MLP widths, comma-separated")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--floods", type=int, default=16, help="K flood levels: 0, 0.5/(K-1), ...")
    parser.add_argument("--epochs", type=int, default=40, help="epochs (steps) per model")
    parser.add_argument("--sweep-epochs", type=int, default=10,
                        help="epochs of the end-to-end sweep (0: skip it)")
    parser.add_argument("--writes", action="store_true",
                        help="only the share of wall time a stacked sweep (all K members in one "
                             "chunk, --epochs epochs, the first width) spends in run-file writes")
    args, device = parse_with_device(parser)
    if args.writes:
        config = config_for(int(args.widths.split(",")[0]), args.depth, args.epochs)
        floods = [round(0.5 * i / max(args.floods - 1, 1), 4) for i in range(args.floods)]
        for _ in range(args.repeat):
            wall, writes, create = write_share(config, floods, device)
            print(f"stacked sweep K={args.floods} width {config.model.width} {args.epochs} epochs "
                  f"({torch.get_num_threads()} threads): wall {wall:.2f} s, per-epoch writes "
                  f"{writes:.2f} s ({100 * writes / wall:.1f}%), making files {create:.2f} s "
                  f"({100 * create / wall:.1f}%)")
        return
    floods = [round(0.5 * i / max(args.floods - 1, 1), 4) for i in range(args.floods)]
    peak = matmul_rate(device)
    print(machine(device, peak) + "; "
          f"K = {args.floods} flood levels, "
          f"depth {args.depth}, repeat {args.repeat}, medians")
    for width in map(int, args.widths.split(",")):
        config = config_for(width, args.depth, args.epochs)
        n_params = count_parameters(build_model(config.model, (10,), 1))
        chunk = auto_chunk_size(config.model, device)
        work = train_flops(n_params, config.data.n_train) * args.epochs * args.floods
        times = timed(steps_runners(config, floods, device), args.epochs, args.repeat, device)
        report(f"steps  width {width:<4} (auto: {'stack' if chunk > 1 else 'one by one'})",
               times, "loop", "stacked", {k: work for k in times}, peak)
        if args.sweep_epochs:
            with tempfile.TemporaryDirectory() as folder:
                runners = sweep_runners(config, floods, device, folder)
                times = timed(runners, args.sweep_epochs, args.repeat, device)
                flops = sweep_flops(folder, n_params)
            report(f"sweep  width {width:<4} (auto chunk {chunk})", times, "off", "auto",
                   {k: flops for k in times}, peak)


if __name__ == "__main__":
    main()
