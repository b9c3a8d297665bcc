"""Issue 22, what a new user met on the training side: a run that differs only in settings its
file name leaves out (the width, the epochs) is refused naming them; a finished run continues to
more epochs (`--epochs 20 --resume`) to what a run of 20 epochs from scratch holds; a finished
run's file can leave out its resume state (`--drop-resume-state`)."""

import dataclasses

import h5py
import pytest
import torch
from conftest import TINY_TRAIN_ARGS, assert_same_metrics, landscape_cli, tiny_config

from landscape.config import ObjectiveConfig
from landscape.config.execution import Execution
from landscape.errors import BadInput
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import train

pytestmark = pytest.mark.usefixtures("one_thread")  # bit for bit on this machine, one thread
QUIET = Execution(progress=False)


def _longer(config, epochs):
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs=epochs))


def _assert_same_runs(expected: Run, got: Run) -> None:
    assert got.config == expected.config and got.status == expected.status == "complete"
    assert_same_metrics(expected, got)
    assert got.saved_epochs == expected.saved_epochs
    for epoch in expected.saved_epochs:
        for key, tensor in expected.state_dict(epoch).items():
            assert torch.equal(tensor, got.state_dict(epoch)[key]), (epoch, key)
    a, b = expected.snapshot(), got.snapshot()
    assert (a is None) == (b is None)
    if a is not None:
        assert (a.step, a.epoch, a.batch_loss) == (b.step, b.epoch, b.batch_loss)
        assert all(torch.equal(t, b.state[k]) for k, t in a.state.items())


SGD = dict(name="sgd", lr=0.05, momentum=0.9, milestones=(6, 15))


@pytest.mark.parametrize("base, floods", [
    (tiny_config(), (0.2,)),                                         # Adam, every epoch kept
    (dataclasses.replace(tiny_config(), save="last", eval_test="best",
                         optim=dataclasses.replace(tiny_config().optim, **SGD)), (0.0, 0.3)),
    # b moves before epoch 10 and after it: the level's state continues from the metrics
    (dataclasses.replace(tiny_config(noise=0.0), save="every:4", optim=dataclasses.replace(
        tiny_config().optim, lr=0.1), objective=ObjectiveConfig(
        schedule="adaptive", schedule_step=0.05, schedule_threshold=0.0)), (0.0,)),
], ids=["adam", "sgd-sweep-last-best", "adaptive"])  # the 2nd clears epoch 10's test metrics
def test_a_finished_run_continues_to_more_epochs_as_if_trained_so(tmp_path, base, floods):
    short = expand(_longer(base, 10), floods, [0])
    long = expand(_longer(base, 20), floods, [0])
    scratch = train(long, out=tmp_path / "scratch", execution=QUIET)
    train(short, out=tmp_path / "extended", execution=QUIET)
    extended = train(long, out=tmp_path / "extended", execution=QUIET, resume=True)
    assert extended.statuses == ("complete",) * len(floods)
    for expected, got in zip(scratch.paths, extended.paths):
        _assert_same_runs(Run(expected), Run(got))


def test_the_command_continues_a_finished_run_with_resume(tmp_path):
    args = ("train", *TINY_TRAIN_ARGS, "--flood", "0.2", "--save", "all")
    landscape_cli(*args, "--epochs", "20", "--out", tmp_path / "scratch", check=True)
    landscape_cli(*args, "--epochs", "10", "--out", tmp_path / "extended", check=True)
    name = "two_gaussians-noise0.1-mlp-flood0.2-seed0.h5"
    path = tmp_path / "extended" / name
    before = path.read_bytes()
    refused = landscape_cli(*args, "--epochs", "20", "--out", tmp_path / "extended")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "holds this run with 10 epochs; pass --resume to continue it to 20" in refused.stderr
    assert path.read_bytes() == before
    result = landscape_cli(*args, "--epochs", "20", "--resume", "--out", tmp_path / "extended",
                           check=True)
    assert "complete, epoch 20 of 20" in result.stdout
    _assert_same_runs(Run(tmp_path / "scratch" / name), Run(path))


@pytest.mark.parametrize("change, named", [
    (("--width", "8"), "model.width 16 -> 8"),
    (("--epochs", "5"), "optim.epochs 10 -> 5"),                     # never shortened
    (("--lr", "0.02", "--epochs", "20"), "optim.epochs 10 -> 20, optim.lr 0.01 -> 0.02")])
def test_another_run_of_the_same_name_is_refused_naming_what_differs(tmp_path, change, named):
    args = ("train", *TINY_TRAIN_ARGS, "--out", tmp_path)
    landscape_cli(*args, "--epochs", "10", check=True)
    (path,) = tmp_path.glob("*.h5")
    before = path.read_bytes()
    refused = landscape_cli(*args, "--epochs", "10", *change, "--resume")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert f"holds a different run ({named}, the file's -> asked)" in refused.stderr
    assert "--name" in refused.stderr and "--overwrite" in refused.stderr
    assert path.read_bytes() == before


@pytest.mark.parametrize("config, epochs, why", [
    (dataclasses.replace(tiny_config(), save="log"), (20, 40),
     "--save log keeps other epochs before epoch 20 in a run of 40 epochs"),
    (tiny_config(objective=ObjectiveConfig(kind="adaflood", adaflood_folds=2)), (10, 20),
     "AdaFlood's auxiliary models train for the run's number of epochs")])
def test_runs_whose_first_epochs_depend_on_the_total_are_not_continued(tmp_path, config, epochs,
                                                                       why):
    (path,) = train([_longer(config, epochs[0])], out=tmp_path, execution=QUIET).paths
    before = path.read_bytes()
    with pytest.raises(BadInput, match=f"cannot be continued to {epochs[1]}: {why}"):
        train([_longer(config, epochs[1])], out=tmp_path, execution=QUIET, resume=True)
    assert path.read_bytes() == before


def test_a_run_without_its_resume_state_is_complete_but_not_continued(tmp_path):
    """--drop-resume-state: the file shrinks to its metrics and weights, reads as before (info,
    export, an analysis), is skipped by --resume, refused more epochs, retrained by --overwrite."""
    args = ("train", *TINY_TRAIN_ARGS, "--width", "256", "--epochs", "4", "--save", "last")
    landscape_cli(*args, "--out", tmp_path / "kept", check=True)
    landscape_cli(*args, "--drop-resume-state", "--out", tmp_path / "dropped", check=True)
    (kept,), (dropped,) = (list((tmp_path / d).glob("*.h5")) for d in ("kept", "dropped"))
    # 2 x (model + Adam's two moments) of 4 models' size, the metrics and 2 weights beside them
    assert dropped.stat().st_size < 0.45 * kept.stat().st_size
    assert not list(tmp_path.glob("dropped/*.partial"))
    run = Run(dropped)
    assert run.status == "complete" and run.resume_epochs == () and run.saved_epochs == (0, 4)
    _assert_same_runs(Run(kept), run)
    with h5py.File(dropped, "r") as f:
        assert list(f["resume"]) == ["epochs"] and list(f["resume/epochs"][()]) == [-1, -1]
    assert "complete, epoch 4 of 4" in landscape_cli("info", dropped, check=True).stdout
    landscape_cli("export", dropped, "--out", tmp_path / "csv", check=True)
    landscape_cli("gradnorm", dropped, "--out", tmp_path / "results", "--format", "png", "-q",
                  "--skip-epochs", "0",
                  check=True)
    assert "skipped" in landscape_cli(*args, "--resume", "--out", tmp_path / "dropped",
                                      check=True).stdout
    refused = landscape_cli(*args[:-4], "--epochs", "8", "--save", "last", "--resume",
                            "--out", tmp_path / "dropped")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "its resume state was removed when it finished (--drop-resume-state)" in refused.stderr
    landscape_cli(*args, "--overwrite", "--out", tmp_path / "dropped", check=True)
    assert Run(dropped).resume_epochs[-1] == 4  # retrained, keeping its state this time
