"""The paper's synthetic data sets (Sec. 4.1), with the authors' demo-code variants (docs/settings.md).

Labels are 1 for the positive class and 0 for the negative one.
"""

from __future__ import annotations

import numpy as np
import torch

from landscape.config import DataConfig
from landscape.data import Dataset, flip_labels, split_rngs, to_split


def two_gaussians(n: int, rng: np.random.Generator, *, dim: int = 10,
                  mean: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """N(0, I) for the positive class, N(m * 1, I) for the negative one; ceil(n/2) positives."""
    n_pos = n - n // 2
    x = rng.standard_normal((n, dim))
    x[n_pos:] += mean
    y = np.r_[np.ones(n_pos, np.int64), np.zeros(n // 2, np.int64)]
    return x, y


def sinusoid(n: int, rng: np.random.Generator, *,
             input_dist: str = "gaussian") -> tuple[np.ndarray, np.ndarray]:
    """y = sign(x.w + sin(x.w')) with w = 1.5 e1, w' = 1.5 e2 (orthogonal, as the paper requires).

    Inputs: "gaussian", x ~ N(0, I2) as the paper states; "disk", uniform in the disk of radius 2 as
    the demo code draws them (two coordinates of a uniform point on the 3-sphere).
    """
    if input_dist == "gaussian":
        x = rng.standard_normal((n, 2))
    else:
        g = rng.standard_normal((n, 4))
        x = 2 * g[:, :2] / np.linalg.norm(g, axis=1, keepdims=True)
    y = (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0).astype(np.int64)
    return x, y


def spiral(n: int, rng: np.random.Generator, *, tau: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Equally spaced theta in [0, 4 pi] per class; x+ = theta [cos, sin] + tau nu,
    x- = (theta + pi) [cos theta, sin theta] + tau nu, nu ~ N(0, I2) (Sugiyama 2015)."""
    n_pos = n - n // 2
    theta = np.r_[np.linspace(0, 4 * np.pi, n_pos), np.linspace(0, 4 * np.pi, n // 2)]
    radius = theta + np.r_[np.zeros(n_pos), np.full(n // 2, np.pi)]
    x = radius[:, None] * np.c_[np.cos(theta), np.sin(theta)] + tau * rng.standard_normal((n, 2))
    y = np.r_[np.ones(n_pos, np.int64), np.zeros(n // 2, np.int64)]
    return x, y


def make_synthetic(config: DataConfig, *, device: torch.device, dtype: torch.dtype) -> Dataset:
    """Train, validation and test drawn independently, each with its own floor(n * rho) flips."""
    draw = {
        "two_gaussians": lambda n, rng: two_gaussians(n, rng, dim=config.gaussian_dim,
                                                      mean=config.gaussian_mean),
        "sinusoid": lambda n, rng: sinusoid(n, rng, input_dist=config.sinusoid_input),
        "spiral": lambda n, rng: spiral(n, rng, tau=config.spiral_tau),
    }[config.name]
    splits = []
    for n, rng in zip((config.n_train, config.n_val, config.n_test), split_rngs(config.seed, 3)):
        x, y_clean = draw(n, rng)
        y = flip_labels(y_clean, config.noise, 2, rng)
        splits.append(to_split(x, y, y_clean, device=device, dtype=dtype))
    return Dataset(*splits, num_classes=2)
