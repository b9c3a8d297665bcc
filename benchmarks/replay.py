"""Hessian products on a GPU launched op by op against replayed as CUDA graphs
(landscape/measures/replay.py), for one vector and for a block of 8 (one batched backward), on
benchmarks/curvature.py's three models and torchvision's ResNet-18 (64 CIFAR-sized images),
where torchvision is installed. Ratios of the medians, eager / replayed, in one run.

    python benchmarks/replay.py            # needs a GPU
"""

from __future__ import annotations

import statistics
import time

import torch
from curvature import setting  # benchmarks/curvature.py, same folder
from sweep import machine, sync  # benchmarks/sweep.py, same folder
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape
import landscape.measures.replay as replay


def models():
    for name in ("mlp", "cnn", "transformer"):
        yield name, *setting(name, "cuda")
    try:
        import torchvision
    except ImportError:
        return
    g = torch.Generator().manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval().cuda()
    yield "resnet18", net, torch.randn(64, 3, 32, 32, generator=g).cuda(), torch.randint(
        0, 10, (64,), generator=g).cuda()


def per_product(model, x, y, width: int, graphs: int, repeat: int = 20) -> float:
    """Median seconds per vector of `width`-row products after the warm-up and the capture."""
    replay.MAX_GRAPHS = graphs
    H = landscape.HessianOperator(model, (x, y))
    v = torch.randn(width, H.shape[0], device="cuda")
    for _ in range(3):
        H.matmat(v)
    times = []
    for _ in range(repeat):
        sync(x.device)
        tic = time.perf_counter()
        H.matmat(v)
        sync(x.device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times) / width


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/replay.py needs a GPU")
    print(machine(torch.device("cuda")))
    captured = replay.MAX_GRAPHS
    with sdpa_kernel(SDPBackend.MATH):
        for name, model, x, y in models():
            n = sum(p.numel() for p in model.parameters())
            for width in (1, 8):
                eager = per_product(model, x, y, width, 0)
                replayed = per_product(model, x, y, width, captured)
                print(f"{name:<12} {n:>10,} parameters, {width} vector(s) a product: eager "
                      f"{eager * 1e3:.3f} ms, replayed {replayed * 1e3:.3f} ms a vector, "
                      f"ratio eager/replayed {eager / replayed:.2f}", flush=True)


if __name__ == "__main__":
    main()
