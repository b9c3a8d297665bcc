"""Flood-level selection (paper Sec. 4; docs/measurements.md) against a hand-computed example, and `landscape table`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import landscape_cli

from landscape.analysis.selection import early_stopping_epoch, format_table, select, select_runs
from landscape.config import DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig
from landscape.errors import BadInput


def config(flood: float, seed: int, noise: float = 0.1) -> RunConfig:
    return RunConfig(DataConfig("two_gaussians", noise=noise, seed=seed),
                     ModelConfig("mlp", depth=1, width=8), ObjectiveConfig(flood=flood),
                     OptimConfig(epochs=3), seed=seed)


def metrics(val, test, clean=None) -> dict[str, np.ndarray]:
    return {"val_acc": np.array(val), "test_acc": np.array(test),
            "test_acc_clean": np.array(clean if clean is not None else test)}


# Rows = epochs 0..3. Seed 0: b = 0.1 and 0.2 tie at the best validation accuracy both at the last
# epoch (0.8) and at their early-stopping epoch 2 (0.9): the smaller b wins. Seed 1: b = 0 wins.
EXAMPLE = [
    (config(0.0, 0), metrics([.5, .8, .7, .6], [.5, .75, .7, .65], [.5, .8, .75, .7])),
    (config(0.1, 0), metrics([.5, .7, .9, .8], [.5, .7, .85, .8], [.5, .72, .9, .85])),
    (config(0.2, 0), metrics([.5, .6, .9, .8], [.5, .6, .6, .6])),
    (config(0.0, 1), metrics([.5, .6, .9, .9], [.5, .6, .8, .7], [.5, .6, .82, .72])),
    (config(0.1, 1), metrics([.5, .6, .7, .8], [.5, .6, .7, .9])),
    (config(0.2, 1), metrics([.5, .6, .7, .7], [.5, .6, .7, .7])),
]


def test_early_stopping_epoch_is_the_first_best_and_skips_nan():
    assert early_stopping_epoch([0.5, 0.9, 0.7, 0.9]) == 1
    assert early_stopping_epoch([math.nan, 0.6, 0.6]) == 1
    with pytest.raises(BadInput):
        early_stopping_epoch([math.nan, math.nan])


def test_selection_without_early_stopping_matches_hand_computation():
    [result] = select(EXAMPLE, early_stopping=False)
    t0, t1 = result.trials
    assert (t0.seed, t0.chosen_b, t0.chosen.epoch) == (0, 0.1, 3)
    assert (t0.baseline.test_acc, t0.chosen.test_acc, t0.chosen.test_acc_clean) == (.65, .8, .85)
    assert (t1.chosen_b, t1.chosen.test_acc, t1.baseline.test_acc_clean) == (0.0, .7, .72)
    assert result.mean_std("without_flooding") == pytest.approx((.675, .05 / math.sqrt(2)))
    assert result.mean_std("with_flooding") == pytest.approx((.75, .1 / math.sqrt(2)))
    assert result.mean_std("with_flooding_clean") == pytest.approx((.785, .13 / math.sqrt(2)))
    assert result.mean_std("chosen_b") == pytest.approx((.05, .1 / math.sqrt(2)))


def test_the_oracle_is_the_best_test_accuracy_at_each_levels_own_epoch():
    """Seed 1 chooses b = 0 by validation, while b = 0.1 has the best test accuracy: at the last
    epoch (0.9 against 0.7) and at its early-stopping epoch 3 (0.9 against the baseline's 0.8 at
    its epoch 2)."""
    for early, expected in ((False, [(0.1, 3, .8), (0.1, 3, .9)]),
                            (True, [(0.1, 2, .85), (0.1, 3, .9)])):
        [result] = select(EXAMPLE, early_stopping=early)
        oracles = [(t.oracle.flood, t.oracle.epoch, t.oracle.test_acc) for t in result.trials]
        assert oracles == expected
        assert [o.flood for o in result.trials[1].outcomes] == [0.0, 0.1, 0.2]
    assert result.trials[1].chosen_b == 0.0


def test_selection_with_early_stopping_matches_hand_computation():
    [result] = select(EXAMPLE, early_stopping=True)
    t0, t1 = result.trials
    assert (t0.chosen_b, t0.chosen.epoch, t0.chosen.test_acc, t0.baseline.epoch) == (0.1, 2, .85, 1)
    assert (t1.chosen_b, t1.chosen.epoch, t1.chosen.test_acc) == (0.0, 2, .8)
    assert result.mean_std("without_flooding") == pytest.approx((.775, .05 / math.sqrt(2)))
    assert result.mean_std("with_flooding") == pytest.approx((.825, .05 / math.sqrt(2)))


def test_settings_are_separated_and_b_zero_prints_a_dash():
    other = [(config(b, 0, noise=0.05), metrics([.5, .9, .9, .9], [.5, .9, .9, .9 - b]))
             for b in (0.0, 0.1)]
    results = select(EXAMPLE + other, early_stopping=False)
    assert [r.label for r in results] == ["two_gaussians, noise 0.1", "two_gaussians, noise 0.05"]
    rows = format_table(results).splitlines()
    assert rows[-1].split(" | ")[1:5] == ["1", "90.00", "90.00", "-"]
    assert rows[-2].split(" | ")[2:5] == ["67.50 (3.54)", "75.00 (7.07)", "0.05 (0.07)"]
    assert r"two\_gaussians" in format_table(results, fmt="latex")


def test_an_unfinished_run_is_never_chosen_without_early_stopping():
    cut = [(c, {k: v[:3] for k, v in m.items()}) if c.objective.flood == 0.1 else (c, m)
           for c, m in EXAMPLE]
    [result] = select(cut, early_stopping=False)
    assert result.trials[0].chosen_b == 0.2


def test_a_trial_without_baseline_is_bad_input():
    with pytest.raises(BadInput, match="no b = 0 run"):
        select([r for r in EXAMPLE if r[0].objective.flood > 0], early_stopping=False)


def test_table_command_on_a_tiny_sweep(tmp_path):
    train = landscape_cli("train", "--data", "two_gaussians", "--noise", "0.1", "--depth", "1",
                       "--width", "8", "--epochs", "3", "--n-test", "200", "--flood", "0", "0.5",
                       "--seeds", "2", "--out", "runs", "--name", "sweep", "-q", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    for flags in ([], ["--early-stopping"]):
        out = landscape_cli("table", "runs/sweep", *flags, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        expected = format_table(select_runs([tmp_path / "runs/sweep"],
                                            early_stopping=bool(flags)))
        assert out.stdout.strip() == expected.strip()
        assert "| two_gaussians, noise 0.1 | 2 |" in out.stdout


def test_table_bad_input_is_one_line_exit_2(tmp_path):
    (tmp_path / "junk.h5").write_text("not hdf5")
    for args in (["junk.h5"], ["missing"], ["junk.h5", "--format", "html"]):
        out = landscape_cli("table", *args, cwd=tmp_path)
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
