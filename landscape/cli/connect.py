"""`landscape connect`: the loss along the linear path between two models and along a curve
fitted between them (mode connectivity)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from landscape.cli import CONTEXT, analysis_options, cli, model_options, result_options
from landscape.errors import BadInput
from landscape.measures.options import ConnectOptions

DEFAULT = ConnectOptions()


def _epoch(ctx, param, value):
    if value in ("last", "snapshot") or re.fullmatch(r"\d+", value):
        return value
    raise BadInput(f"--{param.name.replace('_', '-')} must be an epoch number, last or snapshot, "
                   f"got {value!r}")


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--epoch-a", default="last", show_default=True, callback=_epoch,
              help="The first run's epoch: a saved epoch's number, last, or snapshot (the "
              "first-below-flood weights).")
@click.option("--epoch-b", default="last", show_default=True, callback=_epoch,
              help="The second run's epoch.")
@click.option("--points", type=int, default=DEFAULT.points, show_default=True,
              help="Values of t in [0, 1] evaluated on each path.")
@click.option("--bn", type=click.Choice(["recompute", "keep"]), default=DEFAULT.bn,
              show_default=True, help="BatchNorm running statistics at each point: re-estimated "
              "from the training inputs, or interpolated between the two models'.")
@click.option("--curve", type=click.Choice(["bezier", "polychain", "none"]),
              default=DEFAULT.curve, show_default=True,
              help="The curve fitted between the models (Garipov et al. 2018), or none.")
@click.option("--curve-epochs", type=int, default=DEFAULT.curve_epochs, show_default=True,
              help="Epochs of SGD on the curve's bend (t drawn uniformly per mini-batch).")
@click.option("--seed", type=int, default=DEFAULT.seed, show_default=True,
              help="Seed of the curve's shuffles, t draws and dropout.")
@result_options("connect")
@model_options
@analysis_options
def connect(paths, checkpoints, epoch_a, epoch_b, points, bn, curve, curve_epochs, seed, out,
            name, overwrite, formats, data_dir, device, quiet):
    """Are two models in one basin? Train and test loss and error along the linear path
    (1 - t) A + t B between them, with its barrier height (the largest rise of the loss above
    the line between the two models' losses; Frankle et al. 2020), and along a quadratic Bezier
    curve (or polygonal chain) whose bend is trained by SGD to keep the loss low (Garipov et al.
    2018), with the curve's barrier.

    A and B are two run files (their last epochs, or --epoch-a/--epoch-b; one run file with
    two epochs connects two points of one training), evaluated on A's training and test data.
    BatchNorm statistics are re-estimated at each point from the training data (--bn
    recompute). Writes OUT/NAME.h5 and the figure OUT/NAME.{pdf,png,csv}; a rerun with the
    same inputs and parameters reuses the file, other parameters are refused unless
    --overwrite.

    Your own model instead of run files: --model, --data and --weights A.pt B.pt (A at t = 0:
    the files in natural order).

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --flood 0 0.3 --name pair
      landscape connect checkpoints/pair/*.h5 --out results/connect
      landscape connect run.h5 run.h5 --epoch-a 10 --epoch-b last --curve none
      landscape connect --model mynet:make --data mynet:splits --weights a.pt b.pt
    """
    from landscape.figures.style import parse_formats

    formats = parse_formats(formats)
    options = ConnectOptions(points=points, bn=bn, curve=None if curve == "none" else curve,
                             curve_epochs=curve_epochs, seed=seed)
    if checkpoints is not None and (epoch_a, epoch_b) != ("last", "last"):
        raise BadInput("--epoch-a/--epoch-b choose epochs of run files; with --weights give the "
                       "two checkpoint files")
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.analysis.connect import connect_checkpoints, connect_runs
    from landscape.device import resolve_device
    from landscape.figures.connect import barrier_lines, plot_connect
    from landscape.runs.folders import open_runs

    target = Path(out) / f"{name}.h5"
    if checkpoints is not None:
        result = connect_checkpoints(checkpoints(), target, options,
                                     device=resolve_device(device), overwrite=overwrite,
                                     progress=not quiet)
    else:
        result = connect_runs(open_runs(paths, data_dir=data_dir), target, options,
                              epochs=(epoch_a, epoch_b), device=resolve_device(device),
                              overwrite=overwrite, progress=not quiet,
                              report=lambda line: click.echo(f"landscape: note: {line}", err=True))
    click.echo(f"connect: {result}")
    for line in barrier_lines(result):
        click.echo(line)
    for path in plot_connect(result, Path(out) / name, formats):
        click.echo(f"figure: {path}")
