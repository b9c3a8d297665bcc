"""`landscape generalization` and analysis/generalization.py: rows equal the battery called on
each run's saved weights, rankings equal the ranking functions on the stored table, a killed
computation resumes to the same file, the figures' numbers are the stored ones, a user's
checkpoints with a CSV work the same way, and bad input is one line."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import landscape_cli, one_line_error, tiny_config

import landscape
import landscape.analysis.ranking
from landscape.analysis import generalization as gen
from landscape.analysis import ranked
from landscape.analysis.ranking import rank_measures
from landscape.config.execution import Execution
from landscape.measures.options import GeneralizationOptions
from landscape.results import read_result
from landscape.runs.folders import open_runs

pytestmark = pytest.mark.usefixtures("one_thread")

MEASURES = "frobenius_sum,output_margin,distance_from_init,worst_case_sharpness,hessian_trace"
CHEAP = {"worst_case_sharpness": {"steps": 3, "restarts": 1}, "hessian_trace": {"probes": 4}}
OPTION_ARGS = ("--option", "worst_case_sharpness.steps=3", "--option",
               "worst_case_sharpness.restarts=1", "--option", "hessian_trace.probes=4")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """24 finished runs over b, the learning rate and the width, two seeds, every epoch saved."""
    folder = tmp_path_factory.mktemp("gen") / "sweep"
    configs = landscape.expand(tiny_config(epochs=4), [0.0, 0.1, 0.3], [0, 1], lr=[1e-2, 5e-2],
                               width=[8, 12])
    landscape.train(configs, out=folder, execution=Execution(device="cpu", progress=False))
    return folder


def _options(**kwargs) -> GeneralizationOptions:
    return GeneralizationOptions.of(options=CHEAP, measures=tuple(MEASURES.split(",")),
                                    resamples=30, **kwargs)


def test_rows_are_the_battery_on_each_runs_weights(sweep, tmp_path):
    runs = open_runs([sweep])
    out = gen.run_generalization(runs, tmp_path / "g.h5", _options(early_stopping=True),
                                 device=torch.device("cpu"), progress=False)
    attrs, a = read_result(out, gen.KIND)
    assert len(runs) == 24 and len(a["name"]) == 48 and a["done"].all()
    assert sorted(set(a["which"].astype(str))) == ["early_stopping", "last"]
    assert attrs["complete"] and sorted(json.loads(attrs["axes"])) == ["b", "lr", "width"]
    for row in (0, 7, 47):  # independently: the run's model at that epoch, its training split
        run = runs[row // 2]  # each run's last epoch, then its early-stopping epoch
        epoch = int(a["epoch"][row])
        expected = landscape.generalization_measures(
            run.model(epoch), run.dataset().split("train"), init=run.state_dict(0),
            names=MEASURES.split(","), options=CHEAP, loss=run.config.objective.loss)
        for name, value in expected.items():
            assert a[f"measure/{name}"][row] == pytest.approx(value, rel=1e-6), name
        metrics = run.metrics()
        assert a["gap"][row] == pytest.approx(metrics["train_acc"][epoch]
                                              - metrics["test_acc"][epoch])
        assert a["axis/lr"][row] == run.config.optim.lr and a["axis/seed"][row] == run.config.seed
    last = a["which"].astype(str) == "last"
    (tau,) = [r.tau for r in rank_measures(
        {x: a[f"axis/{x}"][last] for x in ("b", "lr", "width", "seed")},
        {"frobenius_sum": a["measure/frobenius_sum"][last]}, a["test_loss"][last],
        axes=["b", "lr", "width"], resamples=30, seed=0)]
    stored = ranked.stored_rankings(a, "last", "test_loss", ["b", "lr", "width"], 0.95)
    assert next(r.tau for r in stored if r.measure == "frobenius_sum") == tau
    # a margin is ranked reversed: a wider one is expected to shrink the gap
    assert json.loads(attrs["reversed"]) == ["output_margin"]
    tau = landscape.analysis.ranking.kendall_tau(-a["measure/output_margin"][last], a["gap"][last])
    stored = ranked.stored_rankings(a, "last", "gap", ["b", "lr", "width"], 0.95)
    assert next(r.tau.estimate for r in stored if r.measure == "output_margin") == tau


def test_a_killed_computation_resumes_to_the_same_file(sweep, tmp_path, monkeypatch):
    runs = open_runs([sweep])[:8]  # b x seed x 2 learning rates at one width
    options = _options()
    whole = gen.run_generalization(runs, tmp_path / "whole.h5", options,
                                   device=torch.device("cpu"), progress=False)
    measured, calls = gen.measured, []

    def dying(subject, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(subject.name)
        return measured(subject, *args, **kwargs)

    monkeypatch.setattr(gen, "SAVE_SECONDS", 0.0)
    monkeypatch.setattr(gen, "measured", dying)
    with pytest.raises(KeyboardInterrupt):
        gen.run_generalization(runs, tmp_path / "part.h5", options, device=torch.device("cpu"),
                               progress=False)
    attrs, part = read_result(tmp_path / "part.h5", gen.KIND)
    assert not attrs["complete"] and part["done"].sum() in (2, 3)
    calls.clear()
    monkeypatch.setattr(gen, "measured", measured)
    gen.run_generalization(runs, tmp_path / "part.h5", options, device=torch.device("cpu"),
                           progress=False)
    _, resumed = read_result(tmp_path / "part.h5", gen.KIND)
    _, expected = read_result(whole, gen.KIND)
    for key, values in expected.items():
        np.testing.assert_array_equal(resumed[key], values, err_msg=key)


def test_command_writes_the_table_the_file_and_both_figures(sweep, tmp_path):
    args = ("generalization", sweep, "--measures", MEASURES, *OPTION_ARGS, "--resamples", 30,
            "--out", tmp_path / "res", "-q", "--format", "png")
    result = landscape_cli(*args)
    assert result.returncode == 0, result.stderr
    res = tmp_path / "res"
    attrs, a = read_result(res / "generalization.h5", gen.KIND)
    table = (res / "generalization-ranking.md").read_text()
    assert "| rank | measure | Psi | psi b | psi lr | psi width |" in table
    assert "against the test loss" in table and "tabular" in (
        res / "generalization-ranking.tex").read_text()
    with open(res / "generalization-last-measures.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["worst_case_sharpness"]) for r in rows] == pytest.approx(
        a["measure/worst_case_sharpness"].tolist(), rel=1e-12)
    assert [float(r["gap"]) for r in rows] == pytest.approx(a["gap"].tolist(), rel=1e-12)
    with open(res / "generalization-last-psi.csv") as f:
        psi = [r for r in csv.DictReader(f) if r["statistic"] == "Psi"]
    stored = dict(zip(a["ranking/last/gap/measure"].astype(str),
                      a["ranking/last/gap/psi_mean"][:, 0]))
    assert {r["measure"]: float(r["estimate"]) for r in psi} == pytest.approx(stored)
    for stem in ("generalization-last-measures", "generalization-last-psi"):
        assert (res / f"{stem}.png").stat().st_size > 0
    again = landscape_cli(*args)  # finished: reused, not measured again
    assert again.returncode == 0 and "measuring" not in again.stderr
    api = gen.run_generalization(open_runs([sweep]), tmp_path / "api.h5", _options(),
                                 device=torch.device("cpu"), progress=False)
    _, b = read_result(api, gen.KIND)
    for name in MEASURES.split(","):
        np.testing.assert_array_equal(a[f"measure/{name}"], b[f"measure/{name}"])


def test_unusable_runs_and_options_are_one_line(sweep, tmp_path):
    out = ("--out", tmp_path / "res", "-q", "--measures", "frobenius_sum")
    runs = [run.path for run in open_runs([sweep])]
    one_line_error(landscape_cli("generalization", sweep, *out, "--measures", "sharpest"),
                    "unknown measure 'sharpest'")
    one_line_error(landscape_cli("generalization", sweep, "--option", "rho=1", *out),
                    "MEASURE.KEY=VALUE")
    one_line_error(landscape_cli("generalization", sweep, "--option",
                                  "output_margin.rho=0.1", *out), "takes no option 'rho'")
    one_line_error(landscape_cli("generalization", runs[0], runs[0], *out),
                    "differ in no hyperparameter")
    landscape.train([tiny_config(epochs=3, save="none", flood=0.2)],
                    out=tmp_path / "first", execution=Execution(device="cpu", progress=False))
    one_line_error(landscape_cli("generalization", runs[0], tmp_path / "first", *out),
                    "its last epoch 3 was not saved; train with --save all")
    assert not (tmp_path / "res").exists()


def test_a_users_checkpoints_with_a_table(user_project):
    folder, usernet = user_project
    with open(folder / "runs.csv", "w") as f:
        f.write("checkpoint,seed,lr,train_error,test_error,test_loss\n")
        for e in range(3, 13):
            f.write(f"epoch_{e}.ckpt,{e % 2},{0.1 * (e // 2 % 3 + 1):.1f},0.1,{0.1 + e / 100},"
                    f"{e / 10}\n")
    user = ("generalization", "--model", "usernet:make", "--data", "usernet:splits",
            "--weights", "ckpt/epoch_*.ckpt", "--measures", "frobenius_sum,output_margin",
            "--resamples", 20, "--out", "res", "-q", "--format", "png")
    one_line_error(landscape_cli(*user), "--hyperparameters goes with")
    one_line_error(landscape_cli(*user, "--hyperparameters", "runs.csv"),
                    "has no row for ckpt/epoch_1.ckpt")
    user = tuple(a if a != "ckpt/epoch_*.ckpt" else "ckpt/epoch_[3-9].ckpt" for a in user)
    result = landscape_cli(*user, "--weights", "ckpt/epoch_1?.ckpt", "--hyperparameters",
                           "runs.csv")
    assert result.returncode == 0, result.stderr
    attrs, a = read_result(folder / "res" / "generalization.h5", gen.KIND)
    assert list(a["name"].astype(str)) == [f"epoch_{e}.ckpt" for e in range(3, 13)]
    state = {k.removeprefix("model."): v for k, v in torch.load(
        folder / "ckpt" / "epoch_5.ckpt", weights_only=True)["state_dict"].items()}
    direct = landscape.output_margin(usernet.make(), usernet.splits()["train"], params=state)
    assert a["measure/output_margin"][2] == pytest.approx(direct, rel=1e-6)
    assert a["gap"][2] == pytest.approx(0.05) and json.loads(attrs["axes"]) == ["lr"]
    assert "ranking/checkpoint/test_loss/measure" in a
    (folder / "bad.csv").write_text("checkpoint,train_error,test_error\nepoch_3.ckpt,0,0\n")
    one_line_error(landscape_cli(*user, "--weights", "ckpt/epoch_1?.ckpt", "--hyperparameters",
                                  "bad.csv", "--overwrite"), "has no column 'seed'")


def test_runs_of_the_ce_loss_are_measured_with_cross_entropy(tmp_path):
    base = tiny_config(epochs=2)
    base = dataclasses.replace(base, objective=dataclasses.replace(base.objective, loss="ce"))
    landscape.train(landscape.expand(base, [0.0, 0.2], [0]), out=tmp_path / "ce",
                    execution=Execution(device="cpu", progress=False))
    runs = open_runs([tmp_path / "ce"])
    out = gen.run_generalization(runs, tmp_path / "g.h5", GeneralizationOptions(
        measures=("output_margin",), resamples=5), device=torch.device("cpu"), progress=False)
    _, a = read_result(out, gen.KIND)
    for row, run in enumerate(runs):
        assert a["measure/output_margin"][row] == pytest.approx(landscape.output_margin(
            run.model(), run.dataset().split("train"), loss="cross_entropy"), rel=1e-6)
    # the other analyses pass a run's loss on as its config names it
    result = landscape_cli("connect", runs[0].path, runs[0].path, "--epoch-a", 0, "--curve", "none",
                           "--points", 3, "--out", tmp_path / "connect", "-q", "--format", "png")
    assert result.returncode == 0, result.stderr


def test_models_without_a_gap_are_left_out_of_the_rankings():
    """A diverged run has no gap: its row is left out of the rankings (with a note), the others
    ranked as without it; a measure non-finite on a kept row is left out."""
    rng = np.random.default_rng(0)
    n = 12
    arrays = {"which": np.array(["last"] * n), "axis/b": np.repeat([0.0, 0.1, 0.2], 4),
              "axis/seed": np.tile([0.0, 1.0], 6), "gap": rng.random(n),
              "test_loss": rng.random(n), "measure/frobenius_sum": rng.random(n),
              "measure/pac_bayes_sigma": rng.random(n)}
    arrays["gap"][3] = np.nan
    arrays["measure/pac_bayes_sigma"][5] = np.inf
    notes = []
    options = GeneralizationOptions(resamples=20)
    got = gen.rank_rows(arrays, ["frobenius_sum", "pac_bayes_sigma"], ["b"], options,
                        report=notes.append)
    kept = np.arange(n) != 3
    (expected,) = rank_measures({"b": arrays["axis/b"][kept], "seed": arrays["axis/seed"][kept]},
                                {"frobenius_sum": arrays["measure/frobenius_sum"][kept]},
                                arrays["gap"][kept], axes=["b"], resamples=20)
    assert got["last", "gap"] == (expected,)
    assert [r.measure for r in got["last", "test_loss"]] == ["frobenius_sum"]
    assert any("1 model without a finite gap" in note for note in notes)
    assert any("pac_bayes_sigma" in note for note in notes)
