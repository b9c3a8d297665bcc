"""Shared test helpers: tiny configs that train in well under a second, and the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import landscape
from landscape.cli import commands
from landscape.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from landscape.config.execution import Execution
from landscape.runs.writer import RunWriter
from landscape.training import recording
from landscape.training.planner import train

TESTS = Path(__file__).parent
MNIST_SUBSET = TESTS / "data"


def tiny_config(*, data: str = "two_gaussians", noise: float = 0.1, flood: float = 0.0,
                epochs: int = 8, width: int = 16, depth: int = 2, seed: int = 0,
                **overrides) -> RunConfig:
    """A run small enough for unit tests: 40/20/200 points, a 2 x 16 MLP."""
    config = RunConfig(
        data=DataConfig(data, noise=noise, n_train=40, n_val=20, n_test=200, seed=seed),
        model=ModelConfig("mlp", depth=depth, width=width),
        optim=OptimConfig(epochs=epochs, batch_size=16, lr=1e-2),
        seed=seed, save="all", eval_test="every")
    config = dataclasses.replace(config, objective=dataclasses.replace(config.objective,
                                                                       flood=flood))
    return dataclasses.replace(config, **overrides)


@dataclasses.dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def landscape_cli(*args, check: bool = False, cwd: Path | None = None) -> CliResult:
    """Run the `landscape` command in this process (click's CliRunner): the command's own code,
    error handling and exit codes, without a second interpreter importing torch for every call.
    `installed_cli` runs the installed script itself."""
    from click.testing import CliRunner

    with contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(commands(), [str(a) for a in args], prog_name="landscape")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug the command's own handler would have hidden in one line
    out = CliResult(result.exit_code, result.stdout, result.stderr)
    if check and out.returncode != 0:
        raise AssertionError(f"landscape {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out


def one_line_error(result: CliResult, message: str = "", code: int = 2) -> str:
    """The command failed as the contract says: exit `code`, one line on stderr naming the
    problem (`message` in it), no traceback; returns the line."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: error:"), result.stderr
    assert message in lines[0], lines[0]
    return lines[0]


def installed_command() -> list[str]:
    """The installed `landscape` script (python -m landscape where it is not on the path)."""
    exe = Path(sys.executable).with_name("landscape")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "landscape"]


def installed_cli(*args, check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed `landscape` command in its own process, as a user would."""
    result = subprocess.run(installed_command() + [str(a) for a in args], capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"landscape {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


WALL_CLOCK = ("seconds", "track_seconds")  # metrics that time the work: never equal twice


def assert_same_metrics(expected, got, *, other_machine: bool = False) -> None:
    """Two runs' metrics equal bit for bit, every one but the wall-clock ones. A run written
    on another machine (`other_machine`: the committed fixtures) is compared to float32 rounding:
    CPUs with other vector units round float32 matmuls differently (an AVX512-FP16 Xeon against
    the fixtures' machine: 1-2 ulp of the losses, 6e-8 in the weights after 6 epochs), while
    accuracies, flood levels and step counts must still agree exactly."""
    got_metrics = got.metrics()
    for name, values in expected.metrics().items():
        if name in WALL_CLOCK:
            continue
        if other_machine:
            np.testing.assert_allclose(got_metrics[name], values, rtol=1e-6, atol=1e-6,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(got_metrics[name], values, err_msg=name)


def train_interrupted(configs, out: Path, *, commits: int, ensemble: str, monkeypatch,
                      **execution) -> None:
    """`train` stopped by KeyboardInterrupt after `commits` run-file epoch commits: what killing
    it between two commits leaves behind. `execution`: further Execution fields."""
    write, done = RunWriter.commit, []

    def interrupted(self, epoch, *args, **kwargs):
        if len(done) == commits:
            raise KeyboardInterrupt
        done.append(epoch)
        return write(self, epoch, *args, **kwargs)

    monkeypatch.setattr(recording, "METRICS_EVERY", 0)  # a commit every epoch
    monkeypatch.setattr(RunWriter, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(configs, out=out, execution=Execution(ensemble=ensemble, progress=False,
                                                    **execution))
    monkeypatch.setattr(RunWriter, "commit", write)


TINY_TRAIN_ARGS = ("--data", "two_gaussians", "--noise", "0.1", "--n-train", "40", "--n-val", "20",
                   "--n-test", "200", "--depth", "2", "--width", "16", "--batch-size", "16",
                   "--lr", "0.01", "--quiet")


@pytest.fixture(scope="session", autouse=True)
def temporary_files_inside_basetemp(tmp_path_factory):
    """Temporary files of this process and of the ones it starts (torchrun's log folders, one
    per launch) go into pytest's base folder, which its retention policy removes (setup.cfg),
    instead of staying in /tmp."""
    folder = tmp_path_factory.mktemp("tmp", numbered=False)
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # tempfile caches the folder it chose first
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None


@pytest.fixture
def tiny_args():
    return TINY_TRAIN_ARGS


@pytest.fixture
def one_thread():
    """Tiny models: with one thread no OpenMP synchronisation costs more than the math (several
    times faster on a busy 2-core machine). Use: pytestmark = pytest.mark.usefixtures(...)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """A folder as a user has it: a module with a model and data factory, and checkpoints of a
    plain PyTorch training loop with flooding, saved Lightning-style."""
    (tmp_path / "usernet.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        def make():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(8, 3))

        def splits():
            g = torch.Generator().manual_seed(1)
            x, y = torch.randn(50, 4, generator=g), torch.randint(0, 3, (50,), generator=g)
            return {"train": DataLoader(TensorDataset(x[:30], y[:30]), batch_size=7),
                    "test": (x[30:], y[30:])}

        def wrong():
            return 3

        def squared(logits, y):
            return (logits - torch.nn.functional.one_hot(y, 3)).pow(2).sum(1)
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("usernet", None)
    import usernet

    net, data = usernet.make(), usernet.splits()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
    (tmp_path / "ckpt").mkdir()
    for epoch in range(1, 13):
        for xb, yb in data["train"]:
            optimizer.zero_grad()
            landscape.flood(torch.nn.functional.cross_entropy(net(xb), yb), b=0.3).backward()
            optimizer.step()
        torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                    "epoch": epoch}, tmp_path / "ckpt" / f"epoch_{epoch}.ckpt")
    yield tmp_path, usernet
    sys.modules.pop("usernet", None)
