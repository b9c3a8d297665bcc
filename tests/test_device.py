"""The GPU speed switches (landscape/device.py), checked on the CPU: compile plumbing, bf16 autocast,
channels_last layout."""

import numpy as np
import torch
from conftest import landscape_cli, tiny_config

from landscape.config.execution import Execution
from landscape.device import autocast, channels_last
from landscape.runs.store import Run
from landscape.training.planner import train


def test_compile_wraps_the_training_forward_once_and_saves_plain_state(tmp_path, monkeypatch):
    calls = []

    def fake_compile(fn, **kwargs):  # the real one takes a minute on a CPU; see benchmarks/
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    config = tiny_config(epochs=3)
    result = train([config], out=tmp_path, execution=Execution(device="cpu", progress=False,
                                                               compile=True))
    assert len(calls) == 1
    plain = Run(train([config], out=tmp_path / "plain",
                      execution=Execution(device="cpu", progress=False)).paths[0])
    compiled = Run(result.paths[0])
    assert list(compiled.state_dict(3)) == list(plain.state_dict(3))  # no _orig_mod. prefixes
    np.testing.assert_array_equal(compiled.metric("train_loss"), plain.metric("train_loss"))


def test_bf16_autocast_context_and_its_absence():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert (a @ b).dtype == torch.float32


def test_channels_last_keeps_values_and_puts_channels_innermost():
    x = torch.randn(5, 3, 4, 6)
    y = channels_last(x)
    assert torch.equal(x, y) and y.is_contiguous(memory_format=torch.channels_last)
    stacked = channels_last(x[None])                         # [1, N, C, H, W]: one member
    assert stacked[0].is_contiguous(memory_format=torch.channels_last)


def test_amp_choices_are_checked(tmp_path, tiny_args):
    result = landscape_cli("train", *tiny_args, "--amp", "fp16", "--out", tmp_path)
    assert result.returncode == 2 and "fp16" in result.stderr
