"""K models of one architecture held as stacked tensors and evaluated with torch.func.

A single run is the case K = 1, which calls the module directly (no vmap) on views of the stacked
tensors, so one training loop serves single runs and vectorized sweeps alike. Each member keeps its
own parameters, buffers and optimizer state; they interact only through sharing the input data.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from .config import ModelConfig


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

    def forward(self, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
        """Logits [K, n, C] of inputs x: [n, ...] given to every member (shared) or [K, n, ...]."""
        if self.size == 1:
            state = {n: t[0] for n, t in {**self.params, **self.buffers}.items()}
            return functional_call(self.template, state, (x if shared else x[0],))[None]

        def call(params, buffers, inputs):
            return functional_call(self.template, (params, buffers), (inputs,))

        return vmap(call, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, x)

    def member_state(self, k: int, *, clone: bool = False) -> dict[str, torch.Tensor]:
        """Member k's state dict (views unless clone)."""
        everything = {**self.params, **self.buffers}
        return {n: (everything[n][k].detach().clone() if clone else everything[n][k].detach())
                for n in self.keys}


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


def eval_chunk(model: ModelConfig, input_shape: tuple[int, ...], members: int) -> int:
    """Rows evaluated at once: bounds the K x rows x activation-size working set (~64M numbers)."""
    if model.name.startswith("mlp"):
        per_row = max(model.width or 1, math.prod(input_shape))
    else:
        per_row = 64 * math.prod(input_shape)  # conv feature maps are several times the input
    return max(1, (1 << 26) // (members * per_row))


def auto_chunk_size(model: ModelConfig, device: torch.device) -> int:
    """How many sweep members to stack by default (DESIGN.md section 4): on the CPU one wide MLP
    already fills the cores, so width >= 256 runs one at a time; small ones and GPUs stack."""
    if model.name == "mlp_bn" or model.name.startswith("resnet"):
        return 1 if device.type == "cpu" else 8
    if device.type == "cpu":
        return 1 if (model.width or 0) >= 256 else 16
    return 64
