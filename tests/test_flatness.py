"""Flatness slices and surfaces of paper Sec. 5.3, the installed commands, and their bad input."""

import dataclasses
import shutil

import h5py
import numpy as np
import pytest
import torch
from analysis_runs import train_pair
from conftest import landscape_cli, tiny_config

import landscape.analysis.flatness as flatness_module
from landscape.analysis.flatness import flatness
from landscape.analysis.gradnorm import gradnorm
from landscape.analysis.loading import dataset_for, model_for, split_sources, state_at
from landscape.config import ModelConfig
from landscape.config.execution import Execution
from landscape.errors import BadInput
from landscape.flooding import per_sample_loss, predictions
from landscape.measures.bnstats import bn_statistics, statistics_model
from landscape.measures.filternorm import gaussian_directions, parameters_of
from landscape.measures.options import Normalization, SliceOptions
from landscape.measures.slices import evaluate_points
from landscape.results import read_result
from landscape.runs.store import Run
from landscape.training.planner import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory)


def _module_loss(run, state, split):
    """Loss and accuracy of the weights copied into a module: the plain, slow way."""
    data = dataset_for(run, device=CPU)
    module = model_for(run, data, device=CPU)
    module.load_state_dict(state)
    s = data.split(split)
    with torch.no_grad():
        logits = module(s.x)[None]
    loss = run.config.objective.loss
    return (float(per_sample_loss(logits, s.y, loss).mean()),
            float((predictions(logits, loss) == s.y).double().mean()))


def test_slice_at_zero_is_each_checkpoints_own_loss(pair, tmp_path):
    paths = flatness(pair, SliceOptions(points=5), tmp_path, device=CPU, progress=False)
    assert [read_result(p, "slice")[0]["which"] for p in paths] == ["last", "snapshot", "last"]
    for path in paths:
        attrs, a = read_result(path, "slice")
        run = Run(attrs["run"])
        assert a["xcoordinates"][2] == 0.0 and a["train_loss"].shape == (5,)
        if attrs["which"] == "last":
            metrics = run.metrics()
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert np.isclose(a[key][2], metrics[key][-1], rtol=1e-5), (path.name, key)
        else:
            for split in ("train", "test"):
                loss, acc = _module_loss(run, run.snapshot().state, split)
                assert np.isclose(a[f"{split}_loss"][2], loss, rtol=1e-5)
                assert np.isclose(a[f"{split}_acc"][2], acc)
        assert attrs["direction_seed"] == 0 and attrs["bn_stats"] == "checkpoint"
        assert attrs["test_points"] == 200 and attrs["normalization"] == "filter"


def _directions(run, state, seed=0, count=1):
    template = model_for(run, dataset_for(run, device=CPU), device=CPU)
    params, _ = parameters_of(template, state)
    return template, gaussian_directions(params, seed, Normalization(), count=count)


def test_batched_slice_equals_a_weight_copy_loop(pair):
    run = pair[1]
    state = state_at(run, "last", device=CPU)
    template, directions = _directions(run, state)
    alphas = np.linspace(-1, 1, 7)[:, None]
    data = dataset_for(run, device=CPU)
    stacked = evaluate_points(template, state, directions, alphas, split_sources(data), "logistic", members=4)
    looped = evaluate_points(template, state, directions, alphas, split_sources(data), "logistic", members=1)
    for i, (alpha,) in enumerate(alphas):
        copied = {k: v + alpha * directions[0][k] if k in directions[0] else v
                  for k, v in state.items()}
        for split in ("train", "test"):
            loss, acc = _module_loss(run, copied, split)
            for got in (stacked, looped):
                assert np.isclose(got[f"{split}_loss"][i], loss, rtol=1e-5)
                assert np.isclose(got[f"{split}_acc"][i], acc)


def test_surface_grid_is_y_by_x_and_its_x_axis_is_the_slice(pair, tmp_path):
    plain = [pair[0]]
    (line,) = flatness(plain, SliceOptions(points=5), tmp_path / "1d", device=CPU,
                       progress=False)
    options = SliceOptions(points=5, y_points=3, two_d=True)
    (surface,) = flatness(plain, options, tmp_path / "2d", device=CPU, progress=False)
    _, a = read_result(surface, "slice")
    _, b = read_result(line, "slice")
    assert a["train_loss"].shape == (3, 5) and list(a["ycoordinates"]) == [-1, 0, 1]
    np.testing.assert_allclose(a["test_loss"][1], b["test_loss"], rtol=1e-6)  # beta = 0 row
    state = state_at(pair[0], "last", device=CPU)
    template, directions = _directions(pair[0], state, count=2)
    corner = evaluate_points(template, state, directions, np.array([[0.5, -1.0]]),
                             split_sources(dataset_for(pair[0], device=CPU)), "logistic",
                             members=1)
    assert np.isclose(a["test_loss"][0, 3], corner["test_loss"][0], rtol=1e-6)  # (x=0.5, y=-1)


def test_surfaces_resume_and_stale_files_are_refused(pair, tmp_path, monkeypatch):
    options = SliceOptions(points=4, two_d=True)
    (path,) = flatness([pair[0]], options, tmp_path, device=CPU, progress=False)
    _, full = read_result(path, "slice")
    with h5py.File(path, "r+") as f:  # as if killed after part of the grid
        for key in ("train_loss", "test_acc"):
            f[key][2:, 1] = np.nan
    evaluated = []
    original = flatness_module.evaluate_points
    monkeypatch.setattr(flatness_module, "evaluate_points",
                        lambda *a, **k: evaluated.append(len(a[3])) or original(*a, **k))
    flatness([pair[0]], options, tmp_path, device=CPU, progress=False)
    assert sum(evaluated) == 2
    _, resumed = read_result(path, "slice")
    for key in ("train_loss", "test_acc"):
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-6)
    other = dataclasses.replace(options, direction_seed=1)
    with pytest.raises(BadInput, match="other parameters.*direction_seed"):
        flatness([pair[0]], other, tmp_path, device=CPU, progress=False)
    flatness([pair[0]], other, tmp_path, device=CPU, overwrite=True, progress=False)
    assert read_result(path, "slice")[0]["direction_seed"] == 1


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    config = dataclasses.replace(tiny_config(epochs=3), model=ModelConfig("mlp_bn", depth=2,
                                                                          width=16))
    (path,) = train([config], out=tmp_path_factory.mktemp("bn"),
                    execution=Execution(device="cpu", progress=False)).paths
    return Run(path)


def test_bn_running_statistics_are_never_perturbed(bn_run):
    state = state_at(bn_run, "last", device=CPU)
    before = {k: v.clone() for k, v in state.items()}
    template, directions = _directions(bn_run, state)
    data = dataset_for(bn_run, device=CPU)
    alphas = np.array([[-0.5], [0.0], [0.5]])
    kept = evaluate_points(template, state, directions, alphas, split_sources(data), "logistic", members=2)
    recomputed = evaluate_points(template, state, directions, alphas, split_sources(data), "logistic", members=2, bn_stats="recompute")
    for key, value in before.items():
        assert torch.equal(state[key], value), key
        if "running" in key:
            assert torch.count_nonzero(directions[0].get(key, torch.zeros(1))) == 0
    assert np.isclose(kept["train_loss"][1], bn_run.metrics()["train_loss"][-1], rtol=1e-5)
    assert not np.allclose(kept["train_loss"], recomputed["train_loss"])
    params, buffers = parameters_of(template, state)
    fresh = bn_statistics(statistics_model(template), params, buffers,
                          split_sources(data)["train"], rows=1000)
    hidden = data.train.x @ params["1.weight"].T                # the first BN layer's input
    torch.testing.assert_close(fresh["2.running_mean"], hidden.mean(0))
    torch.testing.assert_close(fresh["2.running_var"], hidden.var(0))


def test_installed_commands_end_to_end(pair, tmp_path):
    folder = pair[0].path.parent
    out = tmp_path / "figs"
    slices = landscape_cli("flatness", folder, "--points", "5", "--out", out, "-q", check=True)
    assert slices.stdout.count(".slice.h5") == 3 and (out / "flatness.pdf").is_file()
    assert (out / "flatness.png").is_file() and (out / "flatness.csv").is_file()
    grads = landscape_cli("gradnorm", folder, "--out", out, "--skip-epochs", "2", "-q", check=True)
    assert (out / "gradnorm.h5").is_file() and (out / "gradnorm.pdf").is_file()
    assert "gradnorm.png" in grads.stdout


def test_bad_input_is_one_line_and_exit_2(pair, tmp_path):
    no_snapshot = tmp_path / "runs" / "no-snapshot.h5"
    no_snapshot.parent.mkdir()
    shutil.copy(pair[1].path, no_snapshot)
    with h5py.File(no_snapshot, "r+") as f:  # as a flooded run whose loss never fell below b
        f["snapshot/step"][()] = -1
    # the model that is there is sliced; the missing snapshot is named in one line
    missing = landscape_cli("flatness", no_snapshot, "--points", "3", "--out", tmp_path / "some")
    assert missing.returncode == 0, missing.stderr
    note = missing.stderr.strip().splitlines()
    assert len(note) == 1 and "no first-below-flood snapshot" in note[0], missing.stderr
    assert [p.name for p in (tmp_path / "some").glob("*.h5")] == [
        f"{pair[1].name}.last.slice.h5"]
    narrow = train([tiny_config(epochs=1, width=8)], out=tmp_path / "runs",
                   execution=Execution(device="cpu", progress=False)).paths[0]
    for analysis in (lambda runs: flatness(runs, SliceOptions(points=3), tmp_path, device=CPU),
                     lambda runs: gradnorm(runs, tmp_path / "g.h5", device=CPU)):
        with pytest.raises(BadInput, match="different architectures"):
            analysis([pair[0], Run(narrow)])
    assert not list(tmp_path.glob("*.h5"))  # nothing half-written
    with pytest.raises(BadInput, match="--points must be >= 2"):  # a slice has two ends
        SliceOptions(points=1)
