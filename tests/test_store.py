import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import landscape_cli, tiny_config

from landscape.config.execution import Execution
from landscape.errors import BadInput
from landscape.runs.folders import find_runs, write_sweep_index
from landscape.runs.maker import create_run
from landscape.runs.store import Run, Snapshot, layout_of
from landscape.runs.writer import RunWriter


def _make(path, config, state, optim):
    create_run(path, config, Execution(), device="cpu", metric_names=("a", "b"),
               model_layout=layout_of(state), optim_layout=layout_of(optim),
               flipped={"train": np.array([3, 1]), "val": np.array([], int), "test": np.array([0])})


def test_round_trip_is_exact(tmp_path):
    config = tiny_config(flood=0.2, epochs=3, save="epochs:2").resolved()
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(4, 3, generator=g), "n": torch.tensor(e, dtype=torch.int64)}
              for e in range(4)]
    optims = [{"w/exp_avg": torch.randn(4, 3, generator=g), "w/step": torch.tensor(float(e))}
              for e in range(4)]
    path = tmp_path / "r.h5"
    _make(path, config, states[0], optims[0])
    assert not (tmp_path / "r.h5.partial").exists()
    with RunWriter(path) as w:
        for e in range(4):
            snap = Snapshot(5, 2, 0.125, states[1]) if e == 2 else None
            w.commit(e, {"a": np.array([e / 3]), "b": np.array([np.nan])}, first=e,
                     weights=states[e] if e in (0, 2, 3) else None,
                     resume=(states[e], optims[e]), snapshot=snap)
        w.set_status("complete")
    run = Run(path)
    assert run.config == config and run.status == "complete" and run.epochs_done == 3
    assert run.saved_epochs == (0, 2, 3)
    np.testing.assert_array_equal(run.metric("a"), np.arange(4) / 3)
    assert np.isnan(run.metric("b")).all()
    for e in (0, 2, 3):
        got = run.state_dict(e)
        assert torch.equal(got["w"], states[e]["w"]) and int(got["n"]) == e
    with pytest.raises(BadInput, match="epoch 1 was not saved"):
        run.state_dict(1)
    snap = run.snapshot()
    assert (snap.step, snap.epoch, snap.batch_loss) == (5, 2, 0.125)
    assert torch.equal(snap.state["w"], states[1]["w"])
    model, optim = run.resume_state()
    assert torch.equal(model["w"], states[3]["w"]) and torch.equal(optim["w/exp_avg"],
                                                                   optims[3]["w/exp_avg"])
    np.testing.assert_array_equal(run.flipped("train"), [3, 1])
    with h5py.File(path) as f:  # plain HDF5: the config is JSON, metrics are 1-D arrays
        assert json.loads(f.attrs["config"])["objective"]["flood"] == 0.2
        assert f["metrics/a"].shape == (4,) and f["weights/w"].chunks == (1, 4, 3)


def test_uncommitted_epochs_are_invisible(tmp_path):
    config = tiny_config(epochs=3).resolved()
    state, optim = {"w": torch.zeros(2)}, {}
    path = tmp_path / "r.h5"
    _make(path, config, state, optim)
    with RunWriter(path) as w:
        w.commit(0, {"a": np.array([1.0])}, first=0, weights=state, resume=(state, optim))
        w.write_metrics(1, {"a": 2.0})  # written, never committed
    run = Run(path)
    assert run.epochs_done == 0 and run.status == "running"
    assert run.metric("a").tolist() == [1.0] and run.snapshot() is None


@pytest.fixture
def real_run(tmp_path):
    from landscape.training.planner import train
    return train([tiny_config(epochs=2)], out=tmp_path / "runs").paths[0]


def test_bad_files_are_bad_input(tmp_path, real_run):
    truncated = tmp_path / "truncated.h5"
    data = real_run.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    newer = tmp_path / "newer.h5"
    shutil.copy(real_run, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 99
    text = tmp_path / "text.h5"
    text.write_text("hello")
    cases = {truncated: "corrupt or truncated", foreign: "not a landscape run file",
             newer: "upgrade landscape", text: "not a readable HDF5", tmp_path / "no.h5": "no such",
             tmp_path: "is a folder"}
    for path, message in cases.items():
        with pytest.raises(BadInput, match=message):
            Run(path)


def test_a_run_being_written_reads_and_is_not_trained_twice(tmp_path):
    """While another process holds a run file open for writing (a trainer at work), it can be read
    (info shows it running) but not trained into; once that process is gone it reads as
    unfinished."""
    from landscape.training.planner import train

    config = tiny_config(epochs=2)
    path = train([config], out=tmp_path).paths[0]
    with h5py.File(path, "r+") as f:
        f["status"][()] = np.bytes_("running")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from landscape.runs.writer import RunWriter; f = RunWriter(sys.argv[1]); "
         "print('open', flush=True); sys.stdin.read()", str(path)],  # holds it until killed
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        run = Run(path)
        assert run.in_progress and run.epochs_done == 2 and run.metric("train_loss").shape == (3,)
        assert "running, epoch 2 of 2" in landscape_cli("info", path, check=True).stdout
        with pytest.raises(BadInput, match="being written by another process"):
            train([config], out=tmp_path, resume=True)
        with pytest.raises(BadInput, match="being written by another process"):
            train([config], out=tmp_path, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert not Run(path).in_progress
    assert "unfinished, epoch 2 of 2" in landscape_cli("info", path, check=True).stdout


def test_find_runs_in_folders_and_sweeps(tmp_path, real_run):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    shutil.copy(real_run, tmp_path / "deep" / "er" / "x.h5")
    assert find_runs([tmp_path / "deep"]) == [tmp_path / "deep" / "er" / "x.h5"]
    for one in (tmp_path / "deep", str(tmp_path / "deep")):  # one path, not its characters
        assert find_runs(one) == [tmp_path / "deep" / "er" / "x.h5"]
    write_sweep_index(tmp_path / "deep", [tmp_path / "deep" / "er" / "x.h5"], grid={})
    assert find_runs([tmp_path / "deep"]) == [tmp_path / "deep" / "er" / "x.h5"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no run files"):
        find_runs([tmp_path / "empty"])
    (tmp_path / "runs" / "results").mkdir()
    with h5py.File(tmp_path / "runs" / "results" / "gradnorm.h5", "w") as f:
        f.attrs["format"] = "landscape-gradnorm"  # an analysis result beside the runs: not a run
    (tmp_path / "runs" / "broken.h5").write_text("not HDF5")  # an unreadable file still counts
    assert find_runs([tmp_path / "runs"]) == [tmp_path / "runs" / "broken.h5", real_run]
    # where earlier releases had them
    from landscape.runs import folders, store
    from landscape.runs.store import open_runs  # noqa: F401
    assert store.find_runs is find_runs and store.SWEEP_INDEX == folders.SWEEP_INDEX
    with pytest.raises(AttributeError):
        store.no_such_name  # noqa: B018


def test_a_runs_model_holds_its_weights_and_gives_its_recorded_losses(real_run):
    """Run.model(): the run's architecture with an epoch's weights, measured by the any-model
    functions to the numbers the trainer recorded."""
    import landscape

    run = Run(real_run)
    data = run.dataset()
    loss = run.config.objective.loss
    for epoch in (0, run.saved_epochs[-1]):
        model = run.model(epoch)
        assert not model.training
        for key, value in model.state_dict().items():
            assert torch.equal(value, run.state_dict(epoch)[key])
        line = landscape.loss_slice(model, {"train": data.train, "test": data.test}, loss=loss,
                                    points=3)
        np.testing.assert_allclose(line["train_loss"][1], run.metrics()["train_loss"][epoch],
                                   rtol=1e-5)
    last = run.state_dict(run.saved_epochs[-1])
    assert all(torch.equal(v, last[k]) for k, v in run.model().state_dict().items())
