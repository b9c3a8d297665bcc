"""`landscape flatness`: 1-D slices and 2-D surfaces of the loss along random directions (paper
Sec. 5.3)."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.cli import CONTEXT, analysis_options, cli, model_options, normalization_options
from landscape.errors import BadInput
from landscape.measures.options import SliceOptions

DEFAULT = SliceOptions()


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--points", type=int, default=51, show_default=True,
              help="Grid points along each direction.")
@click.option("--span", type=float, default=None,
              help="The grid covers [-SPAN, SPAN] (default 1; with --direction pca, the path's "
              "reach x 1.2).")
@click.option("--direction", type=click.Choice(["random", "hessian", "pca"]), default="random",
              show_default=True,
              help="random: Gaussian draws (the paper's Fig. 5); hessian: each model's top "
              "Hessian eigenvector(s) of the training loss, filter-normalized; pca: the plane "
              "of the optimization path (saved epochs or --weights files), path drawn on it.")
@click.option("--direction-seed", type=int, default=0, show_default=True,
              help="Seed of the Gaussian direction(s), the same for every model (hessian: of "
              "the Lanczos start).")
@click.option("--2d", "two_d", is_flag=True,
              help="A surface over two directions (a POINTS x POINTS grid) and contour plots.")
@click.option("--bn-stats", type=click.Choice(["checkpoint", "recompute"]), default="checkpoint",
              show_default=True, help="BatchNorm running statistics: the checkpoint's, or "
              "re-estimated from the training inputs at each perturbed point.")
@click.option("--eigen", is_flag=True,
              help="Also the largest and the smallest Hessian eigenvalue of the training loss at "
              "each point (Lanczos), stored as train_max_eigenvalue and train_min_eigenvalue, "
              "and the convexity map |min / max| (Li et al. 2018, Sec. 6) in "
              "OUT/convexity[-2d].{pdf,png,csv}. Each point costs hundreds of Hessian-vector "
              "products.")
@click.option("--eigen-iterations", type=int, default=DEFAULT.eigen_iterations,
              show_default=True,
              help="With --eigen: Lanczos products at most (one run for both ends). A run "
              "cut short gives Ritz values inside the spectrum: a minimum above the true one "
              "can show a point as convex.")
@click.option("--eigen-tolerance", type=float, default=DEFAULT.eigen_tolerance,
              show_default=True, help="With --eigen: stop at this relative residual.")
@click.option("--out", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Folder for the result files and the figure.")
@click.option("--vtp", is_flag=True,
              help="Surfaces: also write each model's train and test loss as VTK PolyData "
              "(OUT/<model>.surface.<split>_loss.vtp) for ParaView.")
@click.option("--overwrite", is_flag=True,
              help="Recompute result files made with other parameters instead of refusing.")
@normalization_options
@model_options
@analysis_options
def flatness(paths, checkpoints, points, span, direction, direction_seed, two_d, bn_stats, vtp,
             eigen, eigen_iterations, eigen_tolerance, normalization,
             out, overwrite, formats, data_dir, device, quiet):
    """Train and test loss and accuracy at theta + alpha d along a random Gaussian direction d,
    filter-normalized to each model (Li et al. 2018), for the paper's three models (Sec. 5.3,
    Fig. 5).

    PATHS are run files or sweep folders. A run with b > 0 gives two models, its first-below-flood
    snapshot (dotted) and its last epoch (solid blue); a run with b = 0 gives its last epoch
    (solid vermillion). Each model's numbers go to OUT/<run>.<snapshot|last>.slice.h5 (.surface.h5 with
    --2d; loss-landscape's dataset names; runs of one name in different folders as
    <run>@<folder>-<file>), the figure to OUT/flatness.{pdf,png,csv}
    (flatness-2d with --2d). A killed computation resumes on the next call; a file made with
    other parameters is refused unless --overwrite. Give surfaces their own --out folder:
    `landscape figures` draws one figure per folder of result files.

    Your own model instead of run files: --model, --weights (one model per checkpoint file,
    OUT/<file>.slice.h5) and --data (every split it names is evaluated). Result files hold the
    directions themselves (direction/x/<parameter>, direction/y/... with --2d).

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --flood 0 0.3 --name pair
      landscape flatness checkpoints/pair --out results/pair
      landscape flatness checkpoints/pair --2d --points 31 --out results/pair/surface
      landscape flatness checkpoints/pair --2d --direction pca --out results/pair/pca
      landscape flatness checkpoints/pair --2d --eigen --points 11 --out results/pair/convexity
      landscape flatness --model mynet:make --data mynet:splits --weights ckpt/final.pt
    """
    from landscape.figures.style import parse_formats

    formats = parse_formats(formats)
    if vtp and not two_d:
        raise BadInput("--vtp writes surfaces: add --2d")
    options = SliceOptions(points=points, span=span, direction=direction,
                           direction_seed=direction_seed, two_d=two_d,
                           bn_stats=bn_stats, eigen=eigen, eigen_iterations=eigen_iterations,
                           eigen_tolerance=eigen_tolerance,
                           normalization=normalization)
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.analysis.flatness import flatness as compute
    from landscape.device import resolve_device
    from landscape.distributed import current
    from landscape.figures.flatness import plot_flatness
    from landscape.runs.folders import open_runs

    if checkpoints is not None:
        checkpoints = checkpoints()
        from landscape.analysis.usercheckpoints import checkpoint_flatness

        results = checkpoint_flatness(checkpoints, options, Path(out),
                                      device=resolve_device(device), overwrite=overwrite,
                                      progress=not quiet)
    else:
        results = compute(open_runs(paths, data_dir=data_dir), options, Path(out),
                          device=resolve_device(device), overwrite=overwrite, progress=not quiet,
                          report=lambda line: click.echo(f"landscape: note: {line}", err=True))
    if current().rank != 0:  # under torchrun, rank 0 reports and draws for all ranks
        return
    for path in results:
        click.echo(f"{'surface' if two_d else 'slice'}: {path}")
    for path in plot_flatness(results, Path(out) / ("flatness-2d" if two_d else "flatness"),
                              formats):
        click.echo(f"figure: {path}")
    if eigen:
        from landscape.figures.convexity import plot_convexity

        for path in plot_convexity(results, Path(out) / ("convexity-2d" if two_d else
                                                         "convexity"), formats):
            click.echo(f"figure: {path}")
    if vtp:
        from landscape.figures.vtk import write_vtp

        for path in results:
            for split in ("train", "test"):
                click.echo(f"vtp: {write_vtp(path, split)}")
