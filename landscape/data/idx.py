"""MNIST and Kuzushiji-MNIST from local files in the IDX format (gzipped or not).

The files keep their official names (train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz],
...). Kuzushiji-MNIST is also read from its NumPy release (kmnist-train-imgs.npz, ...,
kmnist-test-labels.npz, each holding `arr_0`), read without pickles.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np

from landscape.errors import BadInput

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NPZ_FILES = {"train": ("kmnist-train-imgs.npz", "kmnist-train-labels.npz"),
             "test": ("kmnist-test-imgs.npz", "kmnist-test-labels.npz")}
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


def read_npz(path: Path) -> np.ndarray:
    """The array `arr_0` of a NumPy .npz file (object arrays, which need pickles, are refused)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["arr_0"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise BadInput(f"cannot read {path} as a .npz file holding arr_0: {err}") from None


def read_part(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one official part ("train" or "test"): IDX, gzipped IDX or .npz."""
    arrays = []
    for stem, npz in zip(FILES[part], NPZ_FILES[part]):
        candidates = (root / stem, root / f"{stem}.gz", root / npz)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise BadInput(f"missing {stem}[.gz] (or {npz}) in {root}")
        arrays.append(read_npz(path) if path.suffix == ".npz" else read_idx(path))
    return arrays[0], arrays[1]


def read_images_labels(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 1, 28, 28] and int64 labels [n] of one official part."""
    images, labels = read_part(root, part)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or \
            images.dtype != np.uint8:
        raise BadInput(f"{root}: {part} images {images.shape} {images.dtype} and labels "
                       f"{labels.shape} do not match (expected uint8 [n, 28, 28] and [n])")
    return images[:, None], labels.astype(np.int64)
