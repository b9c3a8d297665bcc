"""Scale-out under torchrun (docs/guides/scale-out.md), with the gloo backend and 2 processes on the CPU:
a distributed sweep, slice and gradient-amplitude computation equal the single-process ones, and a
rank killed mid-sweep loses nothing that --resume does not finish."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_TRAIN_ARGS

import landscape.cli.train  # noqa: F401 - registers the train command
from landscape import distributed
from landscape.analysis.flatness import flatness
from landscape.analysis.generalization import run_generalization
from landscape.analysis.gradnorm import gradnorm
from landscape.cli import cli
from landscape.measures.options import GeneralizationOptions, SliceOptions
from landscape.results import read_result
from landscape.runs.folders import find_runs, open_runs
from landscape.runs.store import Run

CPU = torch.device("cpu")
SWEEP = "two_gaussians-noise0.1-mlp-flood"  # the folder name `train` derives for these runs
ARGS = (*TINY_TRAIN_ARGS, "--flood", "0", "0.3", "--seeds", "2")
# Compared to a tolerance, in float64: the ranks stack their runs (and epochs, and slice points)
# into other vmapped chunks than one process does, whose batched kernels may round differently.
# In float64 that stays many orders below RTOL; a lost, repeated or misplaced run, epoch or point
# would differ in the first digits.
RTOL = 1e-9


def torchrun(*args) -> list[str]:
    """`torchrun --standalone --nproc-per-node 2 -m landscape ARGS`, as python -m (no PATH)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "-m", "landscape", *map(str, args)]


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, *, ok: bool = True) -> tuple[str, str]:
    out, err = proc.communicate(timeout=300)
    assert (proc.returncode == 0) == ok, err
    return out, err


def train_here(*args) -> None:
    """`landscape train` in this process: the single-process reference without a start-up."""
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output


def test_shares_are_disjoint_balanced_and_cover_the_plan():
    for n in range(8):
        for size in (1, 2, 3):
            worlds = [distributed.World(rank, size) for rank in range(size)]
            shares = [distributed.share(range(n), world) for world in worlds]
            assert sum(shares, []) == list(range(n))  # in plan order: rank order restores it
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            rounds = [distributed.in_rounds(range(n), world) for world in worlds]
            assert len({len(r) for r in rounds}) == 1  # every rank meets every exchange


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same sweep trained by one process and by two ranks (each with every epoch saved)."""
    root = tmp_path_factory.mktemp("sweeps")
    args = (*ARGS, "--dtype", "float64", "--epochs", "10", "--save", "all")
    ranks = start(torchrun("train", *args, "--out", root / "ranks"))
    train_here(*args, "--out", root / "one")
    out, _ = finish(ranks)
    assert out.count("sweep of 4 runs") == 1  # rank 0 alone reports
    return root / "one" / SWEEP, root / "ranks" / SWEEP


def assert_close(expected: dict, actual: dict, what: str) -> None:
    assert expected.keys() == actual.keys(), what
    for key, value in expected.items():
        if np.asarray(value).dtype.kind in "fc":
            np.testing.assert_allclose(actual[key], value, rtol=RTOL, atol=1e-12,
                                       err_msg=f"{what}: {key}")
        else:
            np.testing.assert_array_equal(actual[key], value, err_msg=f"{what}: {key}")


def test_sweep_equals_single_process(sweeps):
    one, ranks = sweeps
    # the same index, so info, table and figures read both alike
    assert json.loads((ranks / "sweep.json").read_text()) == json.loads(
        (one / "sweep.json").read_text())
    for a, b in zip(find_runs([one]), find_runs([ranks]), strict=True):
        expected, actual = Run(a), Run(b)
        assert (actual.config, actual.status, actual.saved_epochs) == (
            expected.config, "complete", expected.saved_epochs)
        assert_close({k: v for k, v in expected.metrics().items() if k != "seconds"},
                     {k: v for k, v in actual.metrics().items() if k != "seconds"}, b.name)
        for epoch in expected.saved_epochs:
            assert_close(expected.state_dict(epoch), actual.state_dict(epoch), f"{b.name}@{epoch}")


def _same_result(expected: Path, actual: Path, kind: str) -> None:
    (attrs_a, a), (attrs_b, b) = read_result(expected, kind), read_result(actual, kind)
    assert {k: v for k, v in attrs_a.items() if k != "created"} == {
        k: v for k, v in attrs_b.items() if k != "created"}
    assert_close(a, b, actual.name)


def test_slice_and_gradnorm_equal_single_process(sweeps, tmp_path):
    _, ranks = sweeps
    runs = [ranks / f"{SWEEP}0-seed0.h5", ranks / f"{SWEEP}0.3-seed0.h5"]
    common = ("--out", tmp_path / "ranks", "--format", "png", "--quiet")
    sliced = start(torchrun("flatness", *runs, "--points", "9", *common))
    expected = flatness(open_runs(runs), SliceOptions(points=9), tmp_path / "one", device=CPU,
                        progress=False)
    out, _ = finish(sliced)
    assert out.count("slice: ") == 3  # the two runs' three models of Fig. 5, reported once
    for path in expected:
        _same_result(path, tmp_path / "ranks" / path.name, "slice")

    amplitudes = start(torchrun("gradnorm", *runs, "--skip-epochs", "0", *common))
    expected = gradnorm(open_runs(runs), tmp_path / "one" / "gradnorm.h5", device=CPU,
                        progress=False)
    finish(amplitudes)
    _same_result(expected, tmp_path / "ranks" / "gradnorm.h5", "gradnorm")


def test_generalization_equals_single_process(sweeps, tmp_path):
    _, ranks = sweeps
    measures = ("frobenius_sum", "output_margin")
    common = ("--measures", ",".join(measures), "--resamples", "20", "--format", "png", "--quiet")
    shared = start(torchrun("generalization", ranks, "--out", tmp_path / "ranks", *common))
    expected = run_generalization(open_runs([ranks]), tmp_path / "one" / "generalization.h5",
                                  GeneralizationOptions(measures=measures, resamples=20),
                                  device=CPU, progress=False)
    out, _ = finish(shared)
    assert out.count("generalization: ") == 1  # rank 0 alone reports, writes tables and draws
    _same_result(expected, tmp_path / "ranks" / "generalization.h5", "generalization")


def _worker(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker process of `rank` (Linux: read from /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker via /proc")
def test_killed_rank_then_resume_finishes_only_what_is_missing(tmp_path):
    args = (*ARGS, "--epochs", "60", "--out", tmp_path)
    folder = tmp_path / SWEEP
    plan = [folder / f"{SWEEP}{b}-seed{s}.h5" for s in (0, 1) for b in ("0", "0.3")]
    launcher = start(torchrun("train", *args))
    rank1 = distributed.share(plan, distributed.World(rank=1, size=2))
    deadline = time.monotonic() + 240
    while not all(p.exists() for p in rank1):  # rank 1 made its files: it is training now
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.01)
    os.kill(_worker(launcher.pid, rank=1), signal.SIGKILL)
    finish(launcher, ok=False)  # torchrun stops rank 0 too (or rank 0 loses contact and says so)

    left = {p: Run(p) for p in plan if p.exists()}  # every file a rank left is a readable run
    assert any(left[p].status != "complete" for p in rank1)  # the kill landed mid-sweep
    finished = {p: p.stat().st_mtime_ns for p, run in left.items() if run.status == "complete"}

    _, err = finish(start(torchrun("train", *args)), ok=False)  # bad input, alike on each rank
    assert err.count("landscape: error:") == 2 and "--resume" in err, err

    finish(start(torchrun("train", *args, "--resume")))
    assert sorted(folder.iterdir()) == sorted([*plan, folder / "sweep.json"])  # no strays
    assert json.loads((folder / "sweep.json").read_text())["runs"] == [p.name for p in plan]
    for path in plan:
        run = Run(path)
        assert (run.status, run.epochs_done) == ("complete", 60)
        assert np.isfinite(run.metric("train_loss")).all()  # no epoch lost
    for path, mtime in finished.items():  # finished runs were skipped, not retrained
        assert path.stat().st_mtime_ns == mtime
