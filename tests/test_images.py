"""Image data sets from tiny files written here in each official format; augmentation; two-epoch
runs of the ResNets; bad files as one line and exit code 2."""

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import landscape_cli

from landscape.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from landscape.config.execution import Execution
from landscape.data import Standardize, load
from landscape.data.augment import random_crop_flip
from landscape.data.images import STATS
from landscape.errors import BadInput, WorkFailed
from landscape.runs.store import Run
from landscape.training.planner import train

# -- writers of the official formats -------------------------------------------------------------

def images_of(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, C, H, W] whose first pixel is the image's index (to follow rows through splits)."""
    x = np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def write_idx(path: Path, array: np.ndarray) -> None:
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_mnist_like(folder: Path, n_train: int, n_test: int, *, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    data = {}
    for part, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = images_of(n, 1, 28, seed)[:, 0], np.arange(n) % 10
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", y)
        data[part] = (x, y)
    return data


def write_svhn(folder: Path, n_train: int, n_test: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for part, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x = images_of(n, 3, 32, seed)                      # [n, C, H, W]
        y = np.arange(n) % 10 + 1                          # 1..10, 10 meaning the digit 0
        scipy.io.savemat(folder / f"{part}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": y[:, None].astype(np.uint8)})
        data[part] = (x, y % 10)
    return data


def write_cifar(root: Path, name: str, n_per_file: int, *, protocol: int = 2) -> dict:
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10"
             else ["train", "test"])
    classes, key = (10, "labels") if name == "cifar10" else (100, "fine_labels")
    data = {}
    for i, file in enumerate(files):
        x = images_of(n_per_file, 3, 32, i)
        y = [int(v) for v in (np.arange(n_per_file) * 7 + i) % classes]
        batch = {"batch_label": "testing batch", "data": x.reshape(n_per_file, -1), key: y,
                 "filenames": [b"img%d.png" % j for j in range(n_per_file)]}
        if name == "cifar100":
            batch["coarse_labels"] = [v // 5 for v in y]
        (folder / file).write_bytes(pickle.dumps(batch, protocol=protocol))
        data[file] = (x, np.array(y))
    return data


# -- reading them back ---------------------------------------------------------------------------

def check_partition(data, train_x: np.ndarray, train_y: np.ndarray, val_fraction: float) -> None:
    """train + val are the official training set, split as asked; test is the official test set."""
    n = len(train_y)
    assert len(data.val) == round(n * val_fraction) and len(data.train) == n - len(data.val)
    rows = torch.cat([data.train.stored, data.val.stored]).cpu().numpy()
    index = rows[:, 0, 0, 0].astype(int)                   # the first pixel is the row's index
    assert sorted(index) == list(range(n))
    np.testing.assert_array_equal(rows, train_x[index])
    np.testing.assert_array_equal(torch.cat([data.train.y, data.val.y]).numpy(), train_y[index])


@pytest.mark.parametrize("name,gz", [("mnist", True), ("kmnist", False)])
def test_idx_round_trip(tmp_path, name, gz):
    files = write_mnist_like(tmp_path / name, 50, 20, gz=gz)
    data = load(DataConfig(name).resolved(), data_dir=str(tmp_path))
    train_x, train_y = files["train"]
    check_partition(data, train_x[:, None], train_y, 0.2)
    assert data.input_shape == (1, 28, 28) and data.train.stored.dtype == torch.uint8
    assert torch.equal(data.test.y, torch.as_tensor(files["t10k"][1]))
    mean, std = STATS[name]
    expected = (data.test.stored.double() / 255 - mean[0]) / std[0]
    torch.testing.assert_close(data.test.x.double(), expected, atol=1e-5, rtol=0)


def test_kmnist_npz_release(tmp_path):
    for part, n in (("train", 40), ("test", 10)):
        np.savez(tmp_path / f"kmnist-{part}-imgs.npz", images_of(n, 1, 28, 0)[:, 0])
        np.savez(tmp_path / f"kmnist-{part}-labels.npz", np.arange(n, dtype=np.uint8) % 10)
    data = load(DataConfig("kmnist").resolved(augment=True), data_dir=str(tmp_path))
    assert (len(data.train), len(data.val), len(data.test)) == (34, 6, 10)  # 85:15 with augment


def test_svhn_round_trip(tmp_path):
    files = write_svhn(tmp_path / "svhn", 40, 12)
    data = load(DataConfig("svhn", seed=3).resolved(), data_dir=str(tmp_path))
    check_partition(data, *files["train"], 0.2)
    np.testing.assert_array_equal(data.test.stored.numpy(), files["test"][0])  # [C, H, W] order
    assert 0 in data.test.y.tolist() and int(data.test.y.max()) == 9       # label 10 is digit 0


@pytest.mark.parametrize("name,protocol", [("cifar10", 2), ("cifar100", 2), ("cifar10", 5)])
def test_cifar_round_trip(tmp_path, name, protocol):
    files = write_cifar(tmp_path, name, 8, protocol=protocol)
    train_files = [f for f in files if f not in ("test_batch", "test")]
    train_x = np.concatenate([files[f][0] for f in train_files])
    train_y = np.concatenate([files[f][1] for f in train_files])
    data = load(DataConfig(name, noise=0.25).resolved(augment=True), data_dir=str(tmp_path))
    n = len(train_y)
    assert len(data.val) == round(0.15 * n) and data.input_shape == (3, 32, 32)
    rows = torch.cat([data.train.stored, data.val.stored]).numpy()
    index = [int(np.flatnonzero((train_x == r).all(axis=(1, 2, 3)))[0]) for r in rows]
    assert sorted(index) == list(range(n))
    np.testing.assert_array_equal(torch.cat([data.train.y_clean, data.val.y_clean]).numpy(),
                                  train_y[index])
    assert int(data.train.flipped.sum()) == int(len(data.train) * 0.25)
    assert int(data.train.y.max()) < data.num_classes == (10 if name == "cifar10" else 100)


def test_standardize_and_split_inputs(tmp_path):
    write_cifar(tmp_path, "cifar10", 4)
    data = load(DataConfig("cifar10").resolved(), data_dir=str(tmp_path), dtype=torch.float64)
    mean, std = (torch.tensor(v, dtype=torch.float64)[:, None, None] for v in STATS["cifar10"])
    expected = (data.train.stored.double() / 255 - mean) / std
    torch.testing.assert_close(data.train.x, expected)
    idx = torch.tensor([[2, 0], [1, 1]])
    torch.testing.assert_close(data.train.inputs(idx), expected[idx])
    assert data.train.x is data.train.x  # made once
    step = Standardize.of(*STATS["cifar10"], device=torch.device("cpu"), dtype=torch.float32)
    assert step(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).dtype == torch.float32


# -- bad files -----------------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_naming_a_forbidden_global_is_refused(tmp_path):
    write_cifar(tmp_path, "cifar10", 4)
    marker = tmp_path / "ran"
    batch = {"data": np.zeros((1, 3072), np.uint8), "labels": [_Evil(marker)]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(BadInput, match="names the global .*system"):
        load(DataConfig("cifar10").resolved(), data_dir=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "text", "not a dict", "missing"])
def test_bad_cifar_files(tmp_path, damage):
    write_cifar(tmp_path, "cifar100", 4)
    path = tmp_path / "cifar-100-python" / "test"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "text":
        path.write_text("this is not a pickle\n")
    elif damage == "not a dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        path.unlink()
    with pytest.raises(BadInput) as err:
        load(DataConfig("cifar100").resolved(), data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and str(path.name) in str(err.value)


def test_bad_svhn_and_idx_files(tmp_path):
    write_svhn(tmp_path / "svhn", 10, 5)
    mat = tmp_path / "svhn" / "test_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    with pytest.raises(BadInput, match="test_32x32.mat"):
        load(DataConfig("svhn").resolved(), data_dir=str(tmp_path))
    mat.write_bytes(b"MATLAB? no, just text" * 20)
    with pytest.raises(BadInput, match="test_32x32.mat"):
        load(DataConfig("svhn").resolved(), data_dir=str(tmp_path))
    scipy.io.savemat(mat, {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(BadInput, match="not SVHN's"):
        load(DataConfig("svhn").resolved(), data_dir=str(tmp_path))
    write_mnist_like(tmp_path / "kmnist", 10, 5)
    (tmp_path / "kmnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BadInput, match="missing t10k-labels"):
        load(DataConfig("kmnist").resolved(), data_dir=str(tmp_path))
    with pytest.raises(BadInput, match="missing cifar10 files"):
        load(DataConfig("cifar10").resolved(), data_dir=str(tmp_path))


def test_labels_outside_the_classes_are_bad_input(tmp_path):
    write_svhn(tmp_path, 10, 5)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                   "y": np.array([[3], [11]])})
    with pytest.raises(BadInput, match="labels outside 0..9"):
        load(DataConfig("svhn").resolved(), data_dir=str(tmp_path))


def test_bad_image_files_through_the_cli(tmp_path):
    write_svhn(tmp_path / "svhn", 10, 5)
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"\0" * 100)
    for data in ("svhn", "cifar10"):
        result = landscape_cli("train", "--data", data, "--data-dir", tmp_path, "--epochs", "1",
                               "--out", tmp_path / "out", "--quiet")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("landscape: error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_archive_members_outside_the_folder_are_refused(tmp_path):
    from landscape.data.download import unpack
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"x"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(WorkFailed, match="unexpected member"):
        unpack(archive, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()


# -- augmentation --------------------------------------------------------------------------------

def test_crop_flip_keeps_shapes_and_only_crops_and_flips():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        views = {(dy, dx, f): padded[i, :, dy:dy + 8, dx:dx + 8].flip(-1) if f else
                 padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)
                 for f in (0, 1)}
        matches = [k for k, v in views.items() if torch.equal(v, out[i])]
        assert matches, f"image {i} is not a crop or flipped crop"
        flips += matches[0][2]
    assert 0 < flips < len(x)
    again = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)  # deterministic in the generator
    floats = random_crop_flip(x.float(), torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(floats, out.float())


# -- two epochs of each model on tiny data -------------------------------------------------------

@pytest.mark.parametrize("name,model,augment", [("svhn", "resnet18", False),
                                                ("cifar10", "resnet44", True)])
def test_two_epochs_of_each_resnet(tmp_path, name, model, augment):
    if name == "svhn":
        write_svhn(tmp_path / "svhn", 20, 8)   # ResNet-18 is slow on a CPU: 16/4/8 images
    else:
        write_cifar(tmp_path, name, 12)       # 51/9/12 images
    config = RunConfig(data=DataConfig(name, n_test=8), model=ModelConfig(model),
                       optim=OptimConfig("sgd", lr=0.1, momentum=0.9, batch_size=8, epochs=2,
                                         weight_decay=1e-5, milestones=(1,)),
                       augment=augment, save="all")
    execution = Execution(device="cpu", data_dir=str(tmp_path), progress=False,
                          amp="bf16" if augment else "off")  # (bf16 autocast runs on CPUs too)
    result = train([config], out=tmp_path / "runs", execution=execution)
    run = Run(result.paths[0])
    assert run.status == "complete" and run.epochs_done == 2
    metrics = run.metrics()
    assert np.isfinite(metrics["train_loss"]).all() and np.isfinite(metrics["test_acc"]).all()
    np.testing.assert_allclose(metrics["lr"][1:], [0.1, 0.01])  # decay after the milestone
    first, last = run.state_dict(0), run.state_dict(2)
    assert not torch.equal(first["stem.1.running_mean"], last["stem.1.running_mean"])  # BN buffers
    assert not any(k.startswith("_orig_mod") for k in last)


def test_analyses_find_moved_image_files_with_data_dir(tmp_path):
    """Runs record where training read an image set; after the files move, an analysis says so
    and reads them from --data-dir."""
    from landscape.analysis.gradnorm import gradnorm
    from landscape.runs.folders import open_runs

    write_mnist_like(tmp_path / "old" / "mnist", 50, 20)
    config = RunConfig(DataConfig("mnist"), ModelConfig("mlp", depth=1, width=8),
                       optim=OptimConfig(epochs=1, batch_size=16), save="all")
    path = train([config], out=tmp_path / "runs",
                 execution=Execution(data_dir=str(tmp_path / "old"), progress=False)).paths[0]
    (tmp_path / "old").rename(tmp_path / "new")
    with pytest.raises(BadInput, match="say where with --data-dir"):
        gradnorm(open_runs([path]), tmp_path / "g.h5", device=torch.device("cpu"))
    result = landscape_cli("gradnorm", path, "--data-dir", tmp_path / "new", "--skip-epochs", "0",
                           "--out", tmp_path / "out", "-q", check=True)
    assert (tmp_path / "out" / "gradnorm.h5").is_file() and "gradnorm.pdf" in result.stdout
