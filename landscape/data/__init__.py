"""Data sets as device-resident tensors: the paper's synthetic sets and image sets read from local files.

Every set comes as train/validation/test `Split`s holding inputs, the labels trained and evaluated on
(noisy where label noise was asked for) and the clean labels, so that memorization (accuracy on the
flipped points) and clean accuracy can both be measured. Label noise flips exactly floor(n * rho)
labels of each split, chosen uniformly at random (docs/settings.md).

Image sets keep their pixels as uint8 on the device (4x less memory and bandwidth than floats) and
standardize each gathered batch there: `Split.stored` is the form kept in memory, `Split.x` and
`Split.inputs(rows)` are always model-ready float inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import torch

from landscape.config import SYNTHETIC, DataConfig


@dataclass(frozen=True)
class Standardize:
    """uint8 pixels -> (p / 255 - mean) / std per channel, in the model's dtype, on the device."""

    scale: torch.Tensor  # [C, 1, 1]: 1 / (255 std)
    shift: torch.Tensor  # [C, 1, 1]: -mean / std

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float], *, device: torch.device,
           dtype: torch.dtype) -> Standardize:
        mean64, std64 = (torch.tensor(v, dtype=torch.float64)[:, None, None] for v in (mean, std))
        return cls(scale=(1 / (255 * std64)).to(device=device, dtype=dtype),
                   shift=(-mean64 / std64).to(device=device, dtype=dtype))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [..., C, H, W] uint8 -> float [..., C, H, W]: one fused multiply-add."""
        return torch.addcmul(self.shift, pixels.to(self.scale.dtype), self.scale)


@dataclass(frozen=True)
class Split:
    """One split on its device. `stored` is the form kept in memory: model-ready floats, or uint8
    pixels when `standardize` is set (image sets). Model input comes from `x` (all rows) or
    `inputs(rows)`; a trainer gathers `stored` rows, augments them, then `prepare`s them."""

    stored: torch.Tensor   # [n, *input_shape]
    y: torch.Tensor        # [n] int64: the labels used (noisy where noise was added)
    y_clean: torch.Tensor  # [n] int64
    standardize: Standardize | None = None

    def __len__(self) -> int:
        return self.y.shape[0]

    def prepare(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows in stored form [..., *input_shape] (gathered, maybe augmented) -> model input."""
        return rows if self.standardize is None else self.standardize(rows)

    def inputs(self, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """Model input of some rows (a slice or an index tensor)."""
        return self.prepare(self.stored[rows])

    @cached_property
    def x(self) -> torch.Tensor:
        """Model input of every row [n, *input_shape], made on first use and kept (analyses that
        sweep the whole split many times read it; the trainer gathers from `stored`)."""
        return self.inputs()

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
        return tuple(self.train.stored.shape[1:])

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
             dtype: torch.dtype, standardize: Standardize | None = None) -> Split:
    """A Split on `device`: x converted to `dtype`, or kept as it is (uint8 pixels) when a
    `standardize` step makes the model input."""
    stored = torch.as_tensor(x).to(device)
    return Split(stored=stored if standardize is not None else stored.to(dtype),
                 y=torch.as_tensor(y, dtype=torch.int64).to(device),
                 y_clean=torch.as_tensor(y_clean, dtype=torch.int64).to(device),
                 standardize=standardize)


IMAGE_SHAPES = {"mnist": (1, 28, 28), "kmnist": (1, 28, 28), "svhn": (3, 32, 32),
                "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


def input_shape(config: DataConfig) -> tuple[int, ...]:
    """One input's shape for a resolved DataConfig, known before the data are made or read."""
    if config.name == "two_gaussians":
        return (config.gaussian_dim,)
    return (2,) if config.name in SYNTHETIC else IMAGE_SHAPES[config.name]


def load(config: DataConfig, *, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, data_dir: str | None = None,
         download: bool = False) -> Dataset:
    """The data set a (resolved) DataConfig names, on `device`. Deterministic in config.seed.

    Image sets are read from their official files under `data_dir` (images.py); with `download`,
    missing files are fetched first (download.py)."""
    device = torch.device(device)
    if config.name in SYNTHETIC:
        from landscape.data.synthetic import make_synthetic
        return make_synthetic(config, device=device, dtype=dtype)
    from landscape.data.images import load_images
    return load_images(config, device=device, dtype=dtype, data_dir=data_dir, download=download)
