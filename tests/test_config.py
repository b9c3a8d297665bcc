import dataclasses

import pytest

from landscape.config import (DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig,
                              parse_flood_levels, save_epochs)
from landscape.errors import BadInput


def test_flood_ranges_and_lists():
    assert parse_flood_levels(["0:0.5:0.01"])[:3] == (0.0, 0.01, 0.02)
    assert len(parse_flood_levels(["0:0.5:0.01"])) == 51
    assert parse_flood_levels(["0:0.5:0.01"])[7] == 0.07
    assert parse_flood_levels(["0", "0.1,0.2", "0.1"]) == (0.0, 0.1, 0.2)
    assert parse_flood_levels(["0:0.1:0.03"]) == (0.0, 0.03, 0.06, 0.09)


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
