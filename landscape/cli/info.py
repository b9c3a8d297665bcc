"""`landscape info`: what a run file or sweep folder holds."""

from __future__ import annotations

import click

from landscape.cli import CONTEXT, cli


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def info(paths):
    """What a run file or sweep folder holds.

    \b
    Example:
      landscape info checkpoints/two_gaussians-noise0.1-mlp-flood0.3-seed0.h5
    """
    from landscape.runs.inspect import describe_paths

    click.echo(describe_paths(paths))
