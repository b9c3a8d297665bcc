"""K models of one architecture held as stacked tensors and evaluated with torch.func.

A single run is the case K = 1, which calls the module directly (no vmap) on views of the stacked
tensors, so one training loop serves single runs and vectorized sweeps alike. Each member keeps its
own parameters, buffers (BatchNorm running statistics too: vmap updates each member's slice in
place) and optimizer state; they interact only through sharing the input data. Members may also
train on different draws of the data (`MemberData`), so a sweep over seeds can stack across trials.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from .config import ModelConfig
from .data import SPLITS, Dataset


class Ensemble:
    """Stacked parameters [K, ...] (autograd leaves) and buffers [K, ...] of K members."""

    def __init__(self, template: nn.Module, states: list[dict[str, torch.Tensor]], *,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.template = template.to(device=device, dtype=dtype)
        self.size = len(states)
        param_names = [n for n, _ in template.named_parameters()]
        buffer_names = [n for n, _ in template.named_buffers()]
        self.keys = list(template.state_dict().keys())  # state-dict order: params and buffers

        def stack(name: str) -> torch.Tensor:
            t = torch.stack([s[name] for s in states]).to(device)
            return t.to(dtype) if t.is_floating_point() else t

        self.params = {n: stack(n).requires_grad_() for n in param_names}
        self.buffers = {n: stack(n) for n in buffer_names}

    def train(self, mode: bool = True) -> None:
        self.template.train(mode)

    def forward(self, x: torch.Tensor, *, shared: bool,
                members: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [K, n, C] of inputs x: [n, ...] given to every member (shared) or [K, n, ...].

        members: an index [K'] to evaluate only those members (copies of their tensors, so for
        evaluation only: BatchNorm statistics updated in training mode would be lost)."""
        params, buffers = self.params, self.buffers
        if members is not None:
            params = {n: t[members] for n, t in params.items()}
            buffers = {n: t[members] for n, t in buffers.items()}
        if next(iter(params.values())).shape[0] == 1:
            state = {n: t[0] for n, t in {**params, **buffers}.items()}
            return functional_call(self.template, state, (x if shared else x[0],))[None]

        def call(params, buffers, inputs):
            return functional_call(self.template, (params, buffers), (inputs,))

        return vmap(call, in_dims=(0, 0, None if shared else 0))(params, buffers, x)

    def member_state(self, k: int, *, clone: bool = False) -> dict[str, torch.Tensor]:
        """Member k's state dict (views unless clone)."""
        everything = {**self.params, **self.buffers}
        return {n: (everything[n][k].detach().clone() if clone else everything[n][k].detach())
                for n in self.keys}


class MemberData:
    """The data each member trains and is measured on: one data set shared by every member, or
    several draws (different data seeds) stacked [D, n, ...] with the draw of each member."""

    def __init__(self, draws: Sequence[Dataset], which: Sequence[int]) -> None:
        self.shared = len(draws) == 1
        self.num_classes, self.input_shape = draws[0].num_classes, draws[0].input_shape
        self.which = torch.tensor(list(which), device=draws[0].train.y.device)  # [K]

        def stack(split: str, attr: str) -> torch.Tensor:  # [D, n, ...]; a view when shared
            tensors = [getattr(d.split(split), attr) for d in draws]
            return tensors[0].unsqueeze(0) if self.shared else torch.stack(tensors)

        # Rows as stored (uint8 pixels for image sets); `prepare` makes model input of gathered rows.
        self.stored = {s: stack(s, "stored") for s in SPLITS}
        self.prepare = draws[0].train.prepare
        self.y = {s: stack(s, "y") for s in SPLITS}
        self.y_clean = {s: stack(s, "y_clean") for s in SPLITS}

    def size(self, split: str) -> int:
        return self.y[split].shape[1]

    def flipped(self, split: str, members: torch.Tensor | None = None) -> torch.Tensor:
        """[K] (or [K'] for an index of members): how many labels of their split were flipped."""
        which = self.which if members is None else self.which[members]
        return (self.y[split] != self.y_clean[split]).sum(-1)[which]

    def rows(self, split: str, rows: slice, members: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (model input), y, y_clean of a range of rows: [c, ...] for all members when shared,
        else [K, c, ...] ([K', c, ...] for an index of members)."""
        pick = 0 if self.shared else (self.which if members is None else self.which[members])
        x = self.prepare(self.stored[split][pick, rows])
        return x, self.y[split][pick, rows], self.y_clean[split][pick, rows]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's training rows idx [K, B] of its own draw: x [K, B, ...] as stored (to
        augment, then `prepare`), y [K, B]."""
        draw = self.which[:, None]
        return self.stored["train"][draw, idx], self.y["train"][draw, idx]


def optimizer_state_of(optimizer: torch.optim.Optimizer, ensemble: Ensemble,
                       k: int) -> dict[str, torch.Tensor]:
    """Member k's optimizer state, flat: "<param name>/<state key>" -> tensor."""
    out: dict[str, torch.Tensor] = {}
    for name, param in ensemble.params.items():
        for key, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{name}/{key}"] = value[k] if value.shape == param.shape else value
    return out


def load_optimizer_states(optimizer: torch.optim.Optimizer, ensemble: Ensemble,
                          states: list[dict[str, torch.Tensor]]) -> None:
    """Stack members' flat optimizer states back into the optimizer (inverse of optimizer_state_of)."""
    for name, param in ensemble.params.items():
        keys = {k.rsplit("/", 1)[1] for k in states[0] if k.rsplit("/", 1)[0] == name}
        entry: dict[str, torch.Tensor] = {}
        for key in keys:
            values = [s[f"{name}/{key}"] for s in states]
            if values[0].shape == param.shape[1:]:
                entry[key] = torch.stack(values).to(device=param.device, dtype=param.dtype)
            else:  # a scalar shared by the members (Adam's step count), equal across them
                entry[key] = values[0].to(torch.float32).to(
                    param.device if _state_on_device(optimizer) else "cpu")
        if entry:
            optimizer.state[param] = entry


def _state_on_device(optimizer: torch.optim.Optimizer) -> bool:
    group = optimizer.param_groups[0]
    return bool(group.get("fused") or group.get("capturable"))


def optimizer_layout(optim_name: str, momentum: float,
                     params: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes of one member's optimizer state, known before the first step (for preallocation)."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, p in params.items():
        shape, dtype = tuple(p.shape[1:]), str(p.dtype).removeprefix("torch.")
        if optim_name == "adam":
            out[f"{name}/step"] = ((), "float32")
            out[f"{name}/exp_avg"] = (shape, dtype)
            out[f"{name}/exp_avg_sq"] = (shape, dtype)
        elif momentum > 0:
            out[f"{name}/momentum_buffer"] = (shape, dtype)
    return out


def chunk_rows(per_row: int, members: int, device: torch.device | None) -> int:
    """Rows evaluated at once: bounds the members x rows x `per_row` working set (numbers one row
    occupies in the widest layer) to `eval_numbers(device, members)` numbers."""
    return max(1, eval_numbers(device, members) // (members * per_row))


EVAL_NUMBERS = 1 << 26      # a GPU's evaluation working set (256 MB of float32), and the default
CPU_EVAL_NUMBERS = 1 << 20  # a CPU's, for stacked members: 16 stacked width-32 MLPs evaluate
                            # 20,000 points 2-4x faster than with 2^26 (measured on 2 cores)
CPU_ONE_NUMBERS = 1 << 18   # a CPU's for one model, whose chunks cost no vmap set-up: 1 MB
                            # stays in L2; widths 32/128/500 on 20,000 points 1.10x/1.24x/1.10x
                            # the speed of 2^20 (one thread, best of 4; benchmarks/RESULTS.md)


def eval_numbers(device: torch.device | None, members: int = 2) -> int:
    if device is None or device.type != "cpu":
        return EVAL_NUMBERS
    return CPU_ONE_NUMBERS if members == 1 else CPU_EVAL_NUMBERS


def member_bytes(model: ModelConfig, n_params: int, input_shape: tuple[int, ...],
                 batch_size: int, dtype_bytes: int) -> int:
    """Training memory of one stacked member, a generous estimate: parameters, gradients and two
    optimizer states, plus what one step keeps for the backward pass (about 3 numbers per hidden
    unit and row for an MLP: pre-activation, normalized, activated)."""
    if model.name.startswith("mlp"):
        per_row = 3 * (model.depth or 0) * (model.width or 0) + math.prod(input_shape)
    else:
        per_row = 512 * math.prod(input_shape)  # conv feature maps: many times the input
    return dtype_bytes * (4 * n_params + batch_size * per_row)


def free_memory(device: torch.device) -> int:
    """Bytes the device has free now (for the CPU, physical pages not in use)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4 << 30


def memory_limit(per_member: int, device: torch.device, dtype_bytes: int) -> int:
    """Members that fit in half the free memory, after evaluation's working set."""
    budget = free_memory(device) // 2 - EVAL_NUMBERS * dtype_bytes
    return max(1, budget // max(per_member, 1))


# Largest MLP width that still trains faster stacked than one by one on a CPU (benchmarks/sweep.py,
# benchmarks/RESULTS.md; 16 members, one thread: 1.3x at width 256, 0.9x at 500): a narrow MLP's
# matmuls are too small to keep the cores busy, a wide one's already do and vmap only adds copies.
CPU_STACK_MAX_WIDTH = 256
CPU_STACK = 64      # width 32: 3.6x with 16 members, 6.4x with 64; width 128: 1.8x, 2.0x
GPU_STACK = 1024    # GPU: as many as fit; Table 2's 510 runs of a setting in one chunk


def auto_chunk_size(model: ModelConfig, device: torch.device) -> int:
    """How many sweep members to stack by default (benchmarks/sweep.py), before the memory bound.

    CPU: MLPs up to CPU_STACK_MAX_WIDTH wide stack, wider ones and conv nets train one by one.
    GPU: everything stacks: a small model's step is launch overhead, which vmap shares."""
    if device.type != "cpu":
        return 8 if model.name.startswith("resnet") else GPU_STACK
    if model.name.startswith("mlp") and (model.width or 0) <= CPU_STACK_MAX_WIDTH:
        return CPU_STACK
    return 1


def balanced_chunks(items: Sequence, limit: int) -> list[list]:
    """items in consecutive chunks of at most `limit`, as equal in size as possible."""
    count = max(1, math.ceil(len(items) / max(limit, 1)))
    size = math.ceil(len(items) / count)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
