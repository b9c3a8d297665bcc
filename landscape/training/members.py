"""What members of a stacked training group own apart from their parameters: their data draws
(MemberData) and their optimizer state, and how a sweep is cut into chunks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from landscape.data import SPLITS, Dataset
from landscape.measures.stack import Ensemble


class MemberData:
    """The data each member trains and is measured on: one data set shared by every member, or
    several draws (different data seeds) stacked [D, n, ...] with the draw of each member."""

    def __init__(self, draws: Sequence[Dataset], which: Sequence[int]) -> None:
        self.shared = len(draws) == 1
        self.draws = tuple(draws)  # as loaded: what tracking.py takes its fixed rows from
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


def balanced_chunks(items: Sequence, limit: int) -> list[list]:
    """items in consecutive chunks of at most `limit`, as equal in size as possible."""
    count = max(1, math.ceil(len(items) / max(limit, 1)))
    size = math.ceil(len(items) / count)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
