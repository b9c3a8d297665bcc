"""Gradient amplitude of paper Sec. 5.2 against a slow reference, and its figure."""

import math

import numpy as np
import pytest
import torch
from analysis_runs import train_pair

from landscape.analysis.gradnorm import gradnorm, run_amplitudes
from landscape.analysis.loading import dataset_for, model_for
from landscape.analysis.selection import early_stopping_epoch
from landscape.errors import BadInput
from landscape.figures.gradnorm import plot_gradnorm
from landscape.flooding import per_sample_loss
from landscape.measures.evaluation import mean_loss
from landscape.measures.options import Normalization
from landscape.measures.sources import as_source
from landscape.measures.stack import Ensemble
from landscape.results import read_result

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory)


def _slow_amplitude(run, epoch, split, *, mode, include_biasbn):
    """Independent of the library's path: a module with the epoch's weights loaded, the whole split
    in one batch, autograd per parameter, filter norms taken row by row by hand."""
    data = dataset_for(run, device=CPU)
    module = model_for(run, data, device=CPU)
    module.load_state_dict(run.state_dict(epoch))
    s = data.split(split)
    loss = per_sample_loss(module(s.x)[None], s.y, run.config.objective.loss).mean()
    total = 0.0
    for name, theta in module.named_parameters():
        (g,) = torch.autograd.grad(loss, theta, retain_graph=True)
        theta = theta.detach()
        if theta.dim() == 1:
            if include_biasbn:
                total += float((g * theta.norm()).square().sum())
            continue
        if mode == "layer":
            total += float((g * theta.norm()).square().sum())
            continue
        for f in range(theta.shape[0]):
            total += float((g[f] * theta[f].norm()).square().sum())
    return math.sqrt(total), float(loss.detach())


@pytest.mark.parametrize("mode,include", [("filter", False), ("layer", True)])
def test_amplitude_equals_a_slow_reference(pair, mode, include):
    run = pair[1]
    epochs = [0, 4, 10]
    got = run_amplitudes(run, device=CPU, normalization=Normalization(mode, include),
                         epochs=epochs, progress=False)
    for i, epoch in enumerate(epochs):
        for split in ("train", "test"):
            amp, loss = _slow_amplitude(run, epoch, split, mode=mode, include_biasbn=include)
            assert math.isclose(got[f"{split}_grad"][i], amp, rel_tol=1e-4), (epoch, split)
            assert math.isclose(got[f"{split}_loss"][i], loss, rel_tol=1e-5)
    metrics = run.metrics()
    np.testing.assert_allclose(got["test_loss"], metrics["test_loss"][epochs], rtol=1e-5)
    np.testing.assert_allclose(got["test_acc"], metrics["test_acc"][epochs])


def test_chunked_and_stacked_gradients_equal_one_pass(pair):
    run = pair[0]
    data = dataset_for(run, device=CPU)
    template = model_for(run, data, device=CPU)
    states = [run.state_dict(e) for e in (3, 9)]
    together = Ensemble(template, states, device=CPU, dtype=torch.float32)
    test = as_source(data.test, device=CPU, dtype=None)
    loss_chunks, acc_chunks, g_chunks = mean_loss(together, test, "logistic", 7,
                                                   gradients=True)
    for k, state in enumerate(states):
        alone = Ensemble(template, [state], device=CPU, dtype=torch.float32)
        loss_one, acc_one, g_one = mean_loss(alone, test, "logistic", 10_000, gradients=True)
        plain = mean_loss(alone, test, "logistic", 10_000)
        assert plain[2] is None and plain[0] == loss_one[0] and plain[1] == acc_one[0]
        for name in g_one:
            torch.testing.assert_close(g_chunks[name][k], g_one[name][0], rtol=1e-4, atol=1e-7)
        assert math.isclose(loss_chunks[k], loss_one[0], rel_tol=1e-6)
        assert acc_chunks[k] == acc_one[0]


def test_result_file_and_figure(pair, tmp_path):
    path = gradnorm(pair, tmp_path / "g.h5", device=CPU, splits=("test",), progress=False)
    attrs, a = read_result(path, "gradnorm")
    assert attrs["normalization"] == "filter" and attrs["biasbn"] == "excluded"
    assert len(a["epoch"]) == 2 * 11 and set(a["run"]) == {0, 1}
    assert np.isnan(a["train_grad"]).all() and np.isfinite(a["test_grad"]).all()
    assert list(a["early_stopping_epoch"]) == [early_stopping_epoch(r.metric("val_acc"))
                                               for r in pair]
    files = plot_gradnorm(path, tmp_path / "fig", ("png",), skip_epochs=2)
    assert [f.suffix for f in files] == [".png", ".csv"] and all(f.stat().st_size for f in files)
    csv = files[1].read_text().splitlines()
    early = sum(int(e) <= 2 for e in a["marked_epoch"])  # markers drawn even in skipped epochs
    assert csv[0].startswith("run,flood,epoch") and len(csv) == 1 + 2 * 8 + early  # epochs 3..10


def test_a_subset_of_epochs_keeps_the_early_stopping_epoch(pair, tmp_path):
    path = gradnorm(pair, tmp_path / "g.h5", device=CPU, splits=("train",), epochs=[10],
                    progress=False)
    _, a = read_result(path, "gradnorm")
    for r, run in enumerate(pair):
        stop = early_stopping_epoch(run.metric("val_acc"))
        assert sorted(a["epoch"][a["run"] == r]) == sorted({10, stop})
        assert a["marked_epoch"][r] == stop


def test_unsaved_epochs_are_bad_input(pair):
    with pytest.raises(BadInput, match="epoch.*99.*not saved"):
        run_amplitudes(pair[0], device=CPU, normalization=Normalization(), epochs=[99])
