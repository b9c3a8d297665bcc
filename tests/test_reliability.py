"""Issue 13 in-process: names and links never write outside --out, two writers, readers beside a
writer, corrupted and edited run files, a full or read-only disk, bad option values."""

from __future__ import annotations

import errno
import functools
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import TINY_TRAIN_ARGS, landscape_cli, one_line_error, tiny_config

from landscape import files
from landscape.config.execution import Execution
from landscape.errors import BadInput, WorkFailed
from landscape.runs import maker as runmaker
from landscape.runs.folders import write_sweep_index
from landscape.runs.store import Run
from landscape.runs.writer import RunWriter
from landscape.training import recording
from landscape.training.planner import train


def _train_cli(out, *extra):
    return landscape_cli("train", *TINY_TRAIN_ARGS, "--epochs", "2", "--out", out, *extra)


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "..", ".", "", "a/b", "a\\b", "x" * 300])
@pytest.mark.parametrize("sweep", [False, True])
def test_names_stay_inside_out(tmp_path, name, sweep):
    out = tmp_path / "a" / "b" / "out"
    result = _train_cli(out, "--name", name, *(("--flood", "0", "0.1") if sweep else ()))
    one_line_error(result)
    assert not any(tmp_path.rglob("*.h5")) and not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["gradnorm", "sharpness", "memorization"])
def test_analysis_names_stay_inside_out(tmp_path, command):
    _train_cli(tmp_path, "--name", "r", "--save", "all")
    for name in ("../x", "", ".."):
        one_line_error(landscape_cli(command, tmp_path / "r.h5", "--name", name,
                                      "--out", tmp_path / "res"))
    assert not (tmp_path / "res").exists() and not (tmp_path / "x.h5").exists()


def test_links_at_temporary_paths_are_never_followed(tmp_path, monkeypatch):
    """Links planted where the old release put its temporary files, and at the very name the
    next temporary file will take: targets stay untouched; the planted name fails loudly."""
    target = tmp_path / "target"
    target.write_text("keep")
    out = tmp_path / "out"
    (out / "sw").mkdir(parents=True)
    for planted in (out / "r.h5.partial", out / "sw" / "sweep.json.partial"):
        planted.symlink_to(target)
    _train_cli(out, "--name", "r")
    _train_cli(out, "--name", "sw", "--flood", "0", "0.1")
    assert target.read_text() == "keep" and Run(out / "r.h5").status == "complete"
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "fixed")
    (out / "q.h5.fixed.partial").symlink_to(target)
    (out / "sw" / "sweep.json.fixed.partial").symlink_to(target)
    with pytest.raises(WorkFailed):
        train([tiny_config(epochs=1)], out=out, name="q")
    with pytest.raises((WorkFailed, BadInput)):
        write_sweep_index(out / "sw", [out / "sw" / "x.h5"], grid={})
    assert target.read_text() == "keep" and not (out / "q.h5").exists()


def test_two_writers(tmp_path, monkeypatch):
    """A second identical train while the first writes: the "being written" error (exit 2);
    a run made by another process between the check and the creation is never replaced."""
    config = tiny_config(epochs=3)
    seen = []
    write = RunWriter.commit

    def second_start(self, epoch, *args, **kwargs):
        if not seen:
            seen.append(_train_cli(tmp_path, "--name", self.path.stem, "--epochs", "3"))
            seen.append(_train_cli(tmp_path, "--name", self.path.stem, "--epochs", "3",
                                   "--resume"))
        return write(self, epoch, *args, **kwargs)

    monkeypatch.setattr(RunWriter, "commit", second_start)
    first = train([config], out=tmp_path, name="r")
    assert first.statuses == ("complete",)
    for result in seen:
        one_line_error(result)
        assert "being written by another process" in result.stderr
    made = tmp_path / "r.h5"
    inode = made.stat().st_ino
    with pytest.raises(BadInput, match="made by another process meanwhile"):
        with files.temporary(made) as tmp:
            tmp.write_text("")
            files.publish(tmp, made, replace=False)
    assert made.stat().st_ino == inode and not list(tmp_path.glob("*.partial"))


def test_readers_never_block_a_writer(tmp_path):
    """A reader holding the file open with HDF5's own lock (h5py's default), and our readers,
    while a writer opens, writes and commits."""
    path = train([tiny_config(epochs=2)], out=tmp_path, name="r").paths[0]
    holder = subprocess.Popen(  # another process: HDF5 shares one handle within a process
        [sys.executable, "-c", "import sys, time, h5py; f = h5py.File(sys.argv[1], 'r'); "
         "print('open', flush=True); time.sleep(120)", str(path)], stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        writer = RunWriter(path)
        writer.set_status("running")
        assert Run(path).in_progress and files.being_written(path)
        writer.set_status("complete")
        writer.close()
    finally:
        holder.kill()
        holder.wait()
    assert not files.being_written(path)
    assert train([tiny_config(epochs=2)], out=tmp_path, name="r",
                 overwrite=True).statuses == ("complete",)


def test_info_on_a_sweep_being_made(tmp_path):
    folder = tmp_path / "sw"
    folder.mkdir()
    write_sweep_index(folder, [folder / "a.h5", folder / "b.h5"], grid={})
    result = landscape_cli("info", folder, check=True)
    assert result.stdout.count("not made yet") == 2


def _flip_byte(path, dataset, slot=0):
    with h5py.File(path, "r") as f:
        d = f[dataset]
        offset = (d.id.get_chunk_info(slot).byte_offset if d.chunks else d.id.get_offset())
    with open(path, "r+b") as fh:
        fh.seek(offset + 3)
        byte = fh.read(1)
        fh.seek(offset + 3)
        fh.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("dataset, read", [
    ("metrics/train_loss", lambda run: run.metrics()),
    ("weights/1.weight", lambda run: run.state_dict(0)),
    ("resume/slot0/model/1.weight", lambda run: run.resume_state()),  # epoch 3, the only one
    ("resume/slot0/optim/1.weight/exp_avg", lambda run: run.resume_state()),
    ("snapshot/state/1.weight", lambda run: run.snapshot()),
    ("data/flipped_train", lambda run: run.flipped("train")),
])
def test_a_flipped_byte_is_an_error_naming_the_dataset(tmp_path, dataset, read):
    path = train([tiny_config(epochs=3, flood=0.9)], out=tmp_path, name="r").paths[0]
    with h5py.File(path, "r") as f:
        assert dataset in f, dataset
    assert read(Run(path)) is not None  # reads clean (a snapshot was taken: b is high)
    _flip_byte(path, dataset)
    with pytest.raises(BadInput, match=f"/{dataset} fails its checksum"):
        read(Run(path))


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.attrs.__setitem__("format_version", "one"), "format_version"),
    (lambda f: f.attrs.__setitem__("format_version", 1.7), "format_version"),
    (lambda f: f.attrs.__setitem__("execution", "{not json"), "execution"),
    (lambda f: f.attrs.__setitem__("versions", "[1]"), "versions"),
    (lambda f: f["status"].__setitem__((), np.bytes_("bogus")), "status"),
    (lambda f: f.__delitem__("status"), "status"),
    (lambda f: f["epochs_done"].__setitem__((), 10**6), "epochs_done"),
    (lambda f: f["epochs_done"].__setitem__((), -7), "epochs_done"),
    (lambda f: (f["metrics"].__delitem__("train_loss"),
                f["metrics"].create_dataset("train_loss", data=[0.0])), "train_loss"),
])
def test_edited_attributes_are_bad_input(tmp_path, edit, match):
    path = train([tiny_config(epochs=2)], out=tmp_path, name="r").paths[0]
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(BadInput, match=match):
        Run(path).metrics()
    one_line_error(landscape_cli("info", path))


def test_a_missing_metric_is_bad_input(tmp_path):
    path = train([tiny_config(epochs=2)], out=tmp_path, name="r").paths[0]
    with h5py.File(path, "r+") as f:
        del f["metrics/test_acc"]
    one_line_error(landscape_cli("info", path))


def test_files_of_the_earlier_release_open(tmp_path):
    """The earlier release's layout: every dataset contiguous, without checksums. It opens,
    reads and resumes as before."""
    path = train([tiny_config(epochs=4)], out=tmp_path, name="r").paths[0]
    expected = Run(path).metrics()
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
        for name in names:
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data)
        f["epochs_done"][()] = 3  # killed after epoch 3: its resume state is in slot 1
        f["status"][()] = np.bytes_("running")
        assert not f["metrics/train_loss"].fletcher32
    resumed = train([tiny_config(epochs=4)], out=tmp_path, name="r", resume=True)
    assert resumed.statuses == ("complete",)
    for key, values in Run(path).metrics().items():
        if key != "seconds":
            np.testing.assert_array_equal(values, expected[key], err_msg=key)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_mid_run_is_one_line_and_leaves_what_was_committed(tmp_path, monkeypatch):
    calls = []
    write = RunWriter._commit
    monkeypatch.setattr(recording, "METRICS_EVERY", 0)  # a commit every epoch

    def fills_up(self, epoch, *args):
        calls.append(epoch)
        if len(calls) == 3:
            _enospc()
        return write(self, epoch, *args)

    monkeypatch.setattr(RunWriter, "_commit", fills_up)
    result = _train_cli(tmp_path, "--name", "r", "--epochs", "5")
    one_line_error(result, code=1)
    assert "no space left" in result.stderr and str(tmp_path / "r.h5") in result.stderr
    monkeypatch.setattr(RunWriter, "_commit", write)
    assert Run(tmp_path / "r.h5").epochs_done == 1
    resumed = _train_cli(tmp_path, "--name", "r", "--epochs", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr


def test_a_full_disk_at_creation_leaves_nothing(tmp_path, monkeypatch):
    def half_written(f, *args, **kwargs):  # the layout's template, half made
        f.create_dataset("status", data="running")
        _enospc()

    monkeypatch.setattr(runmaker, "_skeleton", half_written)
    result = _train_cli(tmp_path / "out", "--name", "r")
    one_line_error(result, code=1)
    assert "no space left" in result.stderr
    assert not list((tmp_path / "out").iterdir())


def test_a_read_only_out_is_one_line(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    _train_cli(tmp_path, "--name", "r", "--save", "all")
    monkeypatch.setattr(type(tmp_path), "mkdir", read_only)
    for result in (_train_cli(tmp_path / "ro", "--name", "r"),
                   landscape_cli("gradnorm", tmp_path / "r.h5", "--skip-epochs", "0", "--out",
                                 tmp_path / "ro")):
        one_line_error(result, code=2)
        assert "Read-only file system" in result.stderr and "ro" in result.stderr
    monkeypatch.undo()
    (tmp_path / "afile").write_text("")  # an --out below a file: the place asked for, exit 2
    result = landscape_cli("gradnorm", tmp_path / "r.h5", "--skip-epochs", "0", "--out",
                           tmp_path / "afile" / "below")
    one_line_error(result, code=2)
    assert "Not a directory" in result.stderr


@pytest.mark.parametrize("extra", [
    ("--flood", "0:inf:0.1"), ("--flood", "0:1e300:1e-300"), ("--flood", "nan"),
    ("--objective", "adaflood", "--adaflood-folds", "1000"),
    ("--weight-decay", "inf"), ("--weight-decay", "nan"),
    ("--data", "spiral", "--spiral-tau", "inf"),
    ("--epochs", str(10**12)), ("--width", str(10**8)), ("--n-test", str(10**11)),
])
def test_bad_values_that_slipped_through(tmp_path, extra):
    one_line_error(_train_cli(tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


def test_bad_analysis_values(tmp_path):
    _train_cli(tmp_path, "--name", "r", "--save", "all")
    run = tmp_path / "r.h5"
    for args in (("mse", run, "--seed", "-1"), ("sharpness", run, "--seed", "-1"),
                 ("gradnorm", run, "--skip-epochs", "-1")):
        one_line_error(landscape_cli(*args, "--out", tmp_path / "res"))


def test_an_unknown_codec_in_a_cifar_pickle_is_bad_input(tmp_path):
    from landscape.data.cifar import read_batch

    # A pickle whose string opcode names an encoding that does not exist.
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x05\x00\x00\x00nope!"
                     b"\x86q\x01Rq\x02.")
    with pytest.raises(BadInput):
        read_batch(path, "labels")


def test_sweep_index_is_json(tmp_path):
    write_sweep_index(tmp_path, [tmp_path / "a.h5"], grid={"seed": [0]})
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"] == ["a.h5"]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("commits", [2, 3 * 6 + 4])
def test_a_stacked_sweep_killed_between_members_commits_resumes_bit_for_bit(
        tmp_path, monkeypatch, commits):
    """float32, six members stacked: the resumed members continue from their common epoch in
    the chunk they began in, so every number equals the uninterrupted sweep's exactly."""
    from conftest import train_interrupted

    from landscape.config.execution import Execution
    from landscape.training.grid import expand

    configs = expand(tiny_config(epochs=6, save="every:2", eval_test="best"), [0.0, 0.3, 0.6],
                     [0, 1])
    execution = Execution(ensemble="6", progress=False)
    reference = train(configs, out=tmp_path / "ref", execution=execution)
    train_interrupted(configs, tmp_path / "cut", commits=commits, ensemble="6",
                      monkeypatch=monkeypatch)
    assert len({Run(p).epochs_done for p in (tmp_path / "cut").rglob("*.h5")}) == 2
    resumed = train(configs, out=tmp_path / "cut", resume=True, execution=execution)
    for pa, pb in zip(resumed.paths, reference.paths):
        a, b = Run(pa), Run(pb)
        assert a.status == b.status == "complete"
        ma, mb = a.metrics(), b.metrics()
        for name in ma:
            if name != "seconds":
                np.testing.assert_array_equal(ma[name], mb[name], err_msg=f"{a.name}: {name}")
        for epoch in a.saved_epochs:
            for key, value in a.state_dict(epoch).items():
                assert np.array_equal(value.numpy(), b.state_dict(epoch)[key].numpy()), key
        sa, sb = a.snapshot(), b.snapshot()
        assert (sa is None) == (sb is None) and (sa is None or (sa.step, sa.batch_loss)
                                                 == (sb.step, sb.batch_loss))


@pytest.mark.parametrize("command", ["gradnorm", "sharpness", "flatness"])
def test_analyses_refuse_a_diverged_run_naming_its_epoch(tmp_path, command):
    diverged = _train_cli(tmp_path, "--name", "d", "--optimizer", "sgd", "--lr", "1e6",
                          "--save", "all", "--epochs", "5")
    assert diverged.returncode == 1
    run = Run(tmp_path / "d.h5")
    assert run.status == "diverged"
    result = landscape_cli(command, tmp_path / "d.h5", "--out", tmp_path / "res")
    one_line_error(result)
    assert f"diverged in epoch {run.epochs_done + 1}" in result.stderr
    assert not (tmp_path / "res").exists()


def test_too_little_space_for_a_new_run_is_refused_before_writing(tmp_path, monkeypatch):
    """HDF5 that runs out of space while making a file crashes in its cleanup: the room the
    file's arrays need is checked first (and reserved once made, for the epochs to come)."""
    usage = files.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    result = _train_cli(tmp_path / "out", "--name", "r")
    one_line_error(result, code=1)
    assert "needs about" in result.stderr and str(tmp_path / "out" / "r.h5") in result.stderr
    assert not list((tmp_path / "out").iterdir())


def test_an_interrupt_that_a_finalizer_swallowed_stops_training_at_the_next_epoch(tmp_path,
                                                                                   monkeypatch):
    """A SIGTERM whose exception Python dropped (raised while a weakref callback ran, as h5py's
    are at every write) still stops the trainer: errors.interrupt notes it, record re-raises it."""
    import weakref

    from landscape import errors
    from landscape.training import loop as training
    measure = training.Group.measure

    def swallowed_at_epoch_3(self, epoch):
        if epoch == 3:
            class Finalized:
                pass
            thing = Finalized()
            ref = weakref.ref(thing, lambda _: errors.interrupt(errors.Terminated()))
            del thing  # the callback raises; Python prints "Exception ignored" and goes on
            assert ref() is None
        return measure(self, epoch)

    monkeypatch.setattr(training.Group, "measure", swallowed_at_epoch_3)
    printed = []  # what Python would print as "Exception ignored": nothing, under the CLI's hook
    monkeypatch.setattr(sys, "unraisablehook", functools.partial(errors.quiet_when_pending,
                                                                 fallback=printed.append))
    try:
        with pytest.raises(errors.Terminated):
            train([tiny_config(epochs=50)], out=tmp_path, name="r",
                  execution=Execution(progress=False, checkpoint_every=0))
    finally:
        errors.clear_pending()
    run = Run(tmp_path / "r.h5")
    assert run.status == "running" and run.epochs_done == 2  # epoch 3, in flight, not saved
    assert printed == []
