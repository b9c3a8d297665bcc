"""Augmentation as batched tensor operations on the data's own device (no per-image Python).

The paper's CIFAR augmentation (Sec. 4.2): a random 32 x 32 crop of the image zero-padded by 4, then
a horizontal flip with probability 1/2. It runs on the stored pixels (uint8 for image sets) before
standardization, so the padding is black, as with the usual per-image pipelines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a horizontal flip with probability 1/2.

    x: [N, C, H, W] -> [N, C, H, W], any dtype; the randomness comes from `generator` (on x's
    device), drawn in the order: row offsets, column offsets, flips.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))                                   # [N, C, H+2p, W+2p]
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator, device=x.device)
    flip = torch.rand(n, 1, 1, generator=generator, device=x.device) < 0.5
    rows = torch.arange(h, device=x.device)[:, None] + dy                     # [N, H, 1]
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flip, cols.flip(0), cols) + dx                         # [N, 1, W]
    # One gather over flattened pixels: ~7x faster on the CPU than 4-D advanced indexing.
    index = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)
