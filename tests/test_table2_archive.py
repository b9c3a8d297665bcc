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
