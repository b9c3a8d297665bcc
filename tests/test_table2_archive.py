"""analysis/table2/archive.py: Table 2 from the archived metrics equals `landscape table` on the
run files, with and without early stopping."""

import importlib.util

import pytest
from conftest import TESTS, landscape_cli
from flood_sweeps import train_sweep

spec = importlib.util.spec_from_file_location("archive", TESTS.parent / "analysis" / "table2" /
                                              "archive.py")
archive = importlib.util.module_from_spec(spec)
spec.loader.exec_module(archive)


@pytest.mark.parametrize("stopping", [(), ("--early-stopping",)])
def test_the_archived_table_is_landscape_tables(tmp_path, stopping):
    sweep = train_sweep(tmp_path, epochs=6)
    assert archive.save([str(sweep)], tmp_path / "a.npz") == len(list(sweep.glob("*.h5")))
    results = archive.select(archive.records([str(tmp_path / "a.npz")]),
                             early_stopping=bool(stopping))
    table = landscape_cli("table", sweep, *stopping, check=True).stdout
    assert archive.format_table(results) == table.strip()


def test_each_trials_row_is_its_runs_numbers(tmp_path):
    """`trials` rows against the run files read directly: the baseline at its first best
    validation epoch, the chosen run the best validation accuracy over the grid (ties: smaller
    b)."""
    import numpy as np

    from landscape.runs.folders import find_runs
    from landscape.runs.store import Run

    sweep = train_sweep(tmp_path, epochs=6)
    archive.save([str(sweep)], tmp_path / "a.npz")
    rows = archive.trial_rows(archive.select(archive.records([str(tmp_path / "a.npz")]),
                                             early_stopping=True))
    runs = [Run(p) for p in find_runs([sweep])]
    seeds = sorted({r.config.seed for r in runs})
    assert [row[1] for row in rows] == seeds
    for row in rows:
        trial = [r for r in runs if r.config.seed == row[1]]
        best = {}
        for r in trial:
            val = r.metrics()["val_acc"]
            epoch = int(np.flatnonzero(val == val.max())[0])
            best[r.config.objective.flood] = (val[epoch], epoch, r.metrics()["test_acc"][epoch])
        b = min(best, key=lambda f: (-best[f][0], f))
        val, epoch, test = best[b]
        assert row[5:9] == pytest.approx((b, epoch, 100 * val, 100 * test))
        base_val, base_epoch, base_test = best[0.0]
        assert row[2:5] == pytest.approx((base_epoch, 100 * base_val, 100 * base_test))
        assert row[9] == pytest.approx(100 * (test - base_test))
        assert row[10] == pytest.approx(100 * (val - test))
        oracle = min(best, key=lambda f: (-best[f][2], f))
        assert row[12:] == pytest.approx((oracle, 100 * (best[oracle][2] - base_test)))
    assert archive.markdown(archive.TRIAL_HEADER, rows).count("\n") == len(rows) + 1


def test_compare_puts_the_trials_mean_beside_the_papers_row(tmp_path):
    """Ours: the mean over trials of the per-trial rows (and their gains); theirs: the csv's row."""
    import numpy as np

    sweep = train_sweep(tmp_path, epochs=6)
    archive.save([str(sweep)], tmp_path / "a.npz")
    config = next(archive.records([str(tmp_path / "a.npz")]))[0]
    paper = tmp_path / "paper.csv"
    paper.write_text("# a comment\ndata,noise,stopping,without,without_std,with,with_std,b,b_std\n"
                     + "".join(f"{config.data.name},{config.data.noise},{s},80,1,85,2,0.2,0.1\n"
                               for s in ("last", "early")))
    rows = archive.compare_rows([str(tmp_path / "a.npz")], archive.paper_table(paper))
    assert [r[1] for r in rows] == ["last", "early"]
    for row in rows:
        trials = archive.trial_rows(archive.select(archive.records([str(tmp_path / "a.npz")]),
                                                   early_stopping=row[1] == "early"))
        base, chosen = (np.array([t[i] for t in trials]) for i in (4, 8))
        assert row[2] == str(len(trials))
        assert float(row[3].split()[0]) == pytest.approx(base.mean(), abs=0.006)
        assert float(row[5].split()[0]) == pytest.approx(chosen.mean(), abs=0.006)
        assert float(row[7]) == pytest.approx((chosen - base).mean(), abs=0.006)
        assert float(row[9]) == pytest.approx(np.mean([t[13] for t in trials]), abs=0.006)
        assert row[4:9:2] + row[11:] == ("80.00 (1.00)", "85.00 (2.00)", "+5.00", "0.20 (0.10)")


def test_trial_rows_of_a_hand_computed_example():
    """tests/test_selection.py's example: seed 1 keeps b = 0 by validation (gain 0), while the
    oracle, b = 0.1, would have gained 10 points at the last epoch and at its early-stopping
    epoch."""
    from test_selection import EXAMPLE

    last, early = (archive.trial_rows(archive.select(EXAMPLE, early_stopping=e))
                   for e in (False, True))
    assert last[1][1:] == pytest.approx((1, 3, 90, 70, 0.0, 3, 90, 70, 0, 20, 20, 0.1, 20))
    assert early[1][1:] == pytest.approx((1, 2, 90, 80, 0.0, 2, 90, 80, 0, 10, 10, 0.1, 10))
    assert early[0][1:] == pytest.approx((0, 1, 80, 75, 0.1, 2, 90, 85, 10, 5, 5, 0.1, 10))
