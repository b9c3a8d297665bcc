"""The Hessian spectrum (top-k eigenvalues, spectral density), trajectory directions and surface
export: against the exact Hessian, numpy's SVD and the stored arrays; through the API, on run
files and from the command line."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analysis_runs import train_pair
from conftest import landscape_cli
from torch import nn
from torch.func import functional_call, hessian

import landscape
from landscape.analysis.loading import dataset_for, model_for
from landscape.figures.vtk import write_vtp
from landscape.measures.filternorm import normalize_direction, parameters_of
from landscape.measures.options import Normalization
from landscape.measures.spectrum import draws
from landscape.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def exact():
    """A user's MLP in float64, its data and the full Hessian of its mean loss."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(60, 4, dtype=torch.float64), torch.randint(0, 3, (60,))
    params, buffers = parameters_of(net, net.state_dict())
    shapes = {k: p.shape for k, p in params.items()}

    def loss_of(flat):
        pieces = flat.split([math.prod(s) for s in shapes.values()])
        return F.cross_entropy(functional_call(net, {k: v.reshape(shapes[k]) for k, v in
                                                     zip(shapes, pieces)}, (x,)), y)

    return net, x, y, hessian(loss_of)(torch.cat([p.flatten() for p in params.values()]))


def test_top_k_eigenpairs_equal_the_exact_hessians(exact):
    net, x, y, H = exact
    values, vectors = landscape.hessian_eigenvalues(net, (x, y), k=4, tolerance=1e-10,
                                                    iterations=200, vectors=True)
    np.testing.assert_allclose(values, torch.linalg.eigvalsh(H).flip(0)[:4].numpy(), rtol=1e-8)
    for value, vector in zip(values, vectors):
        v = torch.cat([t.flatten() for t in vector.values()])
        assert math.isclose(float(v.norm()), 1.0, rel_tol=1e-8)
        torch.testing.assert_close(H @ v, value * v, atol=1e-7, rtol=0)


def test_density_integrates_to_one_and_its_moments_are_the_start_vectors(exact):
    net, x, y, H = exact
    n = H.shape[0]
    one = landscape.hessian_density(net, (x, y), iterations=n, runs=1, seed=5)
    grid, curve = one.curve()
    assert math.isclose(np.trapezoid(curve, grid), 1.0, rel_tol=1e-6)
    assert math.isclose(one.weights.sum(), 1.0, rel_tol=1e-12)
    # the quadrature's moments are q'H^p q for its (normalized Rademacher) start vector q
    generator = draws(5)
    q = torch.cat([torch.randint(0, 2, (p.numel(),), generator=generator) * 2.0 - 1
                   for p in net.parameters()]).double() / math.sqrt(n)
    assert math.isclose(one.moment(1), float(q @ H @ q), rel_tol=1e-8)
    assert math.isclose(one.moment(2), float(q @ H @ H @ q), rel_tol=1e-8)
    # a run to the end of its Krylov space is exact: every node is an eigenvalue of H (repeated
    # eigenvalues, such as the many zeros of a small model's Hessian, appear once)
    spectrum = torch.linalg.eigvalsh(H).numpy()
    assert np.abs(one.nodes[:, None] - spectrum[None]).min(1).max() < 1e-8
    many = landscape.hessian_density(net, (x, y), iterations=10, runs=40, seed=1)
    assert math.isclose(many.moment(1), float(H.trace()) / n, rel_tol=0.15)
    assert math.isclose(many.moment(2), float((H @ H).trace()) / n, rel_tol=0.25)


def _trajectory(seed=0, count=7):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    states = []
    for e in range(count):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * (e + 1) * torch.randn_like(p))
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    return net, states


def test_pca_directions_equal_numpys_svd_and_project_the_path():
    net, states = _trajectory()
    got = landscape.trajectory_directions(net, states)
    names = [k for k, p in net.named_parameters() if p.dim() > 1]  # biases left out by default
    diffs = np.stack([np.concatenate([(s[k] - states[-1][k]).numpy().ravel() for k in names])
                      for s in states])
    _, s, vt = np.linalg.svd(diffs[:-1] - diffs[:-1].mean(0), full_matrices=False)
    np.testing.assert_allclose(got.explained, s[:2] ** 2 / (s ** 2).sum(), rtol=1e-6)
    flat = np.stack([np.concatenate([d[k].numpy().ravel() for k in names]) for d in got.directions])
    np.testing.assert_allclose(np.abs(flat @ vt[:2].T), np.eye(2), atol=1e-6)  # up to sign
    np.testing.assert_allclose(got.coordinates, diffs @ flat.T, atol=1e-6)
    assert np.allclose(got.coordinates[-1], 0) and (got.coordinates[0] >= 0).all()
    assert all(torch.count_nonzero(d["0.bias"]) == 0 for d in got.directions)
    normalized = landscape.trajectory_directions(net, states, normalize=True)
    basis = np.stack([np.concatenate([d[k].numpy().ravel() for k in names])
                      for d in normalized.directions])
    fit = np.linalg.lstsq(basis.T, diffs.T, rcond=None)[0].T  # the path's best fit in their span
    np.testing.assert_allclose(normalized.coordinates, fit, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory, epochs=14, width=8)


def test_sharpness_top_k_and_density_from_the_command_line(pair, tmp_path):
    folder = pair[0].path.parent
    result = landscape_cli("sharpness", folder, "--top-k", 3, "--density", "--density-iterations",
                           20, "--probes", 2, "--draws", 1, "--epochs", "12,14", "--skip-epochs",
                           0, "--out", tmp_path, "-q")
    assert result.returncode == 0, result.stderr
    attrs, a = read_result(tmp_path / "sharpness.h5", "sharpness")
    assert a["eigenvalues"].shape == (len(a["epoch"]), 3) and int(attrs["top_k"]) == 3
    assert np.allclose(a["density/weights"].sum(1), 1.0)
    run = pair[1]
    data = dataset_for(run, device=CPU)
    row = int(np.flatnonzero((a["run"] == 1) & (a["epoch"] == 14))[0])
    direct = landscape.hessian_eigenvalues(model_for(run, data, device=CPU),
                                           (data.train.x, data.train.y), loss="logistic",
                                           params=run.state_dict(14), k=3)
    np.testing.assert_allclose(a["eigenvalues"][row], direct, rtol=1e-3)
    assert (tmp_path / "sharpness-spectrum.png").exists()
    redrawn = landscape_cli("figures", tmp_path / "sharpness.h5", "--section", "sharpness",
                            "--out", tmp_path / "figs")
    assert redrawn.returncode == 0, redrawn.stderr
    assert any(p.name.endswith("-spectrum.png") for p in (tmp_path / "figs").iterdir())


def test_flatness_pca_surface_of_a_run_with_its_path(pair, tmp_path):
    run = pair[1]
    result = landscape_cli("flatness", run.path, "--2d", "--direction", "pca", "--points", 5,
                           "--out", tmp_path, "-q", "--vtp")
    assert result.returncode == 0, result.stderr
    (surface,) = tmp_path.glob("*.surface.h5")  # the last epoch only: the path ends there
    attrs, a = read_result(surface, "slice")
    states = [run.state_dict(e) for e in run.saved_epochs]
    model = model_for(run, dataset_for(run, device=CPU), device=CPU)
    path = landscape.trajectory_directions(model, states)
    np.testing.assert_allclose(a["path/x"], path.coordinates[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["path/y"], path.coordinates[:, 1], rtol=1e-5, atol=1e-6)
    assert a["path/epoch"].tolist() == list(run.saved_epochs)
    assert json.loads(attrs["explained_variance"]) == pytest.approx(path.explained.tolist())
    assert float(attrs["span"]) == pytest.approx(1.2 * np.abs(path.coordinates).max())
    for name, d in path.directions[0].items():
        np.testing.assert_allclose(a[f"direction/x/{name}"], d.numpy(), atol=1e-6)
    assert (tmp_path / "flatness-2d.png").exists()
    _check_vtp(surface.with_name(surface.name.removesuffix(".h5") + ".train_loss.vtp"), a)


def _check_vtp(path, a):
    piece = ET.parse(path).getroot().find("PolyData/Piece")
    ny, nx = a["train_loss"].shape
    assert int(piece.get("NumberOfPoints")) == nx * ny
    assert int(piece.get("NumberOfPolys")) == (nx - 1) * (ny - 1)
    points = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    grid_x, grid_y = np.meshgrid(a["xcoordinates"], a["ycoordinates"])
    np.testing.assert_allclose(points[:, 0], grid_x.ravel(), rtol=1e-8)
    np.testing.assert_allclose(points[:, 1], grid_y.ravel(), rtol=1e-8)
    np.testing.assert_allclose(points[:, 2], a["train_loss"].ravel(), rtol=1e-8)
    quads = np.array(piece.find("Polys/DataArray").text.split(), dtype=int).reshape(-1, 4)
    assert quads[0].tolist() == [0, 1, nx + 1, nx] and quads.max() == nx * ny - 1


def test_vtp_of_a_non_square_surface(pair, tmp_path):
    from landscape.analysis.flatness import flatness
    from landscape.measures.options import SliceOptions

    (surface,) = flatness([pair[0]], SliceOptions(points=4, y_points=3, two_d=True), tmp_path,
                          device=CPU, progress=False)
    _check_vtp(write_vtp(surface), read_result(surface, "slice")[1])


def test_flatness_along_the_top_hessian_eigenvector(pair, tmp_path):
    run = pair[0]
    result = landscape_cli("flatness", run.path, "--direction", "hessian", "--points", 3,
                           "--out", tmp_path, "-q")
    assert result.returncode == 0, result.stderr
    attrs, a = read_result(next(tmp_path.glob("*.slice.h5")), "slice")
    data = dataset_for(run, device=CPU)
    model = model_for(run, data, device=CPU)
    state = run.state_dict(run.epochs_done)
    values, (vector,) = landscape.hessian_eigenvalues(
        model, (data.train.x, data.train.y), loss="logistic", params=state, k=1, vectors=True,
        tolerance=1e-6, iterations=400)
    assert json.loads(attrs["eigenvalues"])[0] == pytest.approx(values[0], rel=1e-3)
    params, _ = parameters_of(model, state)
    expected = normalize_direction(vector, params, Normalization())
    stored = np.concatenate([a[f"direction/x/{k}"].ravel() for k in params])
    wanted = np.concatenate([expected[k].numpy().ravel() for k in params])
    cosine = stored @ wanted / (np.linalg.norm(stored) * np.linalg.norm(wanted))
    assert abs(cosine) > 0.999  # an eigenvector's sign is arbitrary


def test_spectrum_and_trajectory_directions_on_a_users_checkpoints(user_project):
    folder, _ = user_project
    user = ["--model", "usernet:make", "--data", "usernet:splits"]
    sharp = landscape_cli("sharpness", *user, "--weights", "ckpt/epoch_1[12].ckpt", "--top-k", 2,
                          "--density", "--density-iterations", 10, "--probes", 2, "--draws", 1,
                          "--skip-epochs", 0, "--out", "res", "-q")
    assert sharp.returncode == 0, sharp.stderr
    _, a = read_result(folder / "res" / "sharpness.h5", "sharpness")
    assert a["eigenvalues"].shape == (2, 2) and (folder / "res" / "sharpness-spectrum.png").exists()
    surface = landscape_cli("flatness", *user, "--weights", "ckpt/*.ckpt", "--2d", "--direction",
                            "pca", "--points", 3, "--out", "pca", "-q")
    assert surface.returncode == 0, surface.stderr
    (path,) = (folder / "pca").glob("*.surface.h5")  # around the last checkpoint only
    _, s = read_result(path, "slice")
    assert path.name == "epoch_12.surface.h5" and s["path/epoch"].tolist() == list(range(1, 13))
    assert s["path/x"][-1] == 0 and s["path/y"][-1] == 0
