"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official "python version" batches.

CIFAR-10: cifar-10-batches-py/data_batch_1 ... data_batch_5 and test_batch; CIFAR-100:
cifar-100-python/train and test, with the 100 fine labels. Each file is a pickled dict with `data`,
uint8 [n, 3072] (the red, green and blue 32 x 32 planes of each image), and the labels.

Pickles can run code when read, so these are read with an unpickler that admits only what the format
needs (docs/guides/training.md): builtin containers, bytes and numpy arrays. Any other global in a file
makes it bad input, and nothing from the file is used.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from landscape.errors import BadInput

TRAIN = {"cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)), "cifar100": ("train",)}
TEST = {"cifar10": ("test_batch",), "cifar100": ("test",)}
LABELS = {"cifar10": "labels", "cifar100": "fine_labels"}

# The globals a CIFAR batch needs: numpy's array reconstruction (numpy >= 2 names its core module
# numpy._core), sets and bytearrays, and _codecs.encode, which Python 3 writes for bytes into
# protocol-2 pickles. numpy.dtype is admitted but object arrays are refused after loading.
ALLOWED = {(module, name)
           for core in ("numpy.core", "numpy._core")
           for module, name in ((f"{core}.multiarray", "_reconstruct"),
                                (f"{core}.multiarray", "scalar"),
                                (f"{core}.numeric", "_frombuffer"))} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "bytearray"), ("_codecs", "encode")}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the ALLOWED globals."""

    def __init__(self, file, path: Path) -> None:
        # latin1 turns Python 2 str (the official files) into str, as numpy's arrays expect
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise BadInput(f"{self.path} names the global {module}.{name}; CIFAR batches may hold only "
                       "containers, bytes and numpy arrays, so it was not loaded")


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 32, 32] and int64 labels [n] of one batch file."""
    if not path.is_file():
        raise BadInput(f"missing {path.name} in {path.parent}")
    try:
        with open(path, "rb") as f:
            batch = RestrictedUnpickler(f, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, LookupError) as err:  # LookupError: an unknown codec
        raise BadInput(f"{path} is not a readable CIFAR batch (truncated or not a pickle: "
                       f"{type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise BadInput(f"{path} is not a CIFAR batch (it holds a {type(batch).__name__})")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise BadInput(f"{path}: 'data' is not a uint8 array [n, 3072]")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise BadInput(f"{path}: {label_key!r} is not a list of integer labels") from None
    if len(labels) != len(data):
        raise BadInput(f"{path}: {len(data)} images but {len(labels)} {label_key!r}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(root: Path, name: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The official (training, test) sets of cifar10 or cifar100 from their batch folder."""
    parts = []
    for files in (TRAIN[name], TEST[name]):
        batches = [read_batch(root / f, LABELS[name]) for f in files]
        parts.append((np.concatenate([b[0] for b in batches]),
                      np.concatenate([b[1] for b in batches])))
    return parts[0], parts[1]
