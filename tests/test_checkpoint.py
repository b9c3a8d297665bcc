"""Checkpointing at an interval: metrics are committed in blocks (here, as train_interrupted
sets it, every epoch), the resume state only at the checkpoints (an interval in seconds, saved
epochs but 0, the final one), and a resume from the last checkpoint recomputes the epochs after it
to the numbers of an uninterrupted run, bit for bit."""

import dataclasses

import pytest
import torch
from conftest import assert_same_metrics, tiny_config, train_interrupted

from landscape.config import OptimConfig
from landscape.config.execution import Execution
from landscape.runs.store import Run
from landscape.runs.writer import RunWriter
from landscape.training.grid import expand
from landscape.training.planner import train

NEVER = 1e9  # seconds: only saved and final epochs checkpoint


def _sgd_sweep():
    base = tiny_config(epochs=10, flood=0.0, save="epochs:3,7")
    base = dataclasses.replace(base, optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9,
                                                       batch_size=16, epochs=10), dtype="float64")
    return expand(base, [0.0, 0.2], [0, 1])


@pytest.mark.parametrize("ensemble", ["off", "4"])
def test_sgd_momentum_resumes_bit_for_bit_from_the_last_checkpoint(tmp_path, monkeypatch, ensemble):
    configs = _sgd_sweep()
    reference = train(configs, out=tmp_path / "ref",
                      execution=Execution(ensemble=ensemble, progress=False, checkpoint_every=0))
    train_interrupted(configs, tmp_path / "cut", commits=4 * 6 + 2 if ensemble == "4" else 6,
                      ensemble=ensemble, monkeypatch=monkeypatch,
                      checkpoint_every=NEVER)  # killed after epoch 5
    first = Run(sorted((tmp_path / "cut").rglob("*.h5"))[0])
    assert first.epochs_done >= 5 and first.resume_epochs == (3,)  # metrics ahead of the state
    train(configs, out=tmp_path / "cut", resume=True,
          execution=Execution(ensemble=ensemble, progress=False, checkpoint_every=NEVER))
    for ref_path in reference.paths:
        ref, got = Run(ref_path), Run(tmp_path / "cut" / ref_path.relative_to(tmp_path / "ref"))
        assert got.status == "complete" and got.resume_epochs == (7, 10)
        assert_same_metrics(ref, got)
        for epoch in ref.saved_epochs:
            for key, t in ref.state_dict(epoch).items():
                assert torch.equal(t, got.state_dict(epoch)[key]), (epoch, key)
        ref_model, ref_optim = ref.resume_state()
        got_model, got_optim = got.resume_state()
        assert ref_optim and ref_optim.keys() == got_optim.keys()  # momentum buffers
        assert all(torch.equal(ref_optim[k], got_optim[k]) for k in ref_optim)


def test_the_interval_checkpoints_in_between(tmp_path, monkeypatch):
    """With a clock that advances 1 s an epoch and a 3 s interval, the state is written every
    third epoch as well as at saved and final ones: the slots hold the last two."""
    import landscape.training.recording as recording
    clock = iter(range(10_000))
    monkeypatch.setattr(recording.time, "monotonic", lambda: float(next(clock)))
    config = tiny_config(epochs=9, save="last")
    seen = []
    write = RunWriter.commit

    def spy(self, epoch, *args, **kwargs):
        seen.append((epoch, kwargs.get("resume") is not None))
        return write(self, epoch, *args, **kwargs)

    monkeypatch.setattr(RunWriter, "commit", spy)
    result = train([config], out=tmp_path, execution=Execution(progress=False,
                                                               checkpoint_every=3))
    checkpoints = [e for e, written in seen if written]
    assert checkpoints[0] > 0 and checkpoints[-1] == 9 and 1 < len(checkpoints) < 9
    assert Run(result.paths[0]).resume_epochs == tuple(checkpoints[-2:])


def test_bad_interval_is_bad_input():
    from landscape.errors import BadInput
    with pytest.raises(BadInput, match="checkpoint-every"):
        Execution(checkpoint_every=-1)
