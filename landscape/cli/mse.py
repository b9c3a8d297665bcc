"""`landscape mse`: Theorem 1 (paper Sec. 5.4) checked on a trained model."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.cli import CONTEXT, analysis_options, cli, model_options
from landscape.errors import BadInput


def parse_epoch(text: str) -> int | str:
    """An epoch number, "last" or "snapshot" (shared by the analysis commands' --epoch)."""
    if text in ("last", "snapshot"):
        return text
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"--epoch must be an epoch number, last or snapshot, got {text!r}") from None


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(), metavar="PATH")
@click.option("--epoch", default="last", show_default=True,
              help="The checkpoint g: an epoch number (it must be saved), last or snapshot.")
@click.option("--samples", type=int, default=2000, show_default=True,
              help="M: independent samples of R^ (index draws from the pool).")
@click.option("--sample-size", type=int, help="n: points per sample (default: the run's "
                                              "training-set size).")
@click.option("--flood-grid", metavar="B", help="Flood levels: a comma list or start:stop:step "
                                                "(default: 201 levels from 0 to 2 max(R, train loss)).")
@click.option("--pool-size", type=int, default=100_000, show_default=True,
              help="Fresh draws that estimate R (synthetic sets; image sets use the test split).")
@click.option("--pool-seed", type=int, help="Data seed of the pool (default: the run's + 1000003).")
@click.option("--seed", "draw_seed", type=int, default=0, show_default=True,
              help="Seed of the M index draws.")
@click.option("--out", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Folder for the result file (<run or weights file name>-mse.h5) and the "
              "figure beside it.")
@click.option("--overwrite", is_flag=True,
              help="Replace a result file computed from other inputs or parameters (an identical "
              "one is reused).")
@model_options
@analysis_options
def mse(paths, checkpoints, epoch, samples, sample_size, flood_grid, pool_size, pool_seed, draw_seed, out,
        overwrite, formats, data_dir, device, quiet):
    """Theorem 1 on a trained model g: the MSE of the empirical risk R^ and of the flooded risk
    R~ = |R^ - b| + b over a grid of b, with R estimated on a large independent pool; checks the
    per-sample identity (R^-R)^2 - (R~-R)^2 = 4(b-R^)(R-b)1[R^<b] and the claim that b <= R never
    raises the MSE, and repeats it with R^ measured on g's own training set. Prints whether the
    theorem's claims held on the draws; exit code 0 either way.

    Your own model instead of a run file: --model, --weights (one file) and --data with
    'train' and 'test' splits; the test split is the pool R is measured on.

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --epochs 200
      landscape mse checkpoints/two_gaussians-noise0.1-mlp-flood0-seed0.h5 --samples 5000
      landscape mse --model mynet:make --data mynet:splits --weights ckpt/final.pt
    """
    from landscape.config.floodgrid import parse_flood_levels
    from landscape.figures.style import parse_formats, with_extension
    from landscape.measures.options import MseOptions

    formats = parse_formats(formats)
    options = MseOptions(epoch=parse_epoch(epoch), samples=samples, sample_size=sample_size,
                         flood_grid=parse_flood_levels([flood_grid]) if flood_grid else (),
                         pool_size=pool_size, pool_seed=pool_seed, draw_seed=draw_seed)
    if checkpoints is None and len(paths) != 1:
        raise BadInput(f"mse checks one run file; got {len(paths)} paths")
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.analysis.mse import report, theorem1_check
    from landscape.device import resolve_device
    from landscape.figures.mse import plot_mse
    from landscape.runs.folders import open_runs

    if checkpoints is not None:
        checkpoints = checkpoints()
        from landscape.analysis.usercheckpoints import checkpoint_mse

        stem = Path(out) / f"{checkpoints.files[0].stem}-mse"
        result = checkpoint_mse(checkpoints, with_extension(stem, "h5"), sample_size=sample_size,
                                samples=samples, flood_grid=options.flood_grid, seed=draw_seed,
                                device=resolve_device(device), progress=not quiet,
                                overwrite=overwrite)
    else:
        (run, *more) = open_runs(paths, data_dir=data_dir)  # a diverged run is refused
        if more:
            raise BadInput(f"mse checks one run file; {paths[0]} holds {len(more) + 1} runs")
        stem = Path(out) / f"{run.path.stem}-mse"  # the file's name: two runs never share it
        result = theorem1_check(run, options, with_extension(stem, "h5"),
                                device=resolve_device(device), progress=not quiet,
                                overwrite=overwrite)
    written = plot_mse(result, stem, formats)
    click.echo(report(result))
    click.echo(f"wrote {result} and {', '.join(map(str, written))}")
