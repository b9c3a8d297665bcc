"""`landscape sharpness`: top Hessian eigenvalue, Hessian trace and average-case sharpness at every
saved epoch, against test loss."""

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
from landscape.measures.options import TRACES


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Whose mean loss: the training set (as trained, noisy labels) or the test set.")
@click.option("--iterations", type=int, default=100, show_default=True,
              help="Top eigenvalue (Lanczos): at most N Hessian-vector products (stops earlier "
              "when the eigenvalue changes by less than 1e-4, relative).")
@click.option("--probes", type=int, default=100, show_default=True,
              help="Hutchinson's trace: N Rademacher vectors.")
@click.option("--trace", "trace_method", type=click.Choice(TRACES),
              default="hutchinson", show_default=True,
              help="split: the GGN's trace exactly plus Hutchinson's on the rest, exact with no "
              "probe for ReLU networks (piecewise linear in their parameters).")
@click.option("--draws", type=int, default=10, show_default=True,
              help="Average-case sharpness: N antithetic pairs of Gaussian directions.")
@click.option("--sigma", type=float, default=0.1, show_default=True,
              help="Average-case sharpness: the directions' scale (1 = each filter's norm).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the start vector, the probes and the directions.")
@click.option("--top-k", type=int, default=0, show_default=True,
              help="Also the K largest Hessian eigenvalues (Lanczos), stored per epoch.")
@click.option("--save-eigenvectors", is_flag=True,
              help="Store the K eigenvectors too (K x the model's size per epoch).")
@click.option("--density", is_flag=True,
              help="Also the Hessian's spectral density (stochastic Lanczos quadrature), drawn "
              "on a log scale beside the other runs' (NAME-spectrum.{pdf,png,csv}).")
@click.option("--density-iterations", type=int, default=90, show_default=True,
              help="Lanczos steps per density run.")
@click.option("--density-runs", type=int, default=1, show_default=True,
              help="Random starts averaged in the density.")
@per_epoch_options("sharpness")
@normalization_options
@model_options
@analysis_options
def sharpness(paths, checkpoints, epochs, split, iterations, probes, trace_method, draws, sigma,
              seed, top_k, save_eigenvectors, density, density_iterations, density_runs,
              normalization, out, name, skip_epochs, overwrite, formats, data_dir, device, quiet):
    """Sharpness of the loss at every saved epoch of the runs, with and without flooding: the top
    Hessian eigenvalue (Lanczos), the Hessian trace (Hutchinson, or --trace split) and the
    average-case sharpness E[L(theta + sigma d)] - L(theta) over filter-normalized Gaussian
    directions d, plotted against test loss as the paper's Fig. 4 (Sec. 5.2). The model is in
    eval mode.

    PATHS are run files or sweep folders. Writes OUT/NAME.h5 and OUT/NAME.{pdf,png,csv}; `landscape
    figures OUT/NAME.h5 --section sharpness` redraws the figure.

    Your own model instead of run files: --model, --weights (one point per checkpoint file)
    and --data with the split measured and a test split.

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --flood 0 0.3 --save-every 5 --name pair
      landscape sharpness checkpoints/pair --out results/pair
      landscape sharpness checkpoints/pair --top-k 5 --density --out results/pair
      landscape sharpness --model mynet:make --data mynet:splits --weights 'ckpt/epoch_*.pt'
    """
    from landscape.cli.train import _csv_ints
    from landscape.figures.style import parse_formats
    from landscape.measures.options import SharpnessOptions

    formats = parse_formats(formats)
    chosen = _csv_ints(epochs, "--epochs") or None
    options = SharpnessOptions(split=split, iterations=iterations, probes=probes,
                               trace=trace_method, draws=draws, sigma=sigma, seed=seed, top_k=top_k,
                               eigenvectors=save_eigenvectors, density=density,
                               density_iterations=density_iterations, density_runs=density_runs,
                               normalization=normalization)
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.analysis.sharpness import sharpness as compute
    from landscape.device import resolve_device
    from landscape.figures.epochs import refuse_empty_figure
    from landscape.figures.sharpness import plot_sharpness
    from landscape.runs.folders import open_runs

    if checkpoints is not None:
        checkpoints = checkpoints().at(chosen)
        from landscape.analysis.usercheckpoints import checkpoint_sharpness

        refuse_empty_figure(checkpoints.epochs, skip_epochs, checkpoints=True)
        result = checkpoint_sharpness(checkpoints, Path(out) / f"{name}.h5", options,
                                      device=resolve_device(device), progress=not quiet,
                                      overwrite=overwrite)
    else:
        runs = open_runs(paths, data_dir=data_dir)
        refuse_empty_figure([e for run in runs for e in (chosen or run.saved_epochs)],
                            skip_epochs)
        result = compute(runs, Path(out) / f"{name}.h5", options, device=resolve_device(device),
                         epochs=chosen, progress=not quiet, overwrite=overwrite)
    click.echo(f"sharpness: {result}")
    for path in plot_sharpness(result, Path(out) / name, formats, skip_epochs=skip_epochs):
        click.echo(f"figure: {path}")
