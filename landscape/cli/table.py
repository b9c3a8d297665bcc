"""`landscape table`: Table 2/3-style results of sweeps, with the flood level chosen by validation."""

from __future__ import annotations

import click

from landscape.cli import CONTEXT, cli


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--early-stopping", is_flag=True,
              help="Look at each run's best-validation epoch instead of its last epoch.")
@click.option("--format", "fmt", type=click.Choice(["md", "latex"]), default="md",
              show_default=True, help="Markdown or a LaTeX tabular.")
def table(paths, early_stopping, fmt):
    """Test accuracy without flooding and with the flood level b of best validation accuracy,
    per setting (runs identical but for b and seed), mean (std) over seeds; "-" when b = 0 won.

    \b
    Example:
      landscape train --data two_gaussians --noise 0.05 --flood 0:0.5:0.01 --seeds 10
      landscape table checkpoints/two_gaussians-noise0.05-mlp-flood --early-stopping
    """
    from landscape.analysis.selection import format_table, select_runs

    click.echo(format_table(select_runs(paths, early_stopping=early_stopping), fmt=fmt))
