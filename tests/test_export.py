"""`landscape export`: a run's metrics as CSV, read back equal to the run file's."""

from __future__ import annotations

import csv
import math

import numpy as np

from landscape.export import describe_metric, metrics_table
from landscape.store import Run
from landscape.sweep import train

from conftest import landscape_cli, tiny_config


def test_csv_holds_every_metric_of_every_epoch(tmp_path):
    path = train([tiny_config(epochs=3, flood=0.2)], out=tmp_path / "runs").paths[0]
    result = landscape_cli("export", path, "--out", tmp_path / "tables")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "tables" / f"{path.stem}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    run = Run(path)
    metrics = run.metrics()
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert set(rows[0]) == {"epoch", *run.metric_names}
    for name in run.metric_names:
        for epoch, row in enumerate(rows):
            want = float(metrics[name][epoch])
            got = row[name]
            assert (got == "") if math.isnan(want) else float(got) == want, (name, epoch)
    table = metrics_table(run)
    np.testing.assert_array_equal(table["train_loss"], metrics["train_loss"])
    assert "flipped" in describe_metric("train_acc_flipped")
    described = landscape_cli("export", path, "--describe")
    assert all(":" in line and line.split(": ", 1)[1] for line in described.stdout.splitlines())
