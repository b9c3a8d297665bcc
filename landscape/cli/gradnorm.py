"""`landscape gradnorm`: filter-normalized gradient amplitudes at every saved epoch (paper Sec. 5.2)."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.cli import (
    CONTEXT,
    analysis_options,
    cli,
    model_options,
    normalization_options,
    per_epoch_options,
)


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--split", "splits", type=click.Choice(["train", "test"]), multiple=True,
              help="Gradient of the training or the test loss (repeatable). Default: both.")
@per_epoch_options("gradnorm")
@normalization_options
@model_options
@analysis_options
def gradnorm(paths, checkpoints, splits, epochs, normalization, out, name, skip_epochs, overwrite, formats,
             data_dir, device, quiet):
    """Gradient amplitude of the full training and test loss at every saved epoch of the runs
    (paper Sec. 5.2, Fig. 4), against test loss and test accuracy.

    The amplitude is the l2 norm of the gradient with each filter's entries multiplied by that
    filter's norm (Li et al. 2018), the model in eval mode. PATHS are run files or sweep folders;
    runs with b > 0 plot as "o", runs with b = 0 as "+". Writes OUT/NAME.h5 and
    OUT/NAME.{pdf,png,csv}. Train with `--save all` (or a small --save-every) for one point per
    epoch.

    Your own model instead of run files: --model, --weights (one point per checkpoint file)
    and --data with train and test splits; the points' epochs are the numbers in the file names.

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --flood 0 0.3 --save all --name pair
      landscape gradnorm checkpoints/pair --out results/pair
      landscape gradnorm --model mynet:make --data mynet:splits --weights 'ckpt/epoch_*.pt'
    """
    from landscape.cli.train import _csv_ints
    from landscape.figures.style import parse_formats

    formats = parse_formats(formats)
    splits = splits or ("train", "test")
    chosen = _csv_ints(epochs, "--epochs") or None
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.analysis.gradnorm import gradnorm as compute
    from landscape.device import resolve_device
    from landscape.distributed import current
    from landscape.figures.epochs import refuse_empty_figure
    from landscape.figures.gradnorm import plot_gradnorm
    from landscape.runs.folders import open_runs

    if checkpoints is not None:
        checkpoints = checkpoints().at(chosen)
        from landscape.analysis.usercheckpoints import checkpoint_gradnorm

        refuse_empty_figure(checkpoints.epochs, skip_epochs, checkpoints=True)
        result = checkpoint_gradnorm(checkpoints, Path(out) / f"{name}.h5",
                                     device=resolve_device(device), normalization=normalization,
                                     splits=splits, progress=not quiet, overwrite=overwrite)
    else:
        runs = open_runs(paths, data_dir=data_dir)
        refuse_empty_figure([e for run in runs for e in (chosen or run.saved_epochs)],
                            skip_epochs)
        result = compute(runs, Path(out) / f"{name}.h5", device=resolve_device(device),
                         normalization=normalization, splits=splits, epochs=chosen,
                         progress=not quiet, overwrite=overwrite)
    if current().rank != 0:  # under torchrun, rank 0 reports and draws for all ranks
        return
    click.echo(f"gradient amplitudes: {result}")
    for path in plot_gradnorm(result, Path(out) / name, formats, skip_epochs=skip_epochs):
        click.echo(f"figure: {path}")
