"""The adaptive flood level (schedule.py): the rule on scripted accuracies, its record in the run
file, stacked members with their own trajectories, exact resume, and bad input to its options
and AdaFlood's."""

from __future__ import annotations

import csv as csv_module
import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_ARGS, landscape_cli, tiny_config, train_interrupted

from landscape.config import ObjectiveConfig
from landscape.config.execution import Execution
from landscape.errors import BadInput
from landscape.runs.store import Run
from landscape.training.grid import expand
from landscape.training.planner import train
from landscape.training.schedule import AdaptiveRule, LevelState, levels, update

pytestmark = pytest.mark.usefixtures("one_thread")
RULE = AdaptiveRule(step=0.1, threshold=0.05, max_level=0.25)


def test_the_rule_on_a_scripted_sequence():
    train_acc = [0.90, 0.95, 1.00, 1.00, 0.98, 0.97, 0.99, 0.96, 0.95, 0.97]
    val_acc = [0.60, 0.70, 0.70, 0.72, 0.80, 0.74, 0.70, 0.86, 0.95, 0.20]
    # epochs 1-2: training error not zero yet, so the rising accuracy moves nothing;
    # 3: zero error, x = 0.70 > x' + lambda = 0 + 0.05: raise, x' = 0.70;
    # 4: +0.02 is within lambda; 5: 0.80 > 0.75: raise (error 0.02 now: the rule stays on);
    # 6: 0.74 < 0.75: lower, x' = 0.74; 7: 0.70 is not below 0.69; 8: 0.86 > 0.79: raise;
    # 9: 0.95 > 0.91: raise, clipped at b_max = 0.25; 10: 0.20 < 0.90: lower.
    expected = [0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.1, 0.1, 0.2, 0.25, 0.15]
    np.testing.assert_allclose(levels(0.0, RULE, train_acc, val_acc), expected, atol=1e-12)


def test_lowering_clips_at_zero_and_the_reference_moves_even_when_clipped():
    state = LevelState(0.05, reference=0.8, active=True)
    state = update(state, RULE, train_acc=0.9, val_acc=0.7)      # 0.05 - 0.1 -> 0
    assert state == LevelState(0.0, 0.7, True)
    state = update(state, RULE, train_acc=0.9, val_acc=0.6)      # fired, clipped: b stays 0
    assert state == LevelState(0.0, 0.6, True)
    assert update(state, RULE, train_acc=0.9, val_acc=0.64) == state  # measured from 0.6


def test_more_than_lambda_is_strict_up_to_float32_rounding():
    """Accuracies are counts / n in float32: one point on 100 is not more than lambda = 0.01."""
    rule = AdaptiveRule(step=0.01, threshold=0.01, max_level=0.5)
    acc = [float(np.float32(k / 100)) for k in (81, 82, 83)]
    start = LevelState(0.2, reference=acc[0], active=True)
    assert update(start, rule, train_acc=1.0, val_acc=acc[1]) == start
    assert update(start, rule, train_acc=1.0, val_acc=acc[2]).level == pytest.approx(0.21)


def _adaptive(**overrides):
    config = tiny_config(noise=0.0, epochs=14, dtype="float64", save="every:4", **overrides)
    objective = ObjectiveConfig(schedule="adaptive", schedule_step=0.05, schedule_threshold=0.0)
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=0.03),
                               objective=objective)


def test_stacked_members_follow_their_own_levels_and_resume_exactly(tmp_path, monkeypatch):
    configs = expand(_adaptive(), [0.0, 0.1], [0, 1])
    stacked = train(configs, out=tmp_path / "stacked",
                    execution=Execution(ensemble="4", progress=False))
    alone = train(configs, out=tmp_path / "alone",
                  execution=Execution(ensemble="off", progress=False))
    trajectories = []
    for path, other in zip(stacked.paths, alone.paths):
        run, m = Run(path), Run(path).metrics()
        b0 = run.config.objective.flood
        rule = AdaptiveRule.of(run.config.objective)
        # row e is the level epoch e trained with; it follows the rule on the recorded accuracies
        expected = levels(b0, rule, m["train_acc"][1:], m["val_acc"][1:])
        np.testing.assert_array_equal(m["flood_level"][1:], expected[:-1])
        assert m["flood_level"][0] == b0
        np.testing.assert_allclose(m["test_loss"], Run(other).metrics()["test_loss"], rtol=1e-10)
        np.testing.assert_array_equal(m["flood_level"], Run(other).metrics()["flood_level"])
        trajectories.append(tuple(m["flood_level"]))
    assert len(set(trajectories)) == len(trajectories), "members should differ in their b"
    assert any(len(set(t)) > 2 for t in trajectories), "the rule never moved b twice"

    # killed in epoch 9, after its first commit
    train_interrupted(configs, tmp_path / "cut", commits=9 * 4 + 1, ensemble="4",
                      monkeypatch=monkeypatch)
    resumed = train(configs, out=tmp_path / "cut", resume=True,
                    execution=Execution(ensemble="4", progress=False))
    for a, b in zip(resumed.paths, stacked.paths):
        ma, mb = Run(a).metrics(), Run(b).metrics()
        np.testing.assert_array_equal(ma["flood_level"], mb["flood_level"])
        for name in ma:  # members resumed from another epoch stack differently: float rounding
            if name != "seconds":
                np.testing.assert_allclose(ma[name], mb[name], rtol=1e-10, atol=1e-12,
                                           err_msg=name)
        for key, value in Run(a).state_dict(14).items():
            torch.testing.assert_close(value, Run(b).state_dict(14)[key], rtol=1e-10, atol=1e-12)


def test_an_adaptive_run_from_b_0_takes_its_snapshot_once_b_has_risen(tmp_path):
    """The first-below-flood snapshot is taken against the level of the epoch: never while b is
    0, at the first step of a later epoch whose mini-batch loss fell below that epoch's b; it is
    the same whether the run trains alone or stacked with others."""
    configs = expand(_adaptive(), [0.0, 0.1], [0])
    alone = [Run(train([c], out=tmp_path / "alone", execution=Execution(progress=False)).paths[0])
             for c in configs]
    stacked = [Run(p) for p in train(configs, out=tmp_path / "stacked",
                                     execution=Execution(ensemble="2", progress=False)).paths]
    run, snap = alone[0], alone[0].snapshot()
    level = run.metrics()["flood_level"]
    assert snap is not None, "b rose above 0 and the loss fell below it: a snapshot is due"
    assert level[snap.epoch] > 0 and 0 <= snap.batch_loss < level[snap.epoch]
    first_raised = int(np.argmax(level > 0))  # the first epoch that trained with b > 0
    assert 1 < first_raised <= snap.epoch
    for a, b in zip(alone, stacked):
        sa, sb = a.snapshot(), b.snapshot()
        assert (sa.step, sa.epoch) == (sb.step, sb.epoch)
        for key, value in sa.state.items():
            torch.testing.assert_close(value, sb.state[key], rtol=1e-10, atol=1e-12)
    assert "step" in landscape_cli("info", run.path, check=True).stdout.split("snapshot")[1]


def test_analyses_draw_an_adaptive_run_from_b_0_as_flooded(tmp_path):
    """An adaptive run that starts at b = 0 floods later: gradnorm and flatness mark it "o" /
    solid blue and name its objective, not "b = 0" (which stays the plain run's)."""
    from landscape.analysis.flatness import flatness
    from landscape.analysis.gradnorm import gradnorm
    from landscape.figures.flatness import plot_flatness
    from landscape.figures.flatness_text import read_slices
    from landscape.figures.gradnorm import plot_gradnorm
    from landscape.measures.options import SliceOptions
    from landscape.results import read_result
    from landscape.runs.folders import open_runs

    plain = tiny_config(noise=0.0, epochs=4, save="all")
    paths = train([dataclasses.replace(_adaptive(), optim=plain.optim, save="all"), plain],
                  out=tmp_path / "runs", execution=Execution(progress=False)).paths
    runs = open_runs(paths)
    cpu = torch.device("cpu")
    _, a = read_result(gradnorm(runs, tmp_path / "g.h5", device=cpu, progress=False), "gradnorm")
    assert a["flooded"].tolist() == [True, False]
    assert [o.decode() if isinstance(o, bytes) else o for o in a["objective"]] == [
        "flood0-adaptive", "flood0"]
    csv = plot_gradnorm(tmp_path / "g.h5", tmp_path / "g", ["png"], skip_epochs=0)[-1]
    assert csv.suffix == ".csv"
    slices = flatness(runs, SliceOptions(points=3), tmp_path / "s", device=cpu, progress=False)
    attrs = [s[0] for s in read_slices(slices)]
    assert [(x["role"], x["which"]) for x in attrs] == [("flooded", "last"), ("plain", "last")]
    with open(plot_flatness(slices, tmp_path / "f", ["png"])[-1], newline="") as f:
        models = {row["model"] for row in csv_module.DictReader(f)}
    assert models == {"flood0-adaptive, last epoch (4)", "b = 0, last epoch (4)"}


def test_fixed_runs_record_their_constant_level(tmp_path):
    run = Run(train([tiny_config(flood=0.3, epochs=2)], out=tmp_path,
                    execution=Execution(progress=False)).paths[0])
    assert (run.metric("flood_level") == 0.3).all()


def test_schedule_options_are_part_of_the_config_and_old_configs_keep_their_digest():
    plain = tiny_config().resolved()
    assert "schedule" not in plain.to_json()  # configs from before the schedule: same JSON
    adaptive = dataclasses.replace(plain, objective=dataclasses.replace(
        plain.objective, schedule="adaptive")).resolved()
    assert adaptive.objective.schedule_step == 0.01 and adaptive.objective.schedule_max == 0.5
    assert type(adaptive).from_json(adaptive.to_json()) == adaptive
    assert adaptive.name.endswith("flood0-adaptive-seed0")
    with pytest.raises(BadInput, match="need --flood-schedule adaptive"):
        ObjectiveConfig(schedule_step=0.1)


@pytest.mark.parametrize("extra, message", [
    (("--flood-step", "0.1"), "--flood-schedule adaptive"),
    (("--flood-schedule", "adaptive", "--flood-max", "-1"), "--flood-max"),
    (("--flood-schedule", "adaptive", "--objective", "adaflood"), "does not apply to adaflood"),
    (("--objective", "adaflood", "--flood", "0.1"), "--flood does not apply"),
    (("--objective", "adaflood", "--adaflood-gamma", "1.5"), "--adaflood-gamma"),
])
def test_bad_schedule_or_adaflood_input_is_one_line_and_exit_2(tmp_path, extra, message):
    result = landscape_cli("train", *TINY_TRAIN_ARGS, "--epochs", "1", *extra,
                           "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
