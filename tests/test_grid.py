"""Sweeps over more axes than the flood level and the seed (issue 24): the grid of configs, the
runs' file names, the sweep index, and `landscape train --lr ... --width ...`."""

import json

import pytest
from conftest import landscape_cli, tiny_config

from landscape import Run, expand
from landscape.errors import BadInput
from landscape.training.grid import run_names, varied_axes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_grid_is_the_product_of_every_axis():
    base = tiny_config()
    configs = expand(base, [0.0, 0.1], [0, 1], lr=[1e-3, 1e-2], width=[8, 16, 32])
    assert len(configs) == 2 * 2 * 2 * 3
    cells = {(c.objective.flood, c.seed, c.optim.lr, c.model.width) for c in configs}
    assert len(cells) == 24
    assert all(c.model.depth == base.model.depth and c.optim.batch_size == base.optim.batch_size
               for c in configs)
    assert all(c.data.seed == c.seed for c in configs)
    assert varied_axes(configs) == {"lr": [1e-3, 1e-2], "width": [8, 16, 32]}


def test_names_carry_only_the_axes_that_vary():
    plain = expand(tiny_config(), [0.0, 0.1], [0])
    assert run_names(plain) == [c.name for c in plain]  # sweeps as before keep their names
    wide = expand(tiny_config(), [0.0], [0], batch_size=[8, 16], weight_decay=[0.0, 1e-4])
    names = run_names(wide)
    assert len(set(names)) == 4
    assert names[0].endswith("-bs8-wd0") and names[-1].endswith("-bs16-wd0.0001")


@pytest.mark.parametrize("axes, message", [({"momentum": [0.9]}, "unknown sweep axis"),
                                           ({"lr": []}, "no values"),
                                           ({"lr": [0.1, 0.1]}, "repeats a value")])
def test_bad_axes_are_bad_input(axes, message):
    with pytest.raises(BadInput, match=message):
        expand(tiny_config(), [0.0], [0], **axes)


def test_the_command_trains_the_grid_and_records_it(tmp_path):
    result = landscape_cli("train", "--data", "two_gaussians", "--noise", "0.1", "--flood", "0",
                           "0.1", "--lr", "1e-3", "1e-2", "--width", "8,16", "--depth", "2",
                           "--epochs", "2", "--n-train", "40", "--n-val", "20", "--n-test", "40",
                           "--out", tmp_path, "-q", check=True)
    assert "sweep of 8 runs" in result.stdout
    folder = tmp_path / "two_gaussians-noise0.1-mlp-flood"
    index = json.loads((folder / "sweep.json").read_text())
    assert index["grid"]["lr"] == [1e-3, 1e-2] and index["grid"]["width"] == [8, 16]
    assert "depth" not in index["grid"]  # one value: not an axis
    for name in index["runs"]:
        config = Run(folder / name).config
        assert name.endswith(f"-lr{config.optim.lr:g}-w{config.model.width}.h5")
        assert config.model.depth == 2 and config.optim.epochs == 2
    table = landscape_cli("table", folder, check=True)
    assert table.stdout.count("|") > 8  # a row per setting (lr x width)


@pytest.mark.parametrize("args, message", [(["--lr", "0.1", "0.1"], "--lr 0.1 is given twice"),
                                           (["--width", "8,abc"], "takes int values")])
def test_bad_axis_values_on_the_command_line(tmp_path, args, message):
    result = landscape_cli("train", "--data", "two_gaussians", *args, "--epochs", "2", "--out",
                           tmp_path, "-q")
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
