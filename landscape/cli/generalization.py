"""`landscape generalization`: every generalization measure of every model of sweeps, and how well
each ranks the models by their generalization gap."""

from __future__ import annotations

import json
from pathlib import Path

import click

from landscape.cli import CONTEXT, analysis_options, cli, model_options, result_options
from landscape.errors import BadInput

DEFAULT_RESAMPLES = 1000


def _options(ctx, param, values) -> dict[str, dict[str, object]]:
    """--option MEASURE.KEY=VALUE, repeatable: the value as JSON where it parses (0.1, 128,
    true, null), else as text."""
    out: dict[str, dict[str, object]] = {}
    for given in values:
        name, _, value = given.partition("=")
        measure, _, key = name.partition(".")
        if not (measure and key and _):
            raise BadInput(f"--option must be MEASURE.KEY=VALUE (e.g. worst_case_sharpness.rho="
                           f"0.1), got {given!r}")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(measure, {})[key] = parsed
    return out


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--early-stopping", is_flag=True,
              help="Also measure each run at its early-stopping epoch (first best validation "
              "accuracy; its weights must be saved: train with --save all) and rank those too.")
@click.option("--measures", default=None, metavar="NAME,NAME",
              help="The measures, comma-separated (default: all; see docs/measurements.md).")
@click.option("--option", "measure_options", multiple=True, callback=_options,
              metavar="MEASURE.KEY=VALUE",
              help="An option of one measure, repeatable (e.g. worst_case_sharpness.rho=0.1, "
              "worst_case_sharpness.m=128, hessian_trace.probes=20).")
@click.option("--samples", type=int, default=None,
              help="Measure on a seeded subset of N training rows (default: the whole split).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every measure's draws, the subset and the bootstrap.")
@click.option("--resamples", type=int, default=DEFAULT_RESAMPLES, show_default=True,
              help="Bootstrap resamples (over seeds) of each statistic's interval.")
@click.option("--hyperparameters", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.csv",
              help="With --model/--weights: each checkpoint's hyperparameters and errors (columns "
              "checkpoint, seed, train_error, test_error; optional train_loss, test_loss, init; "
              "every other column is an axis).")
@result_options("generalization", holds="the result file (NAME.h5), its CSV, tables and figures",
                overwrite="Replace a result computed from other inputs or options (one of the "
                "same inputs is resumed, or reused when finished).")
@model_options
@analysis_options
def generalization(paths, checkpoints, early_stopping, measures, measure_options, samples, seed,
                   resamples, hyperparameters, out, name, overwrite, formats, data_dir, device,
                   quiet):
    """Which landscape property predicts generalization? Every measure of the battery (sharpness
    worst-case and average, PAC-Bayes flatness, norms, margin, Fisher-Rao norm, gradient noise,
    Hessian eigenvalue and trace, gradient amplitude, slice flatness) on every finished run of
    the sweeps at its last epoch (and --early-stopping epoch), then each measure's Kendall tau
    with the gap (test error - train error on the labels trained with) and with the test loss,
    Jiang et al.'s granulated tau Psi (psi per hyperparameter axis) and Dziugaite et al.'s
    sign-error, with bootstrap intervals over seeds.

    Writes OUT/NAME.h5 (models x measures, hyperparameters, errors, the rankings), OUT/NAME.csv,
    the ranked tables OUT/NAME-ranking.{md,tex}, and per epoch kind (last, early-stopping) the
    figures OUT/NAME-KIND-measures (each measure against the gap, colour = b) and
    OUT/NAME-KIND-psi.
    A killed computation resumes where it stopped; torchrun shares the models among ranks.

    Your own models instead: --model, --data, --weights 'ckpt/*.pt' and --hyperparameters
    table.csv.

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --flood 0 0.1 0.2 --lr 1e-3 1e-2 \\
          --seeds 3 --epochs 100 --save all --name sweep
      landscape generalization checkpoints/sweep --early-stopping --out results/sweep
      landscape generalization --model mynet:make --data mynet:splits --weights 'ckpt/*.pt' \\
          --hyperparameters runs.csv --out results/mine
    """
    from landscape.figures.style import parse_formats
    from landscape.measures.options import GeneralizationOptions

    formats = parse_formats(formats)
    chosen = tuple(m.strip() for m in measures.split(",") if m.strip()) if measures else None
    options = GeneralizationOptions.of(options=measure_options, measures=chosen,
                                       early_stopping=early_stopping, samples=samples, seed=seed,
                                       resamples=resamples)
    if (checkpoints is None) != (hyperparameters is None):
        raise BadInput("--hyperparameters goes with --model/--weights/--data (your own "
                       "checkpoints); run files carry their hyperparameters")
    if checkpoints is not None and early_stopping:
        raise BadInput("--early-stopping chooses epochs of run files; give the checkpoints "
                       "to measure with --weights")
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.analysis.generalization import generalization as compute
    from landscape.analysis.generalization import run_generalization
    from landscape.analysis.ranked import ranked_pairs, write_reports
    from landscape.device import resolve_device
    from landscape.figures.generalization import plot_measures, plot_psi
    from landscape.results import GENERALIZATION, read_result

    target = Path(out) / f"{name}.h5"

    def note(line: str) -> None:
        click.echo(f"landscape: note: {line}", err=True)

    if checkpoints is not None:
        from landscape.analysis.usercheckpoints import checkpoint_identity, checkpoint_subjects

        ck = checkpoints()
        result = compute(checkpoint_subjects(ck, hyperparameters), target, options,
                         identity=checkpoint_identity(ck, hyperparameters),
                         device=resolve_device(device), progress=not quiet, overwrite=overwrite,
                         report=note)
    else:
        from landscape.runs.folders import open_runs

        result = run_generalization(open_runs(paths, data_dir=data_dir), target, options,
                                    device=resolve_device(device), progress=not quiet,
                                    overwrite=overwrite, report=note)
    from landscape.distributed import current

    if current().rank != 0:  # under torchrun, rank 0 reports, writes the tables and draws
        return
    click.echo(f"generalization: {result}")
    for path in write_reports(result, Path(out) / name):
        click.echo(f"table: {path}")
    _, arrays = read_result(result, GENERALIZATION)
    for kind in dict.fromkeys(which for which, _ in ranked_pairs(arrays)):
        stem = Path(out) / f"{name}-{kind.replace('_', '-')}"
        for path in [*plot_measures(result, f"{stem}-measures", kind, formats),
                     *plot_psi(result, f"{stem}-psi", kind, formats=formats)]:
            click.echo(f"figure: {path}")
