import dataclasses

import pytest

from landscape.config import (
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    save_epochs,
)
from landscape.config.floodgrid import parse_flood_levels
from landscape.errors import BadInput


def test_flood_ranges_and_lists():
    assert parse_flood_levels(["0:0.5:0.01"])[:3] == (0.0, 0.01, 0.02)
    assert len(parse_flood_levels(["0:0.5:0.01"])) == 51
    assert parse_flood_levels(["0:0.5:0.01"])[7] == 0.07
    assert parse_flood_levels(["0", "0.1,0.2", "0.3"]) == (0.0, 0.1, 0.2, 0.3)
    assert parse_flood_levels(["0:0.1:0.03"]) == (0.0, 0.03, 0.06, 0.09)


@pytest.mark.parametrize("tokens, repeated", [
    (["0.1", "0.1"], "0.1"), (["0.1,0.2", "0.1"], "0.1"), (["0:0.3:0.1", "0.2"], "0.2"),
    (["0.10", "0.1"], "0.1"), (["0:0.2:0.1", "0.2:0.4:0.1"], "0.2")])
def test_repeated_flood_levels(tokens, repeated):
    """A level given twice would have trained one run where two were asked for."""
    with pytest.raises(BadInput, match=f"flood level {repeated} is given twice"):
        parse_flood_levels(tokens)


@pytest.mark.parametrize("tokens", [["-0.1"], ["abc"], ["0.5:0.1:0.1"], ["0:1"], ["0:1:0"], [","],
                                    ["nan"], ["inf"]])
def test_bad_flood_levels(tokens):
    with pytest.raises(BadInput):
        parse_flood_levels(tokens)


def test_save_policies():
    assert save_epochs("all", 3) == (0, 1, 2, 3)
    assert save_epochs("last", 5) == (0, 5)
    assert save_epochs("none", 5) == (0,)
    assert save_epochs("every:4", 10) == (0, 4, 8, 10)
    assert save_epochs("epochs:3,7", 10) == (0, 3, 7, 10)
    log = save_epochs("log", 500)
    assert log[0] == 0 and log[1] == 1 and log[-1] == 500 and 20 <= len(log) <= 31


def test_config_round_trip_and_resolution():
    config = RunConfig(data=DataConfig("spiral", noise=0.05), model=ModelConfig("mlp"),
                       optim=OptimConfig(milestones=(250, 400), name="sgd", lr=0.1, momentum=0.9))
    resolved = config.resolved()
    assert resolved.model.depth == 5 and resolved.model.width == 500
    assert resolved.objective.loss == "logistic"
    assert resolved.data.n_train == 200 and resolved.data.spiral_tau == 0.0
    assert RunConfig.from_json(resolved.to_json()) == resolved
    assert resolved.digest() == RunConfig.from_json(resolved.to_json()).digest()
    assert RunConfig(data=DataConfig("mnist"), model=ModelConfig("mlp")).resolved().model.width == 1000
    assert OptimConfig(lr=0.1, milestones=(2, 4)).lr_at(3) == pytest.approx(0.01)
    assert OptimConfig(lr=0.1, milestones=(2, 4)).lr_at(2) == pytest.approx(0.1)


# The paper's table (Sec. 4.1, 4.2; docs/settings.md), written out here rather than read from
# config.PAPER_DEFAULTS: (model, depth, width, loss, optimizer, lr, momentum, batch, epochs, n_train
# or the validation share). Batch 128 for the images is ours (the paper gives none).
PAPER_TABLE = {
    "two_gaussians": ("mlp", 5, 500, "logistic", "adam", 1e-3, 0.0, 100, 500, 100),
    "sinusoid": ("mlp", 5, 500, "logistic", "adam", 1e-3, 0.0, 100, 500, 100),
    "spiral": ("mlp", 5, 500, "logistic", "adam", 1e-3, 0.0, 100, 500, 200),
    "mnist": ("mlp", 2, 1000, "ce", "sgd", 0.1, 0.9, 128, 500, 0.2),
    "kmnist": ("mlp", 2, 1000, "ce", "sgd", 0.1, 0.9, 128, 500, 0.2),
    "svhn": ("resnet18", None, None, "ce", "sgd", 0.1, 0.9, 128, 500, 0.2),
    "cifar10": ("resnet44", None, None, "ce", "sgd", 0.1, 0.9, 128, 500, 0.2),
    "cifar100": ("resnet44", None, None, "ce", "sgd", 0.1, 0.9, 128, 500, 0.2),
}


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_library_defaults_are_the_papers_table(name):
    """From Python, a config that names only the data set resolves to the paper's recipe, not
    the synthetic one (the CLI adds nothing: its options default to unset)."""
    r = RunConfig(DataConfig(name)).resolved()
    split = r.data.n_train if r.data.n_train is not None else r.data.val_fraction
    got = (r.model.name, r.model.depth, r.model.width, r.objective.loss, r.optim.name, r.optim.lr,
           r.optim.momentum, r.optim.batch_size, r.optim.epochs, split)
    assert got == PAPER_TABLE[name]
    assert RunConfig(DataConfig(name), ModelConfig(PAPER_TABLE[name][0])).resolved() == r
    if name in ("svhn", "cifar10"):  # 85:15 with augmentation
        assert RunConfig(DataConfig(name), augment=True).resolved().data.val_fraction == 0.15


def test_defaults_fill_only_what_was_left_unset():
    r = RunConfig(DataConfig("mnist"), optim=OptimConfig(name="adam", epochs=3)).resolved()
    assert (r.optim.name, r.optim.lr, r.optim.momentum, r.optim.epochs) == ("adam", 1e-3, 0.0, 3)
    r = RunConfig(DataConfig("spiral"), optim=OptimConfig(name="sgd")).resolved()
    assert (r.optim.lr, r.optim.momentum, r.optim.batch_size) == (0.1, 0.0, 100)
    r = RunConfig(DataConfig("cifar10"), optim=OptimConfig(lr=0.05, momentum=0.5)).resolved()
    assert (r.optim.name, r.optim.lr, r.optim.momentum) == ("sgd", 0.05, 0.5)
    assert RunConfig(DataConfig("mnist"), save="every:100").save_epochs == (0, 100, 200, 300,
                                                                         400, 500)


def test_cli_and_library_resolve_alike(tmp_path):
    """`landscape train` passes unset options as None: the stored config is the library's."""
    from conftest import MNIST_SUBSET, landscape_cli

    from landscape.runs.store import Run
    landscape_cli("train", "--data", "mnist", "--data-dir", MNIST_SUBSET, "--epochs", "1",
                  "--width", "8", "--out", tmp_path, "--name", "m", "-q", check=True)
    stored = Run(tmp_path / "m.h5").config
    assert stored == RunConfig(DataConfig("mnist"), ModelConfig(width=8),
                               optim=OptimConfig(epochs=1), save="every:10").resolved()
    assert (stored.optim.name, stored.optim.lr, stored.optim.momentum) == ("sgd", 0.1, 0.9)


@pytest.mark.parametrize("make", [
    lambda: DataConfig("cifar11"),
    lambda: DataConfig("spiral", noise=0.6),
    lambda: ModelConfig("vgg"),
    lambda: ObjectiveConfig(flood=-0.1),
    lambda: ObjectiveConfig(kind="adaflood2"),
    lambda: OptimConfig(epochs=0),
    lambda: OptimConfig(lr=-1),
    lambda: OptimConfig(milestones=(400, 250)),
    lambda: RunConfig(data=DataConfig("mnist"), model=ModelConfig("mlp"),
                      objective=ObjectiveConfig(loss="logistic")),
    lambda: RunConfig(data=DataConfig("spiral"), model=ModelConfig("mlp"), save="every:0"),
    lambda: RunConfig(data=DataConfig("spiral"), model=ModelConfig("mlp"), augment=True),
])
def test_invalid_configs_are_bad_input(make):
    with pytest.raises(BadInput):
        make()


def test_run_names():
    config = RunConfig(data=DataConfig("two_gaussians", noise=0.1), model=ModelConfig("mlp"))
    config = dataclasses.replace(config, objective=ObjectiveConfig(flood=0.3), seed=2)
    assert config.name == "two_gaussians-noise0.1-mlp-flood0.3-seed2"
