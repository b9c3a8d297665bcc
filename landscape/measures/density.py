"""A spectral density as stochastic Lanczos quadrature gives it (nodes and weights), free of
torch so that figures can draw it from stored arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Density:
    """The spectral density's quadrature (nodes and weights, weights summing to 1 over all
    runs) and its broadened curve."""

    nodes: np.ndarray
    weights: np.ndarray

    def curve(self, *, points: int = 1000, sigma: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """(grid, density): Gaussians of width sigma x the nodes' range at the nodes."""
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        width = sigma * max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
        grid = np.linspace(lo - 6 * width, hi + 6 * width, points)
        bumps = np.exp(-0.5 * ((grid[:, None] - self.nodes[None]) / width) ** 2)
        return grid, bumps @ self.weights / (width * math.sqrt(2 * math.pi))

    def moment(self, p: int) -> float:
        """sum_j w_j theta_j^p: an estimate of tr(H^p) / n."""
        return float(self.weights @ self.nodes ** p)
