import dataclasses
import math
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS, landscape_cli, tiny_config
from torch.func import functional_call

from landscape.data import load
from landscape.errors import BadInput
from landscape.flooding import per_sample_loss
from landscape.models import build_model
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.loop import epoch_generator
from landscape.training.planner import train


def _comparable(run: Run) -> dict[str, np.ndarray]:
    return {k: v for k, v in run.metrics().items() if k != "seconds"}


def test_same_seed_gives_identical_runs(tmp_path):
    config = tiny_config(flood=0.2)
    a = Run(train([config], out=tmp_path / "a").paths[0])
    b = Run(train([config], out=tmp_path / "b").paths[0])
    for name, values in _comparable(a).items():
        np.testing.assert_array_equal(values, _comparable(b)[name], err_msg=name)
    for epoch in a.saved_epochs:
        for key, t in a.state_dict(epoch).items():
            assert torch.equal(t, b.state_dict(epoch)[key])


def test_initial_weights_and_metrics_of_epoch_zero(tmp_path):
    config = tiny_config().resolved()
    run = Run(train([config], out=tmp_path).paths[0])
    init = build_model(config.model, (10,), 1, seed=config.seed).state_dict()
    for key, t in run.state_dict(0).items():
        assert torch.equal(t, init[key])
    # epoch 0's test loss, recomputed independently from the stored initial weights
    data = load(config.data)
    model = build_model(config.model, (10,), 1)
    logits = functional_call(model, run.state_dict(0), (data.test.x,))
    expected = per_sample_loss(logits, data.test.y, "logistic").mean()
    assert math.isclose(run.metric("test_loss")[0], float(expected), rel_tol=1e-6)
    assert run.status == "complete" and run.epochs_done == config.optim.epochs
    assert len(run.flipped("train")) == 4


def test_flooded_training_loss_floats_around_b(tmp_path):
    base = tiny_config(epochs=150, width=32, noise=0.1)
    plain, flooded = (Run(p) for p in train(expand(base, [0.0, 0.3], [0]), out=tmp_path).paths)
    tail_plain = plain.metric("train_loss")[-30:]
    tail_flooded = flooded.metric("train_loss")[-30:]
    assert tail_plain.max() < 0.05
    assert abs(tail_flooded.mean() - 0.3) < 0.05
    assert flooded.metric("ascent_fraction")[-30:].mean() > 0.2  # it does go below b and back
    assert plain.metric("ascent_fraction")[1:].max() == 0


def test_snapshot_is_the_first_step_below_b(tmp_path):
    config = tiny_config(flood=0.4, epochs=40).resolved()
    run = Run(train([config], out=tmp_path).paths[0])
    snap = run.snapshot()
    assert snap is not None and snap.batch_loss < 0.4
    # Recompute that step's mini-batch loss from the snapshot's weights and the batch order.
    data = load(config.data)
    steps = math.ceil(len(data.train) / config.optim.batch_size)
    epoch, step = divmod(snap.step - 1, steps)
    assert epoch + 1 == snap.epoch
    order = torch.randperm(len(data.train), generator=epoch_generator(config.seed, snap.epoch, 1))
    batch = order[step * config.optim.batch_size:(step + 1) * config.optim.batch_size]
    model = build_model(config.model, (10,), 1)
    logits = functional_call(model, snap.state, (data.train.x[batch],))
    loss = per_sample_loss(logits, data.train.y[batch], "logistic").mean()
    assert math.isclose(float(loss), snap.batch_loss, rel_tol=1e-5)
    # Every earlier epoch's mean batch loss stayed above b (none went below it before).
    assert np.all(run.metric("batch_loss")[1:snap.epoch] >= 0.4)


def test_eval_test_best_measures_test_only_where_needed(tmp_path):
    config = tiny_config(epochs=20, eval_test="best", save="epochs:5")
    run = Run(train([config], out=tmp_path).paths[0])
    test_acc, val_acc = run.metric("test_acc"), run.metric("val_acc")
    measured = np.isfinite(test_acc)
    new_best = val_acc > np.maximum.accumulate(np.r_[-np.inf, val_acc[:-1]])
    expected = new_best.copy()
    expected[[5, 20]] = True
    np.testing.assert_array_equal(measured, expected)


def test_divergence_is_recorded_and_exits_1(tmp_path):
    result = landscape_cli("train", *TINY_TRAIN_ARGS, "--optimizer", "sgd", "--lr", "1e6",
                           "--momentum", "0.9", "--epochs", "30", "--out", tmp_path)
    assert result.returncode == 1
    assert "diverged" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    run = Run(next(tmp_path.glob("*.h5")))
    assert run.status == "diverged" and run.epochs_done < 30
    assert np.all(np.isfinite(run.metric("train_loss")))  # the committed rows are the good ones


# A trainer that SIGKILLs itself a moment (DELAY s) after its COMMIT-th epoch commit: a real kill,
# mid-epoch, mid-write or between epochs, at an epoch chosen by the test, not by the machine's speed.
SELF_KILLING_TRAINER = """
import os, signal, sys, threading
from landscape.training import recording
from landscape.runs.writer import RunWriter
commit, delay = int(sys.argv[1]), float(sys.argv[2])
write, done = RunWriter.commit, []
recording.METRICS_EVERY = 0  # a commit every epoch: kills land at epochs the test chooses

def write_and_die_soon(self, *args, **kwargs):
    done.append(None)
    if len(done) == commit:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return write(self, *args, **kwargs)

RunWriter.commit = write_and_die_soon
sys.argv = ["landscape", *sys.argv[3:]]
from landscape.cli import main
main()
"""


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    args = (*TINY_TRAIN_ARGS, "--flood", "0.3", "--epochs", "300", "--save-every", "7")
    landscape_cli("train", *args, "--out", tmp_path / "ref", check=True)
    reference = Run(next((tmp_path / "ref").glob("*.h5")))

    rng = random.Random(0)
    kills = [(rng.randint(1, 60), rng.uniform(0.0, 0.005)) for _ in range(3)]
    for commit, delay in kills + [(0, 0.0)]:  # commit 0: never killed, trains what is left
        proc = subprocess.run([sys.executable, "-c", SELF_KILLING_TRAINER, str(commit), str(delay),
                               "train", *args, "--out", str(tmp_path / "killed"), "--resume"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.returncode == (-signal.SIGKILL if commit else 0), proc.stderr
        files = list((tmp_path / "killed").glob("*.h5"))
        run = Run(files[0])  # opens after every kill
        assert run.status == ("running" if commit else "complete")
    resumed = Run(files[0])
    assert resumed.status == "complete"
    for name, values in _comparable(reference).items():
        np.testing.assert_array_equal(values, _comparable(resumed)[name], err_msg=name)
    assert resumed.saved_epochs == reference.saved_epochs
    for epoch in reference.saved_epochs:
        for key, t in reference.state_dict(epoch).items():
            assert torch.equal(t, resumed.state_dict(epoch)[key]), (epoch, key)
    assert resumed.snapshot().step == reference.snapshot().step


def test_resume_refuses_a_different_config(tmp_path):
    config = tiny_config()
    train([config], out=tmp_path)
    with pytest.raises(BadInput, match="different run"):
        train([dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=0.5))],
              out=tmp_path, resume=True)
