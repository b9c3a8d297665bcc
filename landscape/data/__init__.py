"""Data sets as device-resident tensors: the paper's synthetic sets and image sets read from local files.

Every set comes as train/validation/test `Split`s holding inputs, the labels trained and evaluated on
(noisy where label noise was asked for) and the clean labels, so that memorization (accuracy on the
flipped points) and clean accuracy can both be measured. Label noise flips exactly floor(n * rho)
labels of each split, chosen uniformly at random (DESIGN.md section 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import SYNTHETIC, DataConfig
from ..errors import BadInput


@dataclass(frozen=True)
class Split:
    x: torch.Tensor        # [n, *input_shape]
    y: torch.Tensor        # [n] int64: the labels used (noisy where noise was added)
    y_clean: torch.Tensor  # [n] int64

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def flipped(self) -> torch.Tensor:
        """[n] bool: the points whose label was flipped."""
        return self.y != self.y_clean


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


SPLITS = ("train", "val", "test")


def flip_labels(y: np.ndarray, rho: float, num_classes: int,
                rng: np.random.Generator) -> np.ndarray:
    """Labels with exactly floor(n * rho) of them changed to another class, uniformly chosen."""
    n = len(y)
    count = int(math.floor(n * rho + 1e-9))
    idx = rng.permutation(n)[:count]
    noisy = y.copy()
    if num_classes == 2:
        noisy[idx] = 1 - noisy[idx]
    else:  # symmetric noise: a uniformly chosen *other* class
        noisy[idx] = (noisy[idx] + rng.integers(1, num_classes, size=count)) % num_classes
    return noisy


def split_rngs(seed: int, count: int) -> list[np.random.Generator]:
    """Independent generators for the parts of one data draw (e.g. train, val, test)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]


def to_split(x: np.ndarray, y: np.ndarray, y_clean: np.ndarray, *, device: torch.device,
             dtype: torch.dtype) -> Split:
    return Split(x=torch.as_tensor(x).to(device=device, dtype=dtype),
                 y=torch.as_tensor(y, dtype=torch.int64).to(device),
                 y_clean=torch.as_tensor(y_clean, dtype=torch.int64).to(device))


def load(config: DataConfig, *, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, data_dir: str | None = None) -> Dataset:
    """The data set a (resolved) DataConfig names, on `device`. Deterministic in config.seed."""
    device = torch.device(device)
    if config.name in SYNTHETIC:
        from .synthetic import make_synthetic
        return make_synthetic(config, device=device, dtype=dtype)
    if config.name in ("mnist", "kmnist"):
        from .idx import load_idx_dataset
        return load_idx_dataset(config, device=device, dtype=dtype, data_dir=data_dir)
    raise BadInput(f"data set {config.name!r} has no loader in this version")
