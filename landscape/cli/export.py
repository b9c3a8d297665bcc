"""`landscape export`: a run's metrics as CSV."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.cli import CONTEXT, cli


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Folder for the CSV files (<run file name>.csv).")
@click.option("--describe", is_flag=True, help="Print what each column means instead.")
def export(paths, out, describe):
    """Each run's metrics as a CSV table: one row per epoch from 0 (the untrained model), one
    column per metric (empty cells where a split was not evaluated), for pandas or a spreadsheet.
    PATHS are run files or sweep folders.

    \b
    Example:
      landscape export checkpoints/two_gaussians-noise0.1-mlp-flood0.3-seed0.h5 --out tables
      python -c "import pandas; print(pandas.read_csv('tables/two_gaussians-noise0.1-mlp-flood0.3-seed0.csv'))"
    """
    from landscape.runs.export import describe_metric, export_csv
    from landscape.runs.folders import open_runs

    runs = open_runs(paths)
    if describe:
        for name in ["epoch", *runs[0].metric_names]:
            click.echo(f"{name}: {describe_metric(name) or 'the epoch (0: the untrained model)'}")
        return
    for run in runs:
        click.echo(f"metrics: {export_csv(run, Path(out))}")
