"""Choosing the device (`--device auto|cpu|cuda[:N]`), the dtype a config names, and applying speed
settings once."""

from __future__ import annotations

import contextlib

import torch

from landscape.config.execution import check_device
from landscape.errors import BadInput


def resolve_device(spec: str = "auto") -> torch.device:
    """auto: the GPU when there is one, else the CPU. Asking for CUDA without one is bad input."""
    check_device(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("--device cuda was asked for but no CUDA GPU is available; use "
                           "--device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInput(f"no GPU {device.index}: {torch.cuda.device_count()} visible")
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls and convolutions on GPUs
        torch.backends.cudnn.allow_tf32 = True
    return device


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype a config names ("float32", "float64", "bfloat16")."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise BadInput(f"unknown dtype {name!r}")
    return dtype


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The precision of forward passes, named once: bfloat16 autocast for `--amp bf16` (matmuls and
    convolutions in bf16; the trainer casts logits back to the run's dtype for the losses), else
    full precision."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Image rows [..., C, H, W] with channels innermost in memory (NHWC), the layout cuDNN's
    fastest convolutions use; same values and shape. An [N, C, H, W] tensor becomes
    torch.channels_last; for [1, N, C, H, W], x[0] does."""
    return x.movedim(-3, -1).contiguous().movedim(-1, -3)
