"""The words of a slice's figure: its identity and its directions, read from result files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.errors import BadInput
from landscape.results import SLICE, read_result


def read_slices(paths: Sequence[str | Path]) -> list[tuple[dict, dict[str, np.ndarray]]]:
    """(attrs, arrays) of slice/surface result files, refusing a mix of 1-D and 2-D."""
    results = [read_result(p, SLICE) for p in paths]
    if not results:
        raise BadInput("no slice result files given")
    for _, arrays in results:  # a user's model evaluated on its training data only
        shape = arrays["train_loss"].shape if "train_loss" in arrays else None
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            if shape is not None:
                arrays.setdefault(key, np.full(shape, np.nan))
    if len({int(a["directions"]) for a, _ in results}) > 1:
        raise BadInput("slices (1-D) and surfaces (2-D) cannot be drawn in one figure")
    return results


def describe(attrs: dict) -> str:
    """A model's legend label: its flood level (or objective, where b is not one fixed level) and
    which state it is, after the part of its path that tells apart runs of one name
    (analysis.loading.result_names); a user's checkpoint by its file name."""
    if "label" in attrs:
        return str(attrs["label"])
    b = f"b = {float(attrs['flood']):g}"
    if attrs.get("role") != "plain" and float(attrs["flood"]) == 0:  # adaptive from 0, AdaFlood
        b = attrs.get("objective", b)
    origin = f"{attrs['origin']}: " if "origin" in attrs else ""
    if attrs["which"] == "snapshot":
        return f"{origin}{b}, first below b (epoch {attrs['epoch']})"
    return f"{origin}{b}, last epoch ({attrs['epoch']})"


def direction_caption(attrs: dict) -> str:
    kind = attrs.get("direction", "random")
    if kind == "pca":
        return (f"PCA of the optimization path (saved epochs, orange), bias/BN "
                f"{attrs['biasbn']}, BN statistics: {attrs['bn_stats']}")
    what = "top Hessian eigenvector(s), Lanczos seed" if kind == "hessian" else "direction seed"
    return (f"{what} {attrs['direction_seed']}, {attrs['normalization']}-normalized, "
            f"bias/BN {attrs['biasbn']}, BN statistics: {attrs['bn_stats']}")
