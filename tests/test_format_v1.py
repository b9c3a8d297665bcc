"""Run files of format version 1 (the first release, tests/data/v1) keep opening: in Run, info,
table and the analyses, and an unfinished one resumes in its own layout, checkpointing every
epoch as it did, to the numbers of the same run trained now from scratch."""

import shutil

import h5py
import torch
from conftest import TESTS, assert_same_metrics, landscape_cli

from landscape.config.execution import Execution
from landscape.runs.folders import find_runs
from landscape.runs.store import FORMAT_VERSION, Run
from landscape.training.planner import train

V1 = TESTS / "data" / "v1"


def test_version_1_files_open_and_read():
    assert FORMAT_VERSION == 2
    for path in find_runs([V1 / "sweep"]):
        with h5py.File(path, "r") as f:
            assert f.attrs["format_version"] == 1 and "resume/epochs" not in f
        run = Run(path)
        assert run.status == "complete" and run.epochs_done == 3
        assert run.metrics()["train_loss"].shape == (4,) and run.saved_epochs == (0, 1, 2, 3)
        assert run.resume_epochs == (2, 3)  # version 1: slot e % 2 holds epoch e
        model, optim = run.resume_state()
        assert torch.equal(model["1.weight"], run.state_dict(3)["1.weight"]) and optim
    assert Run(V1 / "sweep" / "two_gaussians-noise0.1-mlp-flood0.2-seed0.h5").snapshot_slot


def test_version_1_sweep_in_info_table_and_an_analysis(tmp_path):
    info = landscape_cli("info", V1 / "sweep", check=True)
    assert "complete" in info.stdout
    landscape_cli("table", V1 / "sweep", check=True)
    landscape_cli("gradnorm", V1 / "sweep", "--out", tmp_path / "g", "--skip-epochs", "0", check=True)
    assert (tmp_path / "g" / "gradnorm.h5").is_file()


def test_an_unfinished_version_1_run_resumes_in_its_layout(tmp_path):
    shutil.copy(V1 / "unfinished.h5", tmp_path / "unfinished.h5")
    old = Run(tmp_path / "unfinished.h5")
    assert old.status == "running" and old.epochs_done == 2 and old.resume_epochs == (1, 2)
    train([old.config], out=tmp_path, name="unfinished", resume=True,
          execution=Execution(progress=False))
    resumed = Run(tmp_path / "unfinished.h5")
    with h5py.File(resumed.path, "r") as f:
        assert f.attrs["format_version"] == 1  # continued in its own version
    fresh = Run(train([old.config], out=tmp_path / "fresh", execution=Execution(
        progress=False)).paths[0])
    assert resumed.status == "complete" and resumed.resume_epochs == (5, 6)
    assert_same_metrics(fresh, resumed, other_machine=True)  # its first epochs: the fixture's


def test_the_trainer_reproduces_the_first_release_bit_for_bit(tmp_path):
    """The stored reference: the v1 sweep was written by the first release's trainer. Training its
    configs now (one stacked chunk) gives the same metrics (float64 rows) and weights: bit for bit
    on a CPU like the one that wrote it, to float32 rounding on others (assert_same_metrics)."""
    old = [Run(p) for p in find_runs([V1 / "sweep"])]
    new = train([run.config for run in old], out=tmp_path, execution=Execution(progress=False))
    for before, path in zip(old, new.paths):
        after = Run(path)
        assert after.config == before.config and after.saved_epochs == before.saved_epochs
        assert_same_metrics(before, after, other_machine=True)
        for epoch in before.saved_epochs:
            for key, tensor in before.state_dict(epoch).items():
                torch.testing.assert_close(after.state_dict(epoch)[key], tensor, rtol=1e-6,
                                           atol=1e-6, msg=f"epoch {epoch}, {key}")
        assert (after.snapshot() is None) == (before.snapshot() is None)
