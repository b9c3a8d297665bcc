"""Sweeps over the learning rate and the weight decay stack (issue 24, item 2): such members train
in one chunk, each at its own rate, schedule and decay (training/optimizer.py), and equal the same
config trained alone, with SGD + momentum and with Adam; a killed stacked lr sweep resumes to
identical files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WALL_CLOCK, tiny_config, train_interrupted

from landscape.config import OptimConfig
from landscape.config.execution import Execution
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import plan_chunks, train

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
# A milestone inside the run: each member's schedule (lr_at) applies to its own rate.
SGD = OptimConfig("sgd", lr=0.05, momentum=0.9, milestones=(3,), gamma=0.5, batch_size=16,
                  epochs=5)
ADAM = OptimConfig("adam", lr=1e-2, milestones=(3,), gamma=0.5, batch_size=16, epochs=5)
AXES = {"lr": {"lr": [0.3, 1.0]},                         # as factors of the recipe's rate
        "weight_decay": {"weight_decay": [0.0, 1e-2]},
        "both": {"lr": [0.3, 1.0], "weight_decay": [0.0, 1e-2]}}


def _sweep(optim: OptimConfig, axes: dict[str, list[float]], **overrides):
    """Flood levels x seeds x the axes, float64 (every member its own data draw). b = 0.8 is
    above the untrained loss (ln 2): ascent from the first step, where b = 0.3 would train as 0."""
    base = tiny_config(dtype="float64", save="every:2", eval_test="best", optim=optim,
                       **overrides)
    if "lr" in axes:
        axes = {**axes, "lr": [optim.lr * f for f in axes["lr"]]}
    return [c.resolved(sweep=True) for c in expand(base, [0.0, 0.8], [0, 1], **axes)]


@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
def test_learning_rate_and_weight_decay_axes_plan_one_chunk(axes):
    configs = _sweep(SGD, axes)
    items = [(Path(f"{i}.h5"), c, "fresh") for i, c in enumerate(configs)]
    assert [len(c) for c in plan_chunks(items, None, CPU, 1)] == [len(configs)]
    # other axes still train apart: a batch size changes the steps of an epoch
    other = _sweep(SGD, {**axes, "batch_size": [8, 16]})
    items = [(Path(f"{i}.h5"), c, "fresh") for i, c in enumerate(other)]
    assert [len(c) for c in plan_chunks(items, None, CPU, 1)] == [len(configs)] * 2


def _assert_same_files(paths_a, paths_b, *, rtol: float) -> None:
    """Every metric but the wall-clock ones, the saved weights and the last resume state
    (weights and optimizer state) agree to rtol (atol rtol / 100 for values near 0; 0: equal)."""
    for pa, pb in zip(paths_a, paths_b):
        a, b = Run(pa), Run(pb)
        assert a.status == b.status == "complete"
        ma, mb = a.metrics(), b.metrics()
        for name in ma.keys() - WALL_CLOCK:
            np.testing.assert_allclose(ma[name], mb[name], rtol=rtol, atol=rtol / 100,
                                       err_msg=f"{a.name}: {name}")
        states = [(a.state_dict(e), b.state_dict(e)) for e in a.saved_epochs]
        states += list(zip(a.resume_state(), b.resume_state()))  # the optimizer's: not rescaled
        for sa, sb in states:
            assert sa.keys() == sb.keys() and sa
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=rtol / 100,
                                           msg=f"{a.name}: {key}")


@pytest.mark.parametrize("optim", [SGD, ADAM], ids=["sgd_momentum", "adam"])
@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
def test_members_of_other_rates_and_decays_equal_their_runs_alone(tmp_path, optim, axes):
    configs = _sweep(optim, axes)
    stacked = train(configs, out=tmp_path / "stacked",
                    execution=Execution(ensemble="16", progress=False))
    alone = train(configs, out=tmp_path / "alone",
                  execution=Execution(ensemble="off", progress=False))
    # Tolerance: both are float64. A stacked member differs from its run alone by rounding only:
    # vmapped against single matmuls (as every stacked sweep, tests/test_ensemble.py), its decay
    # added to the gradient rather than inside torch's step, and its move rescaled from the
    # chunk's largest rate, p_old + s (p_step - p_old), which adds about eps |p| ~ 1e-16 |p| a
    # step. Measured: at most 8e-15 (SGD) and 9e-14 (Adam) relative, in weights and losses, the
    # same as a sweep over flood levels alone. rtol 1e-10 (atol 1e-12 for values near 0) is
    # tests/test_ensemble.py's bound, far below what a wrong rate or decay changes (dropping the
    # rescaling or the per-member decay fails it at the first compared epoch).
    _assert_same_files(stacked.paths, alone.paths, rtol=1e-10)
    for path in stacked.paths:  # the per-epoch rate is the member's own, on its own schedule
        run = Run(path)
        assert list(run.metric("lr")) == [run.config.optim.lr_at(max(e, 1)) for e in range(6)]
    finals = {Run(p).metric("train_loss")[-1] for p in stacked.paths}
    assert len(finals) == len(configs)  # every member trained differently


def test_a_stacked_member_is_tracked_at_its_own_rate(tmp_path):
    from landscape.config.tracking import TrackConfig

    configs = _sweep(dataclasses.replace(SGD, epochs=2), AXES["lr"],
                     track=TrackConfig(("top_eigenvalue",), every=2, samples=24))
    stacked = train(configs, out=tmp_path / "stacked",
                    execution=Execution(ensemble="16", progress=False))
    alone = train(configs, out=tmp_path / "alone",
                  execution=Execution(ensemble="off", progress=False))
    for pa, pb in zip(stacked.paths, alone.paths):
        a, b = Run(pa).metrics(), Run(pb).metrics()
        lr = Run(pa).config.optim.lr
        # heavy-ball SGD's (2 + 2 beta) / lr, to the rounding of two divisions (threshold at
        # the chunk's largest rate, over s_k)
        np.testing.assert_allclose(a["threshold"][::2], (2 + 2 * 0.9) / lr, rtol=1e-14)
        np.testing.assert_allclose(a["top_eigenvalue"], b["top_eigenvalue"], rtol=1e-8)


def test_a_killed_stacked_lr_sweep_resumes_to_identical_files(tmp_path, monkeypatch):
    configs = _sweep(ADAM, AXES["both"])
    reference = train(configs, out=tmp_path / "ref",
                      execution=Execution(ensemble="16", progress=False))
    n = len(configs)
    # killed in epoch 3, after 5 of its n commits: 5 members have committed epoch 3, the rest 2
    train_interrupted(configs, tmp_path / "cut", commits=3 * n + 5, ensemble="16",
                      monkeypatch=monkeypatch)
    done = sorted(Run(p).epochs_done for p in (tmp_path / "cut").rglob("*.h5"))
    assert done == [2] * (n - 5) + [3] * 5
    resumed = train(configs, out=tmp_path / "cut", resume=True,
                    execution=Execution(ensemble="16", progress=False))
    _assert_same_files(resumed.paths, reference.paths, rtol=0)
