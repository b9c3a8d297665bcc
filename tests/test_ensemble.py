"""Vectorized sweeps: every stacked member equals its model trained alone (float64), chunking and
`--ensemble`, and resuming an interrupted stacked sweep."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS, landscape_cli, tiny_config, train_interrupted

from landscape import memory
from landscape.config import ModelConfig
from landscape.config.execution import Execution
from landscape.data import load
from landscape.errors import BadInput
from landscape.flooding import flooded_objective, per_sample_loss
from landscape.memory import auto_chunk_size
from landscape.models import build_model, count_parameters
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.loop import epoch_generator
from landscape.training.members import balanced_chunks
from landscape.training.planner import train

FLOODS = [0.0, 0.3, 0.6]


pytestmark = pytest.mark.usefixtures("one_thread")


def _base(model: str = "mlp", **overrides):
    # eval_test "best" with few saved epochs: stacked members measure the test set at different
    # epochs (only those that reach a new best validation accuracy)
    config = tiny_config(epochs=6, dtype="float64", **{"save": "every:3", "eval_test": "best",
                                                        **overrides})
    return dataclasses.replace(config, model=dataclasses.replace(config.model, name=model))


def _assert_same_runs(paths_a, paths_b, *, rtol=1e-10):
    for pa, pb in zip(paths_a, paths_b):
        a, b = Run(pa), Run(pb)
        assert a.status == b.status == "complete"
        ma, mb = a.metrics(), b.metrics()
        for name in ma:
            if name != "seconds":
                np.testing.assert_allclose(ma[name], mb[name], rtol=rtol, atol=1e-12,
                                           err_msg=f"{a.name}: {name}")
        for epoch in a.saved_epochs:
            sa, sb = a.state_dict(epoch), b.state_dict(epoch)
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=1e-12)
        snap_a, snap_b = a.snapshot(), b.snapshot()
        assert (snap_a is None) == (snap_b is None)
        if snap_a is not None:
            assert (snap_a.step, snap_a.epoch) == (snap_b.step, snap_b.epoch)


@pytest.mark.parametrize("model, objective, data_seed", [
    ("mlp", "flood", None),     # each seed its own data draw: members on different data
    ("mlp", "iflood", 0),       # one shared draw
    ("mlp_bn", "flood", None),  # BatchNorm: running statistics per member under vmap
])
def test_stacked_members_equal_runs_trained_alone(tmp_path, model, objective, data_seed):
    base = _base(model)
    base = dataclasses.replace(base, objective=dataclasses.replace(base.objective, kind=objective))
    configs = expand(base, FLOODS, [0, 1], data_seed=data_seed)
    stacked = train(configs, out=tmp_path / "stacked",
                    execution=Execution(ensemble="6", progress=False))
    alone = train(configs, out=tmp_path / "alone",
                  execution=Execution(ensemble="off", progress=False))
    _assert_same_runs(stacked.paths, alone.paths)
    # the members really differ: in data draw (unless fixed), seed and flood level
    first, last = Run(stacked.paths[0]), Run(stacked.paths[-1])
    assert (first.config.data.seed != last.config.data.seed) == (data_seed is None)
    assert first.metric("train_loss")[-1] != last.metric("train_loss")[-1]


def test_a_member_equals_a_plain_pytorch_loop(tmp_path):
    """Independent reference: nn.Module, torch.optim.Adam, the same init and batch order."""
    configs = [c.resolved() for c in expand(_base(), FLOODS, [0, 1])]
    result = train(configs, out=tmp_path, execution=Execution(ensemble="6", progress=False))
    for config, path in zip(configs, result.paths):
        data = load(config.data, dtype=torch.float64)
        model = build_model(config.model, (10,), 1, seed=config.seed).double()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
        n, size = len(data.train), config.optim.batch_size
        train_loss = []
        for epoch in range(1, config.optim.epochs + 1):
            order = torch.randperm(n, generator=epoch_generator(config.seed, epoch, 1))
            for start in range(0, n, size):
                batch = order[start:start + size]
                losses = per_sample_loss(model(data.train.x[batch]), data.train.y[batch], "logistic")
                optimizer.zero_grad()
                flooded_objective(losses, config.objective.flood).backward()
                optimizer.step()
            with torch.no_grad():
                train_loss.append(float(per_sample_loss(model(data.train.x), data.train.y,
                                                        "logistic").mean()))
        run = Run(path)
        np.testing.assert_allclose(run.metric("train_loss")[1:], train_loss, rtol=1e-10)
        for key, value in run.state_dict(config.optim.epochs).items():
            torch.testing.assert_close(value, model.state_dict()[key], rtol=1e-10, atol=1e-12)


def test_resuming_an_interrupted_stacked_sweep(tmp_path, monkeypatch):
    configs = expand(_base(save="every:2"), FLOODS, [0, 1])
    reference = train(configs, out=tmp_path / "ref",
                      execution=Execution(ensemble="6", progress=False))
    # killed in epoch 3, after 2 of its 6 commits
    train_interrupted(configs, tmp_path / "cut", commits=3 * 6 + 2, ensemble="6",
                      monkeypatch=monkeypatch)
    done = sorted(Run(p).epochs_done for p in sorted((tmp_path / "cut").rglob("*.h5")))
    assert done == [2, 2, 2, 2, 3, 3]  # two groups of members, resumed from different epochs
    resumed = train(configs, out=tmp_path / "cut", resume=True,
                    execution=Execution(ensemble="6", progress=False))
    _assert_same_runs(resumed.paths, reference.paths)
    again = train(configs, out=tmp_path / "cut", resume=True, execution=Execution(progress=False))
    assert set(again.statuses) == {"skipped"}


def test_chunks_are_balanced_and_bounded_by_memory(monkeypatch, tmp_path):
    assert [len(c) for c in balanced_chunks(list(range(51)), 16)] == [13, 13, 13, 12]
    assert [len(c) for c in balanced_chunks(list(range(5)), 1)] == [1] * 5
    cpu = torch.device("cpu")
    assert auto_chunk_size(ModelConfig("mlp", depth=5, width=500), cpu) == 1
    assert auto_chunk_size(ModelConfig("mlp", depth=5, width=32), cpu) > 1
    assert auto_chunk_size(ModelConfig("mlp", depth=5, width=500), torch.device("cuda")) > 100
    # With room for only ~3 members, a request for 6 trains in chunks of at most 3.
    config = _base().resolved()
    n_params = count_parameters(build_model(config.model, (10,), 1))
    per_member = memory.member_bytes(config.model, n_params, (10,), 16, 8)
    monkeypatch.setattr(memory, "free_memory", lambda device: 2 * (
        memory.EVAL_NUMBERS * 8 + 3 * per_member + 8))
    sizes = []
    monkeypatch.setattr("landscape.training.planner._train_part",
                        lambda part, data, *args, **kw: sizes.append(len(part)) or
                        ["complete"] * len(part))
    train(expand(config, FLOODS, [0, 1]), out=tmp_path,
          execution=Execution(ensemble="6", progress=False))
    assert sizes == [3, 3]


def test_bad_ensemble_option_is_one_line_and_writes_nothing(tmp_path):
    with pytest.raises(BadInput, match="--ensemble"):
        train(expand(_base(), FLOODS, [0]), out=tmp_path / "a",
              execution=Execution(ensemble="many", progress=False))
    result = landscape_cli("train", *TINY_TRAIN_ARGS, "--flood", "0", "0.1", "--ensemble", "0",
                           "--out", tmp_path / "b")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
