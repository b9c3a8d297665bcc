"""The image data sets (paper Sec. 4.2, Appendix B) from local files in their official formats.

Each format has a reader module (idx: MNIST and KMNIST; svhn; cifar) returning the official
training and test sets as uint8 pixels [n, C, H, W] and int64 labels. Here they become a `Dataset`:
the official training set is split into train and validation by a permutation drawn from the data
seed (80:20, or 85:15 with augmentation, as the paper; DataConfig.val_fraction), labels are flipped
where noise was asked for, and the pixels stay uint8 on the device with a per-data-set
`Standardize` step that makes model input from each gathered batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from landscape.config import DataConfig
from landscape.data import Dataset, Standardize, flip_labels, split_rngs, to_split
from landscape.errors import BadInput

Arrays = tuple[np.ndarray, np.ndarray]  # uint8 images [n, C, H, W], int64 labels [n]

# Per-channel pixel mean and std (pixels scaled to [0, 1]) of each official training set.
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "kmnist": ((0.1918,), (0.3483,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Where a set's files may sit under --data-dir, tried in this order before DIR itself: our layout,
# the official archives' folder names, and torchvision's (so existing downloads are found).
FOLDERS = {
    "mnist": ("mnist", "MNIST/raw"),
    "kmnist": ("kmnist", "KMNIST/raw"),
    "svhn": ("svhn", "SVHN"),
    "cifar10": ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10"),
    "cifar100": ("cifar-100-python", "cifar100/cifar-100-python", "cifar100"),
}
# A folder holds a set when one of these files is in it.
MARKERS = {
    "mnist": ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"),
    "kmnist": ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "kmnist-train-imgs.npz"),
    "svhn": ("train_32x32.mat",),
    "cifar10": ("data_batch_1",),
    "cifar100": ("train",),
}


def locate(data_dir: str | None, name: str) -> Path | None:
    """The folder holding `name`'s files under data_dir, None if there is none."""
    if data_dir is None:
        raise BadInput(f"{name} is read from local files: pass --data-dir DIR (the folder holding "
                       f"{FOLDERS[name][0]}/ or the files; --download fetches them there)")
    root = Path(data_dir).expanduser()
    for folder in [root / f for f in FOLDERS[name]] + [root]:
        if any((folder / marker).is_file() for marker in MARKERS[name]):
            return folder
    return None


def read_official(name: str, root: Path) -> tuple[Arrays, Arrays]:
    """The official (training, test) sets of `name` from its folder."""
    if name in ("mnist", "kmnist"):
        from landscape.data.idx import read_images_labels
        return read_images_labels(root, "train"), read_images_labels(root, "test")
    if name == "svhn":
        from landscape.data.svhn import read_mat
        return read_mat(root / "train_32x32.mat"), read_mat(root / "test_32x32.mat")
    from landscape.data.cifar import read_cifar
    return read_cifar(root, name)


def load_images(config: DataConfig, *, device: torch.device, dtype: torch.dtype,
                data_dir: str | None, download: bool = False) -> Dataset:
    """The image set a resolved DataConfig names; its files are fetched first only if `download`."""
    root = locate(data_dir, config.name)
    if root is None and not download and not Path(data_dir).expanduser().is_dir():
        raise BadInput(f"data directory {data_dir} does not exist")
    if root is None and download:
        from landscape.data.download import fetch
        fetch(config.name, Path(data_dir))
        root = locate(data_dir, config.name)
    if root is None:
        tried = ", ".join(f"{data_dir}/{f}" for f in FOLDERS[config.name])
        raise BadInput(f"missing {config.name} files: no {MARKERS[config.name][0]} in {tried} or "
                       f"{data_dir}; put the official files there or pass --download")
    train, test = read_official(config.name, root)
    return assemble(config, train, test, root=root, device=device, dtype=dtype)


def assemble(config: DataConfig, train: Arrays, test: Arrays, *, root: Path,
             device: torch.device, dtype: torch.dtype) -> Dataset:
    """Split, flip and standardize the official sets (see the module docstring)."""
    classes = config.num_classes
    for part, (images, labels) in (("training", train), ("test", test)):
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise BadInput(f"{root}: {part} images {images.shape} {images.dtype} and labels "
                           f"{labels.shape} do not match (expected uint8 [n, C, H, W] and [n])")
        if len(labels) and not 0 <= labels.min() <= labels.max() < classes:
            raise BadInput(f"{root}: {part} labels outside 0..{classes - 1} for {config.name}")
    if train[0].shape[1:] != test[0].shape[1:] or train[0].shape[1] != len(STATS[config.name][0]):
        raise BadInput(f"{root}: training images {train[0].shape[1:]} and test images "
                       f"{test[0].shape[1:]} do not fit {config.name}")
    split_rng, *noise_rngs = split_rngs(config.seed, 4)
    order = split_rng.permutation(len(train[1]))
    n_val = int(round(len(order) * config.val_fraction))
    parts = {"train": (train, order[n_val:]), "val": (train, order[:n_val]),
             "test": (test, np.arange(len(test[1])))}
    limits = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    standardize = Standardize.of(*STATS[config.name], device=device, dtype=dtype)
    splits = []
    for (name, ((images, labels), idx)), rng in zip(parts.items(), noise_rngs):
        if limits[name] is not None:
            if limits[name] > len(idx):
                raise BadInput(f"--n-{name} {limits[name]} exceeds the {len(idx)} {name} points "
                               f"of {config.name}")
            idx = idx[:limits[name]]
        y_clean = labels[idx]
        splits.append(to_split(images[idx], flip_labels(y_clean, config.noise, classes, rng),
                               y_clean, device=device, dtype=dtype, standardize=standardize))
    return Dataset(*splits, num_classes=classes)
