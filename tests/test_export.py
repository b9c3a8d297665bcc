"""`landscape export`: a run's metrics as CSV, read back equal to the run file's."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
from conftest import landscape_cli, tiny_config

from landscape.runs.export import describe_metric, metrics_table
from landscape.runs.store import Run
from landscape.training.planner import train


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


def test_run_files_describe_themselves(tmp_path):
    import h5py

    path = train([tiny_config(epochs=1)], out=tmp_path).paths[0]
    with h5py.File(path, "r", locking=False) as f:
        for name, dataset in f["metrics"].items():
            assert dataset.attrs["description"], name
        assert f["metrics/train_loss"].attrs["units"] == "nats"
        assert h5py.check_string_dtype(f["status"].dtype).length is None  # variable-length
        order = json.loads(f["weights"].attrs["order"])
    run = Run(path)
    assert run.status == "complete" and list(run.state_dict(1)) == order
    assert order[:2] == ["1.weight", "1.bias"]  # module order, not HDF5's sorted names


def test_a_run_rebuilds_the_exact_data_it_trained_on(tmp_path):
    from landscape import data

    config = tiny_config(epochs=1, noise=0.2)
    path = train([config], out=tmp_path).paths[0]
    rebuilt = Run(path).dataset()
    fresh = data.load(config.resolved().data)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(rebuilt.split(split).x.numpy(), fresh.split(split).x.numpy())
        np.testing.assert_array_equal(rebuilt.split(split).y.numpy(), fresh.split(split).y.numpy())
    assert int(rebuilt.train.flipped.sum()) == 8  # floor(40 * 0.2), as recorded in the file
