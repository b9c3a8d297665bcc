"""Issue 13 with real processes: SIGTERM and SIGINT stop a trainer cleanly with the resume hint,
and readers polling beside a stacked sweep neither break it nor change its numbers."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import TINY_TRAIN_ARGS, installed_command, tiny_config

from landscape.config.execution import Execution
from landscape.errors import BadInput
from landscape.runs.folders import find_runs
from landscape.runs.inspect import describe_paths
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import train

DEADLINE = 300  # seconds: only a hung process gets near it
# Tiny models: one thread each, or OpenMP's spinning on a busy 2-core machine costs 10x.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait_for(condition, process):
    start = time.monotonic()
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() - start < DEADLINE
        time.sleep(0.05)


def _committed(path, epochs):
    def check():
        try:
            return path.exists() and Run(path).epochs_done >= epochs
        except BadInput:  # between creation and the first commit
            return False
    return check


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_stops_training_cleanly_with_the_resume_hint(tmp_path, sig, code, word):
    # Far more epochs than any machine trains before the signal: the outcome does not depend
    # on its speed.
    path = tmp_path / "r.h5"
    trainer = subprocess.Popen(installed_command() + [
        "train", *TINY_TRAIN_ARGS, "--epochs", "100000", "--save", "none", "--out", tmp_path,
        "--name", "r", "--checkpoint-every", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(_committed(path, 2), trainer)
    trainer.send_signal(sig)
    _, err = trainer.communicate(timeout=DEADLINE)
    assert trainer.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "--resume" in lines[0], err
    run = Run(path)
    assert run.status == "running" and not run.in_progress and run.epochs_done >= 2
    model, optim = run.resume_state()
    assert model and optim
    assert not list(tmp_path.glob("*.partial"))


def test_readers_polling_beside_a_stacked_sweep(tmp_path, one_thread):
    args = [*TINY_TRAIN_ARGS, "--epochs", "20", "--flood", "0", "0.2", "0.4", "--seeds", "2",
            "--ensemble", "6", "--save-every", "10"]
    trainer = subprocess.Popen(installed_command() + ["train", *args, "--out", tmp_path / "live",
                                                      "--name", "sw"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    folder, reads = tmp_path / "live" / "sw", 0
    while trainer.poll() is None or reads == 0:
        try:
            describe_paths([folder])
            for path in find_runs([folder]):
                if path.exists():
                    Run(path).metrics()
        except BadInput as err:  # the folder or its files not made yet
            assert "no such file or folder" in str(err) or "no run files" in str(err), err
        reads += 1
        time.sleep(0.01)  # leave the trainer a core
    _, err = trainer.communicate()
    assert trainer.returncode == 0, err
    reference = train(expand(tiny_config(epochs=20, save="every:10", eval_test="best"),
                             [0.0, 0.2, 0.4], [0, 1]),
                      out=tmp_path / "ref", execution=Execution(ensemble="6", progress=False))
    for path in reference.paths:
        live, ref = Run(folder / path.name), Run(path)
        assert live.status == "complete"
        for name, values in ref.metrics().items():
            if name != "seconds":
                np.testing.assert_array_equal(live.metrics()[name], values, err_msg=name)
