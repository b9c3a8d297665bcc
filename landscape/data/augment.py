"""Augmentation as batched tensor operations on the data's own device (no per-image Python)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a horizontal flip with probability 1/2.

    x: [N, C, H, W] -> [N, C, H, W]; the randomness comes from `generator` (on x's device).
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]    # [N, 1, H, 1]
    cols = dx[:, None] + torch.arange(w, device=x.device)                          # [N, W]
    cols = torch.where(flip[:, None], cols.flip(-1), cols)[:, None, None, :]      # [N, 1, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]
