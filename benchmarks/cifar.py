"""Benchmark (docs/guides/training.md: Speed): ResNet-44 training epochs on CIFAR-10-shaped data
(random uint8 images, 42,500 training images as the 85:15 split with augmentation leaves), two ways:

  ours       the trainer's pipeline: the whole set on the device as uint8, batches gathered by
             index, random crop (pad 4) + flip as batched tensor ops on the device, Standardize on
             the device, channels_last on CUDA, optional bf16 autocast and torch.compile, the model
             called through torch.func.functional_call on the ensemble's tensors, fused SGD;
  dataloader a torchvision-style pipeline: a Dataset of HWC uint8 images with per-item transforms
             (to float, pad + random crop, flip, normalize) in DataLoader worker processes, batches
             copied to the device, the nn.Module called directly, SGD with momentum.
             (Plain torch, so it runs without torchvision; --reference torchvision uses
             torchvision.transforms.v2 on tensors instead, where torchvision is installed.)

Both train the same architecture with the same batch size and flooded objective; only the data
path and the execution differ. Printed, first for the data paths alone (batches drawn, no model;
the DataLoader's workers prefetch, so this is their steady throughput), then for whole training
steps: median seconds, the ratio dataloader/ours, achieved FLOP/s as a fraction of a large
matmul's FLOP/s measured in the same run, and seconds per epoch of training steps (333 steps of
128). Modes are timed alternately (benchmarks/sweep.py's `timed`), so that a shared machine slows
them alike; on a CPU, time a fraction of an epoch (--steps).

    python benchmarks/cifar.py                               # CPU: a few minutes
    python benchmarks/cifar.py --device cuda --steps 333 --amp bf16 --compile --repeat 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sweep import (  # benchmarks/sweep.py, same folder
    machine,
    matmul_rate,
    parse_with_device,
    report,
    timed,
)
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from landscape.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from landscape.data import Split, Standardize
from landscape.data.augment import random_crop_flip
from landscape.data.images import STATS
from landscape.device import autocast, channels_last
from landscape.flooding import flooded_objective, per_sample_loss
from landscape.measures.stack import Ensemble
from landscape.models import build_model
from landscape.training.loop import epoch_generator
from landscape.training.optimizer import make_optimizer

MEAN, STD = STATS["cifar10"]
MEAN_CHW, STD_CHW = (torch.tensor(v)[:, None, None] for v in STATS["cifar10"])
# The recipe both pipelines train with (Table 3's CIFAR row; our default batch size, a flood level)
CONFIG = RunConfig(DataConfig("cifar10"), ModelConfig("resnet44"),
                   optim=OptimConfig("sgd", lr=0.1, momentum=0.9, batch_size=128))
BATCH, FLOOD = CONFIG.optim.batch_size, 0.02


Batches = Callable[[], tuple[torch.Tensor, torch.Tensor]]   # -> model input, labels on the device
Step = Callable[[torch.Tensor, torch.Tensor], None]


def our_batches(images: np.ndarray, labels: np.ndarray, device: torch.device) -> Batches:
    """The trainer's data path: uint8 on the device, gather, crop+flip, Standardize, channels_last."""
    standardize = Standardize.of(MEAN, STD, device=device, dtype=torch.float32)
    split = Split(stored=torch.as_tensor(images).to(device), y=torch.as_tensor(labels).to(device),
                  y_clean=torch.as_tensor(labels).to(device), standardize=standardize)
    order = torch.randperm(len(split), generator=epoch_generator(0, 1, 1)).to(device)
    gen = epoch_generator(0, 1, 2, device)
    done = [0]  # batches so far: they walk through one permutation, wrapping around

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        start = done[0] * BATCH % (len(order) - BATCH)
        done[0] += 1
        idx = order[start:start + BATCH]
        xb = split.prepare(random_crop_flip(split.stored[idx], gen))[None]  # [1, B, 3, 32, 32]
        return channels_last(xb) if device.type == "cuda" else xb, split.y[idx][None]

    return next_batch


def our_step(device: torch.device, *, amp: str, compile: bool) -> Step:
    """The trainer's step: functional_call on the ensemble's tensors, autocast, fused SGD."""
    model = build_model(ModelConfig("resnet44"), (3, 32, 32), 10)
    ensemble = Ensemble(model, [model.state_dict()], device=device, dtype=torch.float32)
    ensemble.train(True)
    optimizer = make_optimizer(CONFIG.optim, list(ensemble.params.values()))  # fused where it is
    forward = torch.compile(ensemble.forward, dynamic=False) if compile else ensemble.forward
    precision = autocast(device, amp)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with precision:
            logits = forward(x, shared=False).float()
        losses = per_sample_loss(logits, y, "ce")
        optimizer.zero_grad(set_to_none=True)
        flooded_objective(losses, FLOOD).sum().backward()
        optimizer.step()

    return step


class ItemDataset(torch.utils.data.Dataset):
    """torchvision's CIFAR10 layout (HWC uint8) with a per-item transform, the usual recipe."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images = images.transpose(0, 2, 3, 1).copy()  # [n, 32, 32, 3]
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def plain_transform(image: np.ndarray) -> torch.Tensor:
    """ToTensor, RandomCrop(32, padding=4), RandomHorizontalFlip, Normalize of one image."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)       # [3, 32, 32]
    x = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2,)).tolist()
    x = x[:, dy:dy + 32, dx:dx + 32]
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    return (x - MEAN_CHW) / STD_CHW


def torchvision_transform() -> Callable:
    from torchvision.transforms import v2  # optional: only for --reference torchvision
    return v2.Compose([v2.ToImage(), v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def loader_batches(images: np.ndarray, labels: np.ndarray, device: torch.device, *,
                   workers: int, reference: str) -> Batches:
    """A DataLoader over per-item transforms in worker processes, batches copied to the device."""
    transform = plain_transform if reference == "plain" else torchvision_transform()
    loader = DataLoader(ItemDataset(images, labels, transform), batch_size=BATCH,
                        shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0, drop_last=True)
    batches = [iter(loader)]

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x, y = next(batches[0])
        except StopIteration:
            batches[0] = iter(loader)
            x, y = next(batches[0])
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return next_batch


def plain_step(device: torch.device) -> Step:
    """The usual loop: the nn.Module called directly, SGD with momentum (foreach)."""
    model = build_model(ModelConfig("resnet44"), (3, 32, 32), 10).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=CONFIG.optim.lr,
                                momentum=CONFIG.optim.momentum)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        losses = per_sample_loss(model(x), y, "ce")
        optimizer.zero_grad(set_to_none=True)
        flooded_objective(losses, FLOOD).backward()
        optimizer.step()

    return step


def runner(batches: Batches, step: Step | None) -> Callable[[int], None]:
    """n training steps, or (step None) n batches drawn: the data path alone."""
    def run(n: int) -> None:
        for _ in range(n):
            x, y = batches()
            if step is not None:
                step(x, y)
    return run


def cpu_ms_per_batch(batches: Batches, n: int) -> float:
    """CPU time (this process, one thread) per batch: the work itself, which wall time on a shared
    machine hides (DataLoader workers are extra processes and take extra shares of the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batches()
    tic = time.process_time()
    for _ in range(n):
        batches()
    torch.set_num_threads(threads)
    return (time.process_time() - tic) / n * 1e3


def step_flops(device: torch.device) -> float:
    """FLOPs of one training step (forward and backward of ResNet-44 on a batch), counted."""
    model = build_model(ModelConfig("resnet44"), (3, 32, 32), 10).to(device)
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=42_500)
    parser.add_argument("--steps", type=int, default=6, help="steps timed per repeat (333 = epoch)")
    parser.add_argument("--batches", type=int, default=50, help="batches timed, data path alone")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--reference", choices=("plain", "torchvision"), default="plain")
    parser.add_argument("--amp", choices=("off", "bf16"), default="off", help="ours only")
    parser.add_argument("--compile", action="store_true", help="ours only")
    args, device = parse_with_device(parser)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.train_size, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, args.train_size)
    steps_per_epoch = math.ceil(args.train_size / BATCH)
    print(machine(device) + "; "
          f"ResNet-44, batch {BATCH}, {steps_per_epoch} steps/epoch; "
          f"ours: amp {args.amp}, compile {args.compile}; dataloader: {args.reference} "
          f"transforms, {args.workers} workers", flush=True)
    peak = matmul_rate(device)
    batches = {"dataloader": loader_batches(images, labels, device, workers=args.workers,
                                            reference=args.reference),
               "ours": our_batches(images, labels, device)}
    data_times = timed({k: runner(b, None) for k, b in batches.items()}, args.batches,
                       args.repeat, device)
    report(f"data path, {args.batches} batches", data_times, "dataloader", "ours",
           {k: 0.0 for k in data_times}, peak)
    if device.type == "cpu":
        inline = loader_batches(images, labels, device, workers=0, reference=args.reference)
        print(f"data path CPU time per batch, one thread: dataloader's per-item transforms "
              f"{cpu_ms_per_batch(inline, args.batches):.1f} ms, ours "
              f"{cpu_ms_per_batch(batches['ours'], args.batches):.1f} ms", flush=True)
    steps = {"dataloader": plain_step(device),
             "ours": our_step(device, amp=args.amp, compile=args.compile)}
    times = timed({k: runner(batches[k], steps[k]) for k in steps}, args.steps, args.repeat,
                  device)
    flops = step_flops(device) * args.steps
    report(f"training, {args.steps} steps", times, "dataloader", "ours",
           {k: flops for k in times}, peak)
    for name, values in times.items():
        per_step = statistics.median(values) / args.steps
        print(f"{name:<10} {per_step * 1e3:8.1f} ms/step, {per_step * steps_per_epoch:8.1f} s per "
              f"epoch of training steps")
    kind = "TF32" if device.type == "cuda" else "float32"
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s ({kind})")


if __name__ == "__main__":
    main()
