"""The trainer's core (issue 12): the loop is a generator that writes nothing, the recorder's
block commits give the files of commits every epoch, and a stacked ResNet chunk equals its members
trained alone."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import assert_same_metrics, tiny_config

from landscape.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from landscape.config.execution import Execution
from landscape.data import Dataset, Split, Standardize
from landscape.runs.store import Run
from landscape.runs.writer import RunWriter
from landscape.training import recording
from landscape.training.grid import expand
from landscape.training.loop import Start, epochs
from landscape.training.members import MemberData
from landscape.training.planner import train


def _images(seed: int, n: int = 12) -> Dataset:
    """A tiny CIFAR-shaped set of random uint8 images (10 classes) with one flipped label."""
    g = torch.Generator().manual_seed(seed)
    standardize = Standardize.of([0.5] * 3, [0.25] * 3, device=torch.device("cpu"),
                                 dtype=torch.float64)

    def split() -> Split:
        y = torch.randint(0, 10, (n,), generator=g)
        noisy = y.clone()
        noisy[0] = (y[0] + 1) % 10
        return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), noisy,
                     y, standardize)

    return Dataset(train=split(), val=split(), test=split(), num_classes=10)


def _resnet_config(flood: float, seed: int) -> RunConfig:
    return RunConfig(DataConfig("cifar10"), ModelConfig("resnet44"),
                     optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9, batch_size=6, epochs=2),
                     seed=seed, save="none", eval_test="every", dtype="float64").resolved()


def test_a_stacked_resnet_chunk_equals_its_members_alone_and_writes_nothing(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    draws = [_images(0), _images(1)]
    configs = [dataclasses.replace(_resnet_config(0.0, 0), objective=dataclasses.replace(
        _resnet_config(0.0, 0).objective, flood=b)) for b in (0.0, 2.0)]
    configs[1] = dataclasses.replace(configs[1], seed=1)
    cpu = torch.device("cpu")
    stacked = list(epochs([Start(c) for c in configs], MemberData(draws, [0, 1]), device=cpu))
    assert [e.epoch for e in stacked] == [0, 1, 2] and stacked[-1].last
    assert os.listdir(tmp_path) == []  # the loop wrote nothing
    for k, (config, draw) in enumerate(zip(configs, draws)):
        alone = list(epochs([Start(config)], MemberData([draw], [0]), device=cpu))
        for got, want in zip(stacked, alone):
            for name, values in want.metrics.items():
                if name != "seconds":
                    torch.testing.assert_close(got.metrics[name][k], values[0], rtol=1e-9,
                                               atol=1e-12, equal_nan=True, msg=name)
        final = stacked[-1].group.member_state(k)  # BatchNorm statistics per member
        for key, tensor in alone[-1].group.member_state(0).items():
            torch.testing.assert_close(final[key], tensor, rtol=1e-9, atol=1e-12)
    # the members really differ: seed, data draw and flood level (2 is near the initial loss)
    assert stacked[-1].metrics["train_loss"][0] != stacked[-1].metrics["train_loss"][1]
    assert stacked[1].metrics["flood_level"].tolist() == [0.0, 2.0]


@pytest.mark.parametrize("ensemble", ["off", "4"])
def test_block_commits_write_what_commits_every_epoch_write(tmp_path, monkeypatch, ensemble):
    """Metric rows held back and committed only at checkpoints (a huge METRICS_EVERY, no share
    for cheap commits) give the same files as a commit every epoch: rows, saved weights,
    snapshots, resume state."""
    monkeypatch.setattr(recording, "COMMIT_SHARE", 0.0)
    configs = expand(tiny_config(epochs=12, save="epochs:5"), [0.0, 0.3], [0, 1])
    results = {}
    for every in (0, 1e9):
        monkeypatch.setattr(recording, "METRICS_EVERY", every)
        results[every] = train(configs, out=tmp_path / str(every), execution=Execution(
            ensemble=ensemble, progress=False, checkpoint_every=1e9))
    assert not list(tmp_path.rglob("*.partial"))  # the files' template is gone
    first, last = (Run(p) for p in (results[0].paths[0], results[0].paths[-1]))
    assert first.config.seed != last.config.seed  # each draw's flipped labels, not the template's
    assert not np.array_equal(first.flipped("train"), last.flipped("train"))
    for a, b in zip(results[0].paths, results[1e9].paths):
        ra, rb = Run(a), Run(b)
        assert ra.name == a.stem and ra.config.name == a.stem  # its own attributes, not the template's
        np.testing.assert_array_equal(ra.flipped("train"), rb.flipped("train"))
        assert ra.status == rb.status == "complete" and rb.epochs_done == 12
        assert_same_metrics(ra, rb)
        assert ra.saved_epochs == rb.saved_epochs == (0, 5, 12)
        for epoch in ra.saved_epochs:
            for key, t in ra.state_dict(epoch).items():
                assert torch.equal(t, rb.state_dict(epoch)[key])
        sa, sb = ra.snapshot(), rb.snapshot()
        assert (sa is None) == (sb is None) == (ra.config.objective.flood == 0)
        if sa is not None:
            assert (sa.step, sa.epoch, sa.batch_loss) == (sb.step, sb.epoch, sb.batch_loss)
        assert ra.resume_epochs == rb.resume_epochs == (5, 12)  # none at epoch 0


def test_a_kill_between_block_commits_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Rows held in memory since the last commit are lost by a kill and recomputed on resume:
    commits only at saved epochs (4, 8) and the last, interrupted after epoch 4's."""
    monkeypatch.setattr(recording, "COMMIT_SHARE", 0.0)
    monkeypatch.setattr(recording, "METRICS_EVERY", 1e9)
    configs = expand(tiny_config(epochs=12, save="epochs:4,8"), [0.0, 0.3], [0, 1])
    execution = Execution(progress=False, ensemble="4", checkpoint_every=1e9)
    reference = train(configs, out=tmp_path / "ref", execution=execution)
    write, seen = RunWriter.commit, []

    def interrupted(self, epoch, *args, **kwargs):
        if len(seen) == 8:  # epochs 0 and 4 of the four members are committed
            raise KeyboardInterrupt
        seen.append(epoch)
        return write(self, epoch, *args, **kwargs)

    monkeypatch.setattr(RunWriter, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(configs, out=tmp_path / "cut", execution=execution)
    monkeypatch.setattr(RunWriter, "commit", write)
    assert seen == [0] * 4 + [4] * 4
    cut = Run(sorted((tmp_path / "cut").rglob("*.h5"))[0])
    assert cut.epochs_done == 4 and cut.resume_epochs == (4,)
    train(configs, out=tmp_path / "cut", resume=True, execution=execution)
    for path in reference.paths:
        ref, got = Run(path), Run(tmp_path / "cut" / path.relative_to(tmp_path / "ref"))
        assert got.status == "complete" and got.resume_epochs == (8, 12)
        assert_same_metrics(ref, got)
