"""The `landscape` command: in this process (CliRunner), and once as the installed script."""

import os
import subprocess
import sys
import textwrap

import h5py
import pytest
from conftest import (
    TINY_TRAIN_ARGS,
    installed_cli,
    landscape_cli,
    one_line_error,
    tiny_config,
    train_interrupted,
)

from landscape.runs.store import Run


@pytest.mark.parametrize("extra", [
    ("--data", "nope"),
    ("--data", "spiral", "--model", "vgg"),
    ("--data", "spiral", "--flood", "-0.1"),
    ("--data", "spiral", "--flood", "0.3:0.1:0.1"),
    ("--data", "spiral", "--flood", "1:2"),
    ("--data", "spiral", "--flood", "0.1", "0.1"),             # one run, where two were asked
    ("--data", "spiral", "--flood", "0.1,0.2", "0:0.1:0.05"),
    ("--data", "spiral", "--epochs", "0"),
    ("--data", "spiral", "--batch-size", "0"),
    ("--data", "spiral", "--seeds", "0"),
    ("--data", "spiral", "--seed", "1", "--seeds", "2"),
    ("--data", "spiral", "--unknown-option"),
    ("--data", "spiral", "--save-every", "5", "--save", "all"),
    ("--data", "spiral", "--save-epochs", "3,x"),
    ("--data", "mnist"),
    ("--data", "mnist", "--data-dir", "/no/such/dir"),
    ("--data", "spiral", "--device", "tpu"),
    ("--data", "spiral", "--noise", "0.7"),
    ("--data", "spiral", "--resume", "--overwrite"),
    ("--data", "spiral", "--ensemble", "many"),
])
def test_bad_train_input(tmp_path, extra):
    out = tmp_path / "out"
    result = landscape_cli("train", *extra, "--epochs" if "--epochs" not in extra else "--quiet",
                           *(("1",) if "--epochs" not in extra else ()), "--out", out)
    one_line_error(result)
    assert not out.exists() or not any(out.rglob("*"))  # nothing half-written


def test_train_info_and_overwrite_rules(tmp_path):
    args = ("train", *TINY_TRAIN_ARGS, "--flood", "0.2", "--epochs", "3", "--out", tmp_path)
    first = landscape_cli(*args, check=True)
    path = tmp_path / "two_gaussians-noise0.1-mlp-flood0.2-seed0.h5"
    assert str(path) in first.stdout and "complete" in first.stdout
    info = landscape_cli("info", path, check=True)
    assert "complete, epoch 3 of 3" in info.stdout and "b = 0.2" in info.stdout
    before = path.stat().st_mtime_ns
    one_line_error(landscape_cli(*args))                       # finished: not overwritten
    assert path.stat().st_mtime_ns == before
    skipped = landscape_cli(*args, "--resume", check=True)     # finished: nothing to do
    assert "skipped" in skipped.stdout
    landscape_cli(*args, "--overwrite", check=True)
    assert path.stat().st_mtime_ns != before
    with h5py.File(path, "r+") as f:                            # pretend it was interrupted
        f["status"][()] = b"running"
        f["epochs_done"][()] = 1
    one_line_error(landscape_cli(*args))
    landscape_cli(*args, "--resume", check=True)
    assert Run(path).status == "complete"


def test_sweep_folder_and_space_separated_flood_levels(tmp_path):
    result = landscape_cli("train", *TINY_TRAIN_ARGS, "--flood", "0", "0.1", "--seeds", "2",
                           "--epochs", "2", "--out", tmp_path, check=True)
    folder = tmp_path / "two_gaussians-noise0.1-mlp-flood"
    assert "sweep of 4 runs" in result.stdout
    runs = sorted(p.name for p in folder.glob("*.h5"))
    assert runs == [f"two_gaussians-noise0.1-mlp-flood{b}-seed{s}.h5" for b in ("0", "0.1")
                    for s in (0, 1)]
    assert (folder / "sweep.json").is_file()
    info = landscape_cli("info", folder, check=True)
    assert "4 run files" in info.stdout
    run = Run(folder / "two_gaussians-noise0.1-mlp-flood0.1-seed1.h5")
    assert run.config.data.seed == 1 and run.config.eval_test == "best"
    assert run.saved_epochs == (0, 2)  # sweeps keep the last epoch by default


def test_info_bad_input(tmp_path):
    (tmp_path / "bad.h5").write_text("not hdf5")
    one_line_error(landscape_cli("info", tmp_path / "bad.h5"))
    one_line_error(landscape_cli("info", tmp_path / "missing.h5"))
    one_line_error(landscape_cli("info", tmp_path / "bad.h5", tmp_path / "missing.h5"))


def test_info_on_a_run_stopped_before_epoch_0_says_none_trained(tmp_path, monkeypatch):
    train_interrupted([tiny_config(epochs=500)], tmp_path, commits=0, ensemble="off",
                      monkeypatch=monkeypatch)
    (path,) = tmp_path.glob("*.h5")
    assert Run(path).epochs_done == -1  # not even the initial weights recorded
    table = landscape_cli("info", tmp_path, check=True).stdout
    assert "unfinished    0/500" in table and "-1/" not in table
    one = landscape_cli("info", path, check=True).stdout
    assert "status        unfinished, not started, 0 of 500 epochs (not being written" in one


def test_help_has_examples():
    for command in ("train", "info", "demo"):
        result = landscape_cli(command, "--help", check=True)
        assert "Example" in result.stdout


def test_the_installed_command_trains_and_reads_a_run(tmp_path):
    trained = installed_cli("train", *TINY_TRAIN_ARGS, "--epochs", "2", "--out", tmp_path,
                            check=True)
    path = tmp_path / "two_gaussians-noise0.1-mlp-flood0-seed0.h5"
    assert str(path) in trained.stdout
    assert "complete, epoch 2 of 2" in installed_cli("info", path, check=True).stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--data", "nope"],
                                  ["train", "--data", "spiral", "--flood", "-1"],
                                  ["train", "--data", "spiral", "--epochs", "0"],
                                  ["train", "--data", "spiral", "--device", "tpu"],
                                  ["demo", "--epochs", "0"], ["demo", "--format", "gif"],
                                  ["flatness", "r.h5", "--points", "1"],
                                  ["flatness", "r.h5", "--span", "inf"],
                                  ["flatness", "r.h5", "--vtp"],
                                  ["flatness", "r.h5", "--direction-seed", "-1"],
                                  ["gradnorm", "r.h5", "--skip-epochs", "-1"],
                                  ["gradnorm", "r.h5", "--epochs", "a,b"],
                                  ["gradnorm", "r.h5", "--format", "gif"],
                                  ["sharpness", "r.h5", "--sigma", "0"],
                                  ["sharpness", "r.h5", "--seed", "-1"],
                                  ["sharpness", "r.h5", "--save-eigenvectors"],
                                  ["mse", "r.h5", "--samples", "1"],
                                  ["mse", "r.h5", "--seed", "-1"],
                                  ["mse", "r.h5", "--epoch", "first"],
                                  ["mse", "r.h5", "--flood-grid", "0:inf:0.1"],
                                  ["mse", "a.h5", "b.h5"],
                                  ["memorization", "runs", "--format", "gif"],
                                  ["flatness", "--model", "m:f", "--weights", "w.pt", "--data",
                                   "m:d", "--points", "1"],
                                  ["sharpness", "--model", "m:f", "--weights", "w.pt", "--data",
                                   "m:d", "--probes", "0"],
                                  ["table", "runs", "--format", "xls"]])
def test_help_and_bad_options_are_answered_without_importing_torch(argv):
    """torch takes seconds to import: --help and a mistyped option must not wait for it."""
    probe = ("import atexit, sys; atexit.register(lambda: print('torch' in sys.modules)); "
             f"sys.argv = ['landscape', *{argv!r}]; from landscape.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == (0 if argv == ["--help"] else 2), result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_demo_draws_its_two_figures_and_keeps_its_runs(tmp_path):
    out = tmp_path / "demo"
    result = landscape_cli("demo", "--out", out, "--epochs", "40", "--format", "png", "-q",
                           check=True)
    for figure in ("learning_curves", "flatness_slice"):
        assert f"{out / figure}.png" in result.stdout and (out / f"{figure}.png").is_file()
        assert (out / f"{figure}.csv").is_file()
    runs = sorted((out / "runs").glob("*.h5"))
    assert [Run(p).saved_epochs for p in runs] == [(0, 40), (0, 40)]  # only what the figures need
    assert Run(runs[1]).snapshot() is not None                         # the flooded run's
    before = runs[0].stat().st_mtime_ns
    one_line_error(landscape_cli("demo", "--out", out, "--epochs", "40", "-q"))
    assert runs[0].stat().st_mtime_ns == before
    landscape_cli("demo", "--out", out, "--epochs", "40", "--format", "png", "-q", "--overwrite",
                  check=True)


@pytest.fixture
def threads_seen(monkeypatch):
    """The threads torch has, and OMP_NUM_THREADS, when `train` hands its runs to the library."""
    import torch

    from landscape.training import planner

    seen, real = [], planner.train

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")))
        return real(*args, **kwargs)

    monkeypatch.setattr(planner, "train", spy)
    for name in ("LANDSCAPE_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    return seen


@pytest.mark.parametrize("option, environ, expected", [
    ((), {}, 1),                                                      # the default
    (("--threads", "3"), {}, 3),
    ((), {"LANDSCAPE_THREADS": "2"}, 2),
    ((), {"OMP_NUM_THREADS": "2"}, 2),                                # torchrun's, for example
    ((), {"OMP_NUM_THREADS": "2,1"}, 2),                              # OpenMP's nested levels
    ((), {"LANDSCAPE_THREADS": "3", "OMP_NUM_THREADS": "2"}, 3),
    (("--threads", "2"), {"LANDSCAPE_THREADS": "3", "OMP_NUM_THREADS": "3"}, 2)])
def test_every_command_uses_the_threads_chosen(tmp_path, monkeypatch, threads_seen, option,
                                               environ, expected):
    import torch

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    before = torch.get_num_threads()
    landscape_cli(*option, "train", *TINY_TRAIN_ARGS, "--epochs", "1", "--out", tmp_path,
                  check=True)
    assert threads_seen == [(expected, str(expected))]
    assert torch.get_num_threads() == before                # restored for the Python session
    assert os.environ.get("OMP_NUM_THREADS") == environ.get("OMP_NUM_THREADS")


@pytest.mark.parametrize("option, environ", [
    (("--threads", "0"), {}), (("--threads", "-1"), {}), (("--threads", "abc"), {}),
    ((), {"LANDSCAPE_THREADS": "0"}), ((), {"OMP_NUM_THREADS": "two"})])
def test_bad_thread_counts(tmp_path, monkeypatch, threads_seen, option, environ):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    result = landscape_cli(*option, "train", *TINY_TRAIN_ARGS, "--epochs", "1", "--out", tmp_path)
    one_line_error(result)
    assert next(iter(environ), "--threads") in result.stderr
    assert threads_seen == [] and not any(tmp_path.iterdir())


def test_threads_apply_to_a_torch_imported_later():
    """The command imports torch lazily: the choice reaches it through OMP_NUM_THREADS (torch's
    own default would be a thread per core)."""
    probe = textwrap.dedent("""
        import sys
        from landscape.cli import cli

        @cli.command()
        def probe():
            assert "torch" not in sys.modules
            import torch
            print(torch.get_num_threads())

        cli.main(sys.argv[1:])
    """)
    environ = {k: v for k, v in os.environ.items()
               if k not in ("LANDSCAPE_THREADS", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", probe, "probe"], capture_output=True,
                            text=True, env=environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
