import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MNIST_SUBSET

from landscape.config import DataConfig
from landscape.data import flip_labels, load
from landscape.data.idx import read_idx
from landscape.data.synthetic import sinusoid, spiral, two_gaussians
from landscape.errors import BadInput


def test_two_gaussians_classes_and_means():
    x, y = two_gaussians(20001, np.random.default_rng(0), dim=10, mean=1.0)
    assert y.sum() == 10001 and (y == 0).sum() == 10000  # ceil(n/2) positives
    np.testing.assert_allclose(x[y == 1].mean(0), 0.0, atol=0.04)   # mu_P = 0
    np.testing.assert_allclose(x[y == 0].mean(0), 1.0, atol=0.04)   # mu_N = m * 1
    np.testing.assert_allclose(np.cov(x[y == 1].T), np.eye(10), atol=0.06)


def test_sinusoid_labels_follow_the_rule_and_inputs():
    for dist in ("gaussian", "disk"):
        x, y = sinusoid(5000, np.random.default_rng(1), input_dist=dist)
        np.testing.assert_array_equal(y, (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0))
        assert abs(y.mean() - 0.5) < 0.03  # symmetric under x -> -x
    x, _ = sinusoid(5000, np.random.default_rng(2), input_dist="disk")
    r = np.linalg.norm(x, axis=1)
    assert r.max() <= 2.0
    assert abs((r < 1).mean() - 0.25) < 0.03  # uniform in the disk: P(r < 1) = 1/4
    x, _ = sinusoid(5000, np.random.default_rng(2), input_dist="gaussian")
    assert abs(x.std() - 1) < 0.03


def test_spiral_arms():
    x, y = spiral(200, np.random.default_rng(0), tau=0.0)
    theta = np.linspace(0, 4 * np.pi, 100)
    np.testing.assert_allclose(np.linalg.norm(x[y == 1], axis=1), theta, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(x[y == 0], axis=1), theta + np.pi, atol=1e-12)
    noisy, _ = spiral(200, np.random.default_rng(0), tau=1.0)
    assert 0.7 < np.std(noisy - x) < 1.3


@pytest.mark.parametrize("n,rho", [(100, 0.01), (100, 0.05), (100, 0.1), (100, 0.29), (20000, 0.07),
                                   (7, 0.5)])
def test_flip_exactly_floor_n_rho(n, rho):
    y = np.random.default_rng(0).integers(0, 2, n)
    noisy = flip_labels(y, rho, 2, np.random.default_rng(1))
    assert (noisy != y).sum() == math.floor(round(n * rho, 9))
    y10 = np.random.default_rng(0).integers(0, 10, n)
    noisy10 = flip_labels(y10, rho, 10, np.random.default_rng(1))
    assert (noisy10 != y10).sum() == math.floor(round(n * rho, 9))  # always a different class


@pytest.mark.parametrize("name", ["two_gaussians", "sinusoid", "spiral"])
def test_synthetic_sets_are_deterministic_and_noisy_as_asked(name):
    config = DataConfig(name, noise=0.1, seed=3).resolved()
    a, b = load(config), load(config)
    other = load(DataConfig(name, noise=0.1, seed=4).resolved())
    for split in ("train", "val", "test"):
        sa, sb = a.split(split), b.split(split)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
        assert int(sa.flipped.sum()) == math.floor(len(sa) * 0.1 + 1e-9)
    # (Spiral with tau = 0 has fixed inputs: the seed then changes only which labels flip)
    assert not (torch.equal(a.train.x, other.train.x) and torch.equal(a.train.y, other.train.y))


def test_paper_and_demo_sizes():
    paper = {n: DataConfig(n).resolved() for n in ("two_gaussians", "sinusoid", "spiral")}
    assert (paper["two_gaussians"].n_train, paper["two_gaussians"].n_test) == (100, 20000)
    assert (paper["spiral"].n_train, paper["spiral"].n_val, paper["spiral"].n_test) == (200, 200, 20000)
    demo = DataConfig("two_gaussians", sizes="demo").resolved()
    assert (demo.n_train, demo.n_val, demo.n_test) == (200, 200, 20000)
    data = load(demo)
    assert int(data.train.y.sum()) == 100  # 100 per class
    assert DataConfig("sinusoid", sizes="demo").resolved().sinusoid_input == "disk"


def test_mnist_subset_split_and_labels():
    config = DataConfig("mnist", noise=0.2, seed=0).resolved()
    data = load(config, data_dir=str(MNIST_SUBSET))
    assert data.train.x.shape == (800, 1, 28, 28) and len(data.val) == 200 and len(data.test) == 200
    assert int(data.train.flipped.sum()) == 160
    labels = torch.cat([data.train.y_clean, data.val.y_clean]).sort().values
    raw = read_idx(MNIST_SUBSET / "mnist" / "train-labels-idx1-ubyte.gz")
    assert torch.equal(labels, torch.as_tensor(np.sort(raw)))  # a partition of the training set
    assert data.test.y_clean[:5].tolist() == [7, 2, 1, 0, 4]
    assert abs(float(data.train.x.mean())) < 0.2  # standardized


def test_bad_idx_files(tmp_path: Path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    with pytest.raises(BadInput, match="truncated"):
        read_idx(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(BadInput, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="missing"):
        load(DataConfig("mnist").resolved(), data_dir=str(tmp_path / "empty"))
