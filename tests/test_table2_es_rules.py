"""analysis/table2/es_rules.py: each early-stopping rule's epoch on hand-made validation curves,
and its table against the library's selection on a trained sweep."""

import importlib.util
import sys

import numpy as np
import pytest
from conftest import TESTS
from flood_sweeps import train_sweep

TABLE2 = TESTS.parent / "analysis" / "table2"
sys.path.insert(0, str(TABLE2))  # es_rules imports archive, as when run as a script
spec = importlib.util.spec_from_file_location("es_rules", TABLE2 / "es_rules.py")
es_rules = importlib.util.module_from_spec(spec)
spec.loader.exec_module(es_rules)
import archive  # noqa: E402


def curve(**at: float) -> np.ndarray:
    """Validation accuracies over epochs 0..60: 0.6 everywhere but epoch 0 (0.5) and `at`."""
    val = np.full(61, 0.6)
    val[0] = 0.5
    for epoch, v in at.items():
        val[int(epoch[1:])] = v
    return val


def test_ties_and_checking_intervals():
    """The best (0.8) is reached at epochs 3 and 12; epoch 40 is next best (0.79)."""
    assert es_rules.rule_epochs(curve(e3=0.8, e12=0.8, e40=0.79)) == {
        "first best": 3, "last best": 12, "every 5": 40, "every 10": 40, "every 25": 25,
        "every 50": 50, "patience 10": 3, "patience 50": 3, "last epoch": 60}


def test_patience_stops_before_a_late_best():
    """A new best at 45 is 42 epochs after the one at 3: patience 50 waits for it, 10 does not."""
    picked = es_rules.rule_epochs(curve(e3=0.8, e45=0.9))
    assert (picked["patience 10"], picked["patience 50"], picked["first best"]) == (3, 45, 45)
    assert (picked["every 5"], picked["every 25"]) == (45, 25)


def test_the_first_best_rule_is_the_librarys_early_stopping(tmp_path):
    """The baseline's `first best` and `last epoch` columns: landscape's selection, mean (std)."""
    sweep = train_sweep(tmp_path, epochs=8)
    archive.save([str(sweep)], tmp_path / "a.npz")
    header, rows = es_rules.rule_table([str(tmp_path / "a.npz")])
    [baseline] = [row for row in rows if row[1] == "0"]
    for stopping, column in ((True, "first best"), (False, "last epoch")):
        [result] = archive.select(archive.records([str(tmp_path / "a.npz")]),
                                  early_stopping=stopping)
        mean, std = result.mean_std("without_flooding")
        assert baseline[header.index(column)] == f"{100 * mean:.2f} ({100 * std:.2f})"
        assert baseline[2] == str(len(result.trials))


def test_runs_without_the_test_set_every_epoch_are_refused(tmp_path):
    archive.save([str(train_sweep(tmp_path, epochs=8))], tmp_path / "a.npz")
    arrays = dict(np.load(tmp_path / "a.npz"))
    arrays["0/test_acc"] = np.r_[np.nan, arrays["0/test_acc"][1:]]
    np.savez_compressed(tmp_path / "b.npz", **arrays)
    with pytest.raises(SystemExit, match="--eval-test every"):
        es_rules.rule_table([str(tmp_path / "b.npz")])
