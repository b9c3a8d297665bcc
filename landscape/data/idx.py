"""MNIST and Kuzushiji-MNIST from local files in the IDX format (gzipped or not).

The files keep their standard names (train-images-idx3-ubyte[.gz], ...) in DIR/<name>/ or DIR itself.
The official training set is split into train and validation (80:20 by default, paper Sec. 4.2) by a
permutation drawn from the data seed; the official test set is the test split.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import BadInput
from . import Dataset, flip_labels, split_rngs, to_split

# Per-data-set pixel statistics of the training sets, for standardization.
STATS = {"mnist": (0.1307, 0.3081), "kmnist": (0.1918, 0.3483)}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file as an array; a malformed file raises BadInput naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise BadInput(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise BadInput(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadInput(f"{path} is truncated (incomplete IDX header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise BadInput(f"{path} is truncated or padded: {len(raw) - header} bytes of data for "
                       f"shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find_file(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise BadInput(f"missing {stem}[.gz] in {root}")


def dataset_dir(data_dir: str | None, name: str) -> Path:
    """DIR/<name> if it exists, else DIR itself; a clear error when neither holds the files."""
    if data_dir is None:
        raise BadInput(f"{name} is read from local files: pass --data-dir DIR (the folder holding "
                       f"{name}/ or its files)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise BadInput(f"data directory {root} does not exist")
    return root / name if (root / name).is_dir() else root


def read_images_labels(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = FILES[part]
    images = read_idx(find_file(root, images_stem))
    labels = read_idx(find_file(root, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise BadInput(f"{root}: {part} images {images.shape} and labels {labels.shape} do not "
                       "match (expected [n, 28, 28] and [n])")
    return images, labels.astype(np.int64)


def load_idx_dataset(config: DataConfig, *, device: torch.device, dtype: torch.dtype,
                     data_dir: str | None) -> Dataset:
    root = dataset_dir(data_dir, config.name)
    train_images, train_labels = read_images_labels(root, "train")
    test_images, test_labels = read_images_labels(root, "test")
    if train_labels.max(initial=0) >= 10 or test_labels.max(initial=0) >= 10:
        raise BadInput(f"{root}: labels outside 0..9")
    split_rng, *noise_rngs = split_rngs(config.seed, 4)
    order = split_rng.permutation(len(train_labels))
    n_val = int(round(len(order) * config.val_fraction))
    parts = {"train": (train_images, train_labels, order[n_val:]),
             "val": (train_images, train_labels, order[:n_val]),
             "test": (test_images, test_labels, np.arange(len(test_labels)))}
    limits = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    mean, std = STATS[config.name]
    splits = []
    for (name, (images, labels, idx)), rng in zip(parts.items(), noise_rngs):
        if limits[name] is not None:
            if limits[name] > len(idx):
                raise BadInput(f"--n-{name} {limits[name]} exceeds the {len(idx)} {name} points "
                               f"of {config.name}")
            idx = idx[:limits[name]]
        x = (images[idx, None].astype(np.float32) / 255.0 - mean) / std  # [n, 1, 28, 28]
        y_clean = labels[idx]
        splits.append(to_split(x, flip_labels(y_clean, config.noise, 10, rng), y_clean,
                               device=device, dtype=dtype))
    return Dataset(*splits, num_classes=10)
