"""Tracking in the trainer (landscape train --track): the tracked values equal landscape.Tracker
(the same measure functions) on the epoch's saved weights and the same rows, Adam's
preconditioned sharpness equals the measure on the saved optimizer state, every stacked member
equals that member trained alone, a killed tracked run resumes to the same numbers, and bad
input is one line with exit code 2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import WALL_CLOCK, landscape_cli, tiny_config, train_interrupted

import landscape
from landscape.config import OptimConfig, RunConfig
from landscape.config.execution import Execution
from landscape.config.tracking import TRACKABLE, TrackConfig
from landscape.measures.tracking import MEASURES, preconditioned_sharpness, step_inverse
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import train
from landscape.training.tracking import tracked_rows

pytestmark = pytest.mark.usefixtures("one_thread")

TRACK = TrackConfig(("top_eigenvalue", "trace", "gradient_amplitude"), every=2, samples=24,
                    seed=5)
QUIET = Execution(progress=False)


def test_tracked_values_equal_the_tracker_on_the_saved_weights(tmp_path):
    config = tiny_config(epochs=4, track=TRACK)  # Adam, as the synthetic recipe
    run = Run(train([config], out=tmp_path, execution=QUIET).paths[0])
    metrics, split = run.metrics(), run.dataset().train
    rows = tracked_rows(run.config, split)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(5))[:24]
    assert torch.equal(rows[1], split.y[order])  # the seeded subset of the noisy labels
    for epoch in range(5):
        if epoch % 2:
            assert all(np.isnan(metrics[name][epoch]) for name in (*TRACK.measures, "threshold"))
            continue
        tracker = landscape.Tracker(run.model(epoch), rows, measures=TRACK.measures, seed=5,
                                    loss=run.config.objective.loss)
        expected = tracker.step()
        assert {name: metrics[name][epoch] for name in TRACK.measures} == expected, epoch
    np.testing.assert_allclose(metrics["threshold"][::2], 38 / 1e-2)  # Adam: (2+2b1)/((1-b1)lr)
    assert np.isnan(metrics["preconditioned_sharpness"][0])  # no step taken yet
    model_state, optim_state = run.resume_state()  # after the last epoch: P^-1 of its last step
    group = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}
    inverse = {name: step_inverse(group, {"step": optim_state[f"{name}/step"],
                                          "exp_avg_sq": optim_state[f"{name}/exp_avg_sq"]})
               for name, _ in run.model().named_parameters()}
    assert metrics["preconditioned_sharpness"][4] == preconditioned_sharpness(
        run.model(4), rows, inverse, loss="logistic", seed=5)
    assert (metrics["track_seconds"][::2] > 0).all()


def _sgd(config: RunConfig) -> RunConfig:
    return dataclasses.replace(config, optim=OptimConfig(name="sgd", lr=0.05, batch_size=16,
                                                         epochs=config.optim.epochs))


def test_every_stacked_member_is_tracked_as_if_trained_alone(tmp_path):
    base = _sgd(tiny_config(epochs=2, dtype="float64", save="last", eval_test="best",
                            track=dataclasses.replace(TRACK, every=1)))
    # b = 0.8 is above the untrained loss (ln 2): ascent from the first step. Each seed draws
    # its own data: its own rows.
    configs = expand(base, [0.0, 0.8], [0, 1])
    stacked = train(configs, out=tmp_path / "stacked", execution=Execution(ensemble="4",
                                                                           progress=False))
    alone = train(configs, out=tmp_path / "alone", execution=Execution(ensemble="off",
                                                                       progress=False))
    values = []
    for pa, pb in zip(stacked.paths, alone.paths):
        a, b = Run(pa).metrics(), Run(pb).metrics()
        for name in (*TRACK.measures, "threshold"):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-8, err_msg=name)
        np.testing.assert_array_equal(a["threshold"], 2 / 0.05)  # plain SGD: 2 / lr
        assert "preconditioned_sharpness" not in a
        values.append(a["top_eigenvalue"][-1])
    assert len(set(values)) == len(values)  # the members really differ


def test_a_killed_tracked_sweep_resumes_to_identical_files(tmp_path, monkeypatch):
    configs = expand(tiny_config(epochs=6, save="every:2", eval_test="best", track=TRACK),
                     [0.0, 0.3], [0])
    reference = train(configs, out=tmp_path / "ref", execution=Execution(ensemble="2",
                                                                         progress=False))
    train_interrupted(configs, tmp_path / "cut", commits=2 * 4 + 1, ensemble="2",
                      monkeypatch=monkeypatch)
    assert {Run(p).status for p in (tmp_path / "cut").rglob("*.h5")} == {"running"}
    resumed = train(configs, out=tmp_path / "cut", resume=True,
                    execution=Execution(ensemble="2", progress=False))
    for pa, pb in zip(resumed.paths, reference.paths):
        a, b = Run(pa), Run(pb)
        assert a.status == b.status == "complete"
        ma, mb = a.metrics(), b.metrics()
        assert set(ma) == set(mb) >= {*TRACK.measures, "preconditioned_sharpness"}
        for name in ma:
            if name not in WALL_CLOCK:
                np.testing.assert_array_equal(ma[name], mb[name], err_msg=name)
        assert np.isfinite(ma["top_eigenvalue"][::2]).all()
        for epoch in a.saved_epochs:
            for key, value in a.state_dict(epoch).items():
                assert torch.equal(value, b.state_dict(epoch)[key]), (epoch, key)


def test_the_config_names_the_measures_and_untracked_runs_keep_their_digest():
    assert set(TRACKABLE) == set(MEASURES)
    plain = tiny_config()
    assert "track" not in plain.to_json()  # the JSON (and digest) of every earlier run
    tracked = dataclasses.replace(plain, track=TRACK).resolved()
    assert RunConfig.from_json(tracked.to_json()) == tracked
    assert dataclasses.replace(plain, track=TrackConfig("trace")).resolved().track.samples == 40


@pytest.mark.parametrize("extra, match", [
    (("--track", "sharpest"), "unknown measure to track 'sharpest'"),
    (("--track", "trace", "--track-every", "0"), "--track-every must be an integer >= 1"),
    (("--track", "trace", "--track-samples", "0"), "--track-samples must be an integer >= 1"),
    (("--track", "trace", "--track-samples", "41"), "at most the 40 training rows"),
    (("--track-every", "2"), "need --track"),
])
def test_bad_tracking_input_is_one_line(tmp_path, tiny_args, extra, match):
    result = landscape_cli("train", *tiny_args, "--epochs", "1", "--out", tmp_path, *extra)
    assert result.returncode == 2 and match in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_the_command_reports_the_cost(tmp_path, tiny_args):
    result = landscape_cli("train", *tiny_args, "--epochs", "2", "--out", tmp_path, "--track",
                           "gradient_amplitude", "--track-samples", "10", check=True)
    assert "tracked gradient_amplitude every 1 epoch(s) on 10 training rows" in result.stdout
    assert "of the training time" in result.stdout


def test_the_dynamics_figure_draws_the_stored_values(tmp_path):
    import csv

    configs = expand(_sgd(tiny_config(epochs=3, track=TRACK)), [0.0, 0.8], [0])
    runs = [Run(p) for p in train(configs, out=tmp_path, execution=QUIET).paths]
    untracked = train([tiny_config(epochs=1)], out=tmp_path / "plain", execution=QUIET).paths
    result = landscape_cli("figures", tmp_path, "--section", "dynamics", "--out",
                           tmp_path / "fig", "--format", "png", check=True)
    assert "1 run(s) left out" in result.stdout and (tmp_path / "fig" / "dynamics.png").exists()
    with open(tmp_path / "fig" / "dynamics.csv") as f:
        rows = list(csv.DictReader(f))
    for run in runs:
        mine = [r for r in rows if float(r["flood"]) == run.config.objective.flood]
        metrics = run.metrics()
        assert [int(r["epoch"]) for r in mine] == [0, 2]  # the tracked epochs
        for name in ("top_eigenvalue", "threshold"):
            assert [float(r[name]) for r in mine] == list(metrics[name][[0, 2]])
    bad = landscape_cli("figures", *untracked, "--section", "dynamics", "--out", tmp_path / "f2")
    assert bad.returncode == 2 and "--track top_eigenvalue" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_progress_line_says_what_tracking_costs(tmp_path, monkeypatch, capsys):
    import landscape.progress

    monkeypatch.setattr(landscape.progress, "LOG_EVERY", 0)  # a line every epoch (not a tty)
    train([tiny_config(epochs=2, track=TrackConfig("gradient_amplitude", samples=10))],
          out=tmp_path, execution=Execution(progress=True))
    lines = capsys.readouterr().err.splitlines()
    assert lines and "% of the training time" in lines[-1] and "tracking" in lines[-1]
