"""`landscape demo`: a small end-to-end run on the embedded default."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import DataConfig, Execution, ModelConfig, OptimConfig, RunConfig
from . import CONTEXT, cli


@cli.command(context_settings=CONTEXT)
@click.option("--out", type=click.Path(file_okay=False), default="checkpoints", show_default=True)
@click.option("--epochs", type=int, default=500, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def demo(out, epochs, device, quiet):
    """A small end-to-end run: the paper's Two Gaussians with 10% label noise, trained with b = 0
    and b = 0.3; prints how the flooded training loss floats around b while the plain one goes to
    zero, and where the files went.

    \b
    Example:
      landscape demo --out /tmp/demo
    """
    from ..inspect import demo_report
    from ..sweep import expand, train as train_runs

    base = RunConfig(data=DataConfig("two_gaussians", noise=0.1), model=ModelConfig("mlp"),
                     optim=OptimConfig(epochs=epochs), save="every:50", eval_test="best")
    result = train_runs(expand(base, (0.0, 0.3), [0]), out=Path(out), name="demo",
                        execution=Execution(device=device, progress=not quiet), overwrite=True)
    click.echo(demo_report(result.paths))
