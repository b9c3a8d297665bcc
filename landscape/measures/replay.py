"""Products of a curvature operator replayed as CUDA graphs.

On a GPU, a product of a small or medium model is a few hundred short kernels whose launches
cost more than their arithmetic: on an H200, one Hessian-vector product through a kept graph
took 3.6 ms launched op by op and 0.52 ms replayed for a 17k-parameter MLP on 1,000 points
(CNN with BatchNorm 5.7 -> 1.5 ms, small transformer 7.9 -> 1.2 ms, ResNet-18 on 64 images
26.9 -> 6.0 ms; benchmarks/RESULTS.md).
A product through kept state launches the same kernels on the same memory every time, so it
is captured once per block width and replayed after.

Capture needs a stream other than the default one, and autograd runs each backward node on the
stream its forward ran on: the operator builds its kept graphs inside `active()` too. Each entry
into the side stream waits for the caller's stream and the caller's stream waits for it on the
way out, so tensors pass between them safely. A width is captured at its second call (the
first, eager, is the warm-up that capture asks for: cuBLAS workspaces, lazily loaded kernels);
a capture that fails (an operation that syncs with the host, a shape that depends on data)
leaves the operator eager from then on. On a CPU nothing changes.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

MAX_GRAPHS = 3  # widths captured per operator: each holds one product's memory in its pool
_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device for every operator: cuBLAS gives each new stream its own
    workspace (64 MiB on an H200), which one stream pays once."""
    device = torch.device("cuda", torch.cuda.current_device() if device.index is None
                          else device.index)
    if device not in _STREAMS:
        _STREAMS[device] = torch.cuda.Stream(device)
    return _STREAMS[device]


class Replay:
    """The side stream and the captured products of one operator on `device`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = device.type == "cuda"
        self.stream = _side_stream(device) if self.enabled else None
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.calls: Counter[int] = Counter()
        self.broken = False

    @contextmanager
    def active(self) -> Iterator[None]:
        """Work in the block runs on the side stream, ordered after the caller's earlier work
        and before its later work."""
        if not self.enabled:
            yield
            return
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def __call__(self, product: Callable[[torch.Tensor], torch.Tensor],
                 vectors: torch.Tensor) -> torch.Tensor:
        """product(vectors) (a new tensor of the vectors' shape), from a graph where one is
        captured for this width; call inside `active()`."""
        if not self.enabled or self.broken:
            return product(vectors)
        width = len(vectors)
        if width in self.graphs:
            graph, given, found = self.graphs[width]
            given.copy_(vectors)
            graph.replay()
            return found.clone()
        self.calls[width] += 1
        if self.calls[width] < 2 or len(self.graphs) >= MAX_GRAPHS:
            return product(vectors)
        given = vectors.clone()
        graph = torch.cuda.CUDAGraph()
        # capture_begin directly: torch.cuda.graph's context would also collect garbage and
        # empty the cache first (tens of milliseconds, more than a whole small product run)
        try:
            graph.capture_begin()
            try:
                found = product(given)
            finally:
                graph.capture_end()
        except RuntimeError:
            self.broken = True
            return product(vectors)
        self.graphs[width] = graph, given, found
        graph.replay()
        return found.clone()
