"""`landscape demo`: the paper's point in one glance, in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.cli import CONTEXT, cli

FLOODS = (0.0, 0.3)
# The paper's Two Gaussians with 10% label noise, with a 5 x 100 MLP instead of 5 x 500 and 2,000
# test points instead of 20,000: the learning curves need the test loss at every epoch, and at the
# paper's sizes that evaluation alone takes minutes on a CPU (the curves look the same).
WIDTH, N_TEST = 100, 2000


@cli.command(context_settings=CONTEXT)
@click.option("--out", type=click.Path(file_okay=False), default="checkpoints/demo",
              show_default=True, help="Folder for the runs, slices and figures.")
@click.option("--epochs", type=click.IntRange(min=40), default=500, show_default=True,
              help="At least 40: the flooded run's loss first falls below b at epoch 26, and the "
                   "slice needs that snapshot.")
@click.option("--format", "formats", default="png,pdf", show_default=True,
              help="Figure formats, comma-separated.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace a previous demo's files in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def demo(out, epochs, formats, device, overwrite, quiet):
    """Flooding in one glance: Two Gaussians with 10% label noise (paper Sec. 4.1, with a
    5 x 100 MLP and 2,000 test points), trained with b = 0 and with b = 0.3 for 500 epochs.

    Draws two figures: the learning curves (the plain training loss goes to zero while the
    flooded one floats at b = 0.3, and the flooded test loss stays lower), and a 1-D slice of the
    loss landscape through both final models and the flooded run's first-below-b snapshot (paper
    Fig. 5). Keeps only what the figures need (parameters at the last epoch, the snapshot, the
    metrics): about 4 MB in OUT. Under a minute on a 2-core CPU.

    \b
    Example:
      landscape demo --out /tmp/demo
    """
    from landscape.config.execution import Execution
    from landscape.errors import BadInput
    from landscape.figures.style import parse_formats

    out = Path(out)
    formats = parse_formats(formats)
    execution = Execution(device=device, progress=not quiet)  # checks --device before torch loads
    runs_dir, slices_dir = out / "runs", out / "slices"
    if not overwrite and runs_dir.is_dir() and any(runs_dir.glob("*.h5*")):
        raise BadInput(f"{out} holds a previous demo's runs; pass --overwrite to replace them, or "
                       "give another --out")
    # its thread (one, unless `landscape --threads` says otherwise) is the command group's choice
    _run(out, epochs, formats, execution, overwrite, quiet, runs_dir, slices_dir)


def _run(out: Path, epochs: int, formats, execution, overwrite: bool, quiet: bool,
         runs_dir: Path, slices_dir: Path) -> None:
    from landscape.analysis.curves import learning_curves
    from landscape.analysis.flatness import flatness
    from landscape.config import DataConfig, ModelConfig, OptimConfig, RunConfig
    from landscape.device import resolve_device
    from landscape.figures.curves import plot_curves
    from landscape.figures.flatness import plot_flatness
    from landscape.measures.options import SliceOptions
    from landscape.runs.inspect import demo_report
    from landscape.runs.store import Run
    from landscape.training.grid import expand
    from landscape.training.planner import train as train_runs

    base = RunConfig(data=DataConfig("two_gaussians", noise=0.1, n_test=N_TEST),
                     model=ModelConfig("mlp", width=WIDTH), optim=OptimConfig(epochs=epochs),
                     save="last", eval_test="every")
    result = train_runs(expand(base, FLOODS, [0]), out=out, name=runs_dir.name,
                        execution=execution, overwrite=overwrite)
    runs = [Run(p) for p in result.paths]
    click.echo(demo_report(result.paths))
    slices = flatness(runs, SliceOptions(), slices_dir, device=resolve_device(execution.device),
                      overwrite=overwrite, progress=not quiet)
    curves = plot_curves(learning_curves(runs), out / "learning_curves", formats)
    slice_figure = plot_flatness(slices, out / "flatness_slice", formats)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    click.echo(
        "\nLearning curves (left: training loss, right: test loss; b = 0 black dotted, b = 0.3 "
        "coloured):\n  " + "\n  ".join(map(str, curves)) +
        "\n1-D slice of the loss landscape along one random filter-normalized direction (solid: "
        "the final models, dotted: the flooded run at its first mini-batch loss below b):\n  " +
        "\n  ".join(map(str, slice_figure)) +
        f"\n{out}/ holds {size / 1e6:.1f} MB: runs/ (run files), slices/ (slice result files), "
        "the figures and their CSV data.")
