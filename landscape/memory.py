"""Every memory rule of the package in one place: how many rows, models and stacked members fit in
the device's budget, and the measured constants behind them (benchmarks/RESULTS.md).

The budgets are counted in numbers (float32: 4 bytes each). Evaluation works in chunks of rows
sized so that members x rows x (numbers one row occupies in the widest layer) stays within a
working set; training stacks as many sweep members as the device's rule allows, then as fit in
half its free memory; Hessian products keep their gradient graphs when these fit GRAPH_NUMBERS;
a DataLoader's batches are kept on the device when they fit KEEP_NUMBERS.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from landscape.config import ModelConfig
from landscape.errors import BadInput

if TYPE_CHECKING:
    from landscape.measures.sources import Source

# Evaluation working sets
EVAL_NUMBERS = 1 << 26      # a GPU's evaluation working set (256 MB of float32), and the default
CPU_EVAL_NUMBERS = 1 << 20  # a CPU's, for stacked members: 16 stacked width-32 MLPs evaluate
                            # 20,000 points 2-4x faster than with 2^26 (measured on 2 cores)
CPU_ONE_NUMBERS = 1 << 18   # a CPU's for one model, whose chunks cost no vmap set-up: 1 MB
                            # stays in L2; widths 32/128/500 on 20,000 points 1.10x/1.24x/1.10x
                            # the speed of 2^20 (one thread, best of 4; benchmarks/RESULTS.md)
STACKED_NUMBERS = 1 << 27   # parameters held stacked at once by an analysis (512 MB in float32)
KEEP_NUMBERS = 1 << 27      # an iterable's batches kept on the device (512 MB of float32)
GRAPH_NUMBERS = 1 << 27     # gradient graphs kept across Hessian-vector products (512 MB)
CPU_GRAPH_NUMBERS = 1 << 21 # a kept graph's chunk on a CPU (8 MB): a product's transients are its
                            # chunk's; benchmarks/curvature.py's transformer in 2 chunks 17.9 ms
                            # and 20.7 MB at its peak a product, in one 19.7 ms and 25.6 MB
JACOBIAN_NUMBERS = 1 << 21  # a chunk's per-sample Jacobians for the GGN's trace (8 MB): the CNN of
                            # benchmarks/curvature.py 0.88 s at 7 rows, 0.78 s at 31 (120 MB)
RULE_NUMBERS = 1 << 25      # a chunk's forward graph, gradients and prepared inputs for the GGN's
                            # layer rules (128 MB): the CNN of benchmarks/curvature.py 0.27 s at
                            # this, 0.27 s at 512 MB (peak 105 MB), 0.31 s at 64 MB (20 MB)
DRAW_NUMBERS = 1 << 22      # Theorem 1's Monte-Carlo chunks: [draws, b] float64 entries (32 MB)

# Training: members stacked per chunk. Largest MLP width that still trains faster stacked than one
# by one on a CPU (benchmarks/sweep.py, benchmarks/RESULTS.md; 16 members, one thread: 1.3x at
# width 256, 0.9x at 500): a narrow MLP's matmuls are too small to keep the cores busy, a wide
# one's already do and vmap only adds copies.
CPU_STACK_MAX_WIDTH = 256
CPU_STACK = 64      # width 32: 3.6x with 16 members, 6.4x with 64; width 128: 1.8x, 2.0x
GPU_STACK = 1024    # GPU: as many as fit; Table 2's 510 runs of a setting in one chunk


def row_numbers(template: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Numbers one input row occupies in the model's widest weight layer (dense, conv, embedding)
    or its input, if wider: measured by one forward pass of a single zero row in eval mode (a
    row's cost, on the model's device). A model that cannot take it is estimated instead: a conv
    feature map as 64 times the input (an over-estimate: a CNN of 3 conv blocks on 32 x 32 images
    measures 6x less), a dense layer as its output units."""
    measured = _measured_widest(template, input_shape)
    if measured is not None:
        return max(measured, math.prod(input_shape))
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in template.modules()):
        return 64 * math.prod(input_shape)
    widest = max((p.shape[0] for p in template.parameters() if p.dim() > 1), default=1)
    return max(widest, math.prod(input_shape))


def _measured_widest(template: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """The largest output per row of a module holding a weight matrix or kernel, or None. (The
    meta device would cost nothing per call but ~2 s of first-use set-up: more than a row.)"""
    weighted = [m for m in template.modules()
                if any(p.dim() > 1 for p in m.parameters(recurse=False))]
    first = next(iter(template.parameters()), None)
    if not weighted or first is None:
        return None
    sizes = [0]

    def record(module: nn.Module, args, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() > 0:
            sizes.append(output[0].numel())

    flags = [(m, m.training) for m in template.modules()]
    hooks = [m.register_forward_hook(record) for m in weighted]
    try:
        template.eval()  # running statistics: a single row changes nothing
        with torch.no_grad():
            template(torch.zeros((1, *input_shape), device=first.device, dtype=first.dtype))
    except Exception:  # noqa: BLE001 - inputs this model does not take as floats: estimate
        return None
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in flags:
            module.training = training
    return max(sizes) or None


def layers(template: nn.Module) -> int:
    """Weight layers (dense and conv): what a backward pass keeps activations of."""
    return max(1, sum(1 for p in template.parameters() if p.dim() > 1))


def rows_for(template: nn.Module, input_shape: tuple[int, ...], members: int,
             device: torch.device, *, gradients: bool = False) -> int:
    """Rows evaluated at once for `members` stacked parameter sets. With gradients autograd keeps
    every layer's activations: a fraction of the forward budget (cache-sized chunks gain nothing
    there: CPU, width 500: 1.6 s for the test gradient at 209, 2,097 or 13,421 rows)."""
    if not gradients:
        return chunk_rows(row_numbers(template, input_shape), members, device)
    # a backward pass needs its activations, not a warm cache: the stacked budget, shared out
    rows = chunk_rows(row_numbers(template, input_shape), max(members, 2), device)
    return max(1, rows * max(members, 2) // members // (2 * layers(template)))


def rows_of(template: nn.Module, source: Source, members: int, device: torch.device, *,
            gradients: bool = False) -> int:
    """rows_for a source (an iterable uses it once its pass is kept: sources.LoaderSource)."""
    return rows_for(template, source.input_shape(), members, device, gradients=gradients)


def models_at_once(model: ModelConfig | None, n_params: int, device: torch.device) -> int:
    """Parameter sets to stack per evaluation: one on a CPU, and for models we did not build
    (vmap may not trace them); the device's rule, within the memory bound, elsewhere."""
    if device.type == "cpu" or model is None:
        return 1
    return max(1, min(auto_chunk_size(model, device), STACKED_NUMBERS // max(n_params, 1)))


def chunk_rows(per_row: int, members: int, device: torch.device | None) -> int:
    """Rows evaluated at once: bounds the members x rows x `per_row` working set (numbers one row
    occupies in the widest layer) to `eval_numbers(device, members)` numbers."""
    return max(1, eval_numbers(device, members) // (members * per_row))


def eval_numbers(device: torch.device | None, members: int = 2) -> int:
    if device is None or device.type != "cpu":
        return EVAL_NUMBERS
    return CPU_ONE_NUMBERS if members == 1 else CPU_EVAL_NUMBERS


def member_bytes(model: ModelConfig, n_params: int, input_shape: tuple[int, ...],
                 batch_size: int, dtype_bytes: int) -> int:
    """Training memory of one stacked member, a generous estimate: parameters, gradients, two
    optimizer states and the parameters before a step (kept where members' learning rates differ:
    training/optimizer.py), plus what one step keeps for the backward pass (about 3 numbers per
    hidden unit and row for an MLP: pre-activation, normalized, activated)."""
    if model.name.startswith("mlp"):
        per_row = 3 * (model.depth or 0) * (model.width or 0) + math.prod(input_shape)
    else:
        per_row = 512 * math.prod(input_shape)  # conv feature maps: many times the input
    return dtype_bytes * (5 * n_params + batch_size * per_row)


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


def auto_chunk_size(model: ModelConfig, device: torch.device) -> int:
    """How many sweep members to stack by default (benchmarks/sweep.py), before the memory bound.

    CPU: MLPs up to CPU_STACK_MAX_WIDTH wide stack, wider ones and conv nets train one by one.
    GPU: everything stacks: a small model's step is launch overhead, which vmap shares."""
    if device.type != "cpu":
        return 8 if model.name.startswith("resnet") else GPU_STACK
    if model.name.startswith("mlp") and (model.width or 0) <= CPU_STACK_MAX_WIDTH:
        return CPU_STACK
    return 1


def refuse_unless_fits(need: int, device: torch.device, what: str) -> None:
    """Bad input, with the estimate, before any work, when `need` bytes exceed what `device` has
    free (ensemble.free_memory, as `train` checks a run), rather than failing hours in or being
    killed by the kernel."""

    free = free_memory(device)
    if need > free:
        raise BadInput(f"{what} needs about {need / 2**30:.3g} GiB of memory but {device} has "
                       f"{free / 2**30:.3g} GiB free; choose smaller sizes")
