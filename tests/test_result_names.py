"""Runs that share a run name (the same data, model, b and seed: a rerun in another folder, another
learning rate) keep their own results in every analysis: their result names carry the part of
their paths that tells them apart (analysis.loading.result_names)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from analysis_runs import train_pair
from conftest import landscape_cli

from landscape.analysis.gradnorm import gradnorm
from landscape.analysis.loading import result_names
from landscape.analysis.sharpness import sharpness
from landscape.errors import BadInput
from landscape.measures.options import SharpnessOptions
from landscape.results import read_result, text
from landscape.runs.store import Run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return train_pair(tmp_path_factory)


@pytest.fixture
def alike(pair, tmp_path):
    """The issue's folders: checkpoints/t_single.h5, and checkpoints/pair2 holding a run of the
    same name (here the same run, copied) beside one of another name."""
    (tmp_path / "checkpoints" / "pair2").mkdir(parents=True)
    shutil.copy(pair[0].path, tmp_path / "checkpoints" / "t_single.h5")
    shutil.copy(pair[0].path, tmp_path / "checkpoints" / "pair2" / "t_single.h5")
    shutil.copy(pair[1].path, tmp_path / "checkpoints" / "pair2" / "flooded.h5")
    return pair[0].name, pair[1].name


def test_flatness_of_runs_named_alike_writes_a_file_for_each(alike, tmp_path):
    plain, flooded = alike
    result = landscape_cli("flatness", "checkpoints/t_single.h5", "checkpoints/pair2", "--out",
                           "results/mixed", "--points", 3, "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results" / "mixed"
    assert sorted(p.name for p in out.glob("*.slice.h5")) == sorted([
        f"{plain}@t_single.last.slice.h5", f"{plain}@pair2-t_single.last.slice.h5",
        f"{flooded}.snapshot.slice.h5", f"{flooded}.last.slice.h5"])  # one name: unchanged
    for where in ("t_single", "pair2-t_single"):
        attrs, _ = read_result(out / f"{plain}@{where}.last.slice.h5", "slice")
        assert attrs["run"] == str((tmp_path / "checkpoints" / f"{where.replace('-', '/')}.h5"
                                    ).resolve())
    with open(out / "flatness.csv") as f:
        models = {row["model"] for row in csv.DictReader(f)}
    assert {"t_single: b = 0, last epoch (10)", "pair2-t_single: b = 0, last epoch (10)"} < models
    again = landscape_cli("figures", out, "--section", "5.3", "--out", tmp_path / "fig",
                          cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_gradnorm_and_sharpness_name_each_run_apart(alike, tmp_path):
    plain, _ = alike
    runs = [Run(tmp_path / "checkpoints" / "t_single.h5"),
            Run(tmp_path / "checkpoints" / "pair2" / "t_single.h5")]
    cpu = torch.device("cpu")
    _, grads = read_result(gradnorm(runs, tmp_path / "g.h5", device=cpu, epochs=[10],
                                    progress=False), "gradnorm")
    _, sharp = read_result(sharpness(runs, tmp_path / "s.h5", SharpnessOptions(
        iterations=3, probes=1, draws=1), device=cpu, epochs=[10], progress=False), "sharpness")
    for a in (grads, sharp):
        assert [text(n) for n in a["run_name"]] == [
            f"{plain}@t_single", f"{plain}@pair2-t_single"]


def _runs(*paths: str, name: str = "n") -> list[SimpleNamespace]:
    return [SimpleNamespace(name=name, path=Path(p)) for p in paths]


def test_result_names_tell_apart_by_path_and_refuse_what_no_name_can():
    assert result_names(_runs("/r/a.h5")) == ["n"]
    assert result_names(_runs("/r/pair.h5", "/r/pair/a.h5")) == ["n@pair", "n@pair-a"]
    assert result_names(_runs("/r/x/a.h5", "/r/y/a.h5", "/r/x/a.h5")) == [
        "n@x-a", "n@y-a", "n@x-a"]  # one file given twice is one run
    assert result_names(_runs("/r/a.h5") + _runs("/s/a.h5", name="m")) == ["n", "m"]
    with pytest.raises(BadInput, match=r"/r/a/b-c.h5 and /r/a-b/c.h5 would share the result "
                       "name n@a-b-c"):
        result_names(_runs("/r/a/b-c.h5", "/r/a-b/c.h5"))
