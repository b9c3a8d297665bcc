"""`landscape figures`: the paper's figures of Sections 2 and 5 from stored runs and results."""

from __future__ import annotations

import click

from landscape.cli import CONTEXT, cli, skip_epochs_option


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--section", "sections", required=True, multiple=True,
              type=click.Choice(["2", "5.1", "5.2", "5.3", "5.4", "sharpness", "connect",
                                 "dynamics", "all"]),
              help="2: learning curves (Fig. 2); 5.1: memorization (Fig. 3); 5.2: gradients "
                   "(Fig. 4); 5.3: flatness (Fig. 5); 5.4: Theorem 1 (MSE); all: these five. "
                   "sharpness: test loss vs Hessian measures (landscape sharpness); connect: paths "
                   "between two models (landscape connect); dynamics: the top eigenvalue "
                   "against 2/lr (runs trained with --track top_eigenvalue). Repeatable.")
@click.option("--out", type=click.Path(file_okay=False), default="figures", show_default=True,
              help="Folder for the figures and their data files (CSV).")
@click.option("--format", "formats", default="pdf,png", show_default=True,
              help="Figure formats: pdf, png, svg (comma list).")
@skip_epochs_option()
def figures(paths, sections, out, formats, skip_epochs):
    """Build the paper's figures from stored data (no training, no model evaluation), each with
    a CSV of the plotted numbers beside it.

    PATHS are run files, sweep folders, result files or folders holding any of them. Sections 2
    (learning curves; runs trained with --eval-test every) and 5.1 (memorization) read runs; 5.1
    also takes a memorization result. 5.2, 5.3 and 5.4 read the result files of `landscape
    gradnorm`, `landscape flatness` and `landscape mse`, sharpness those of `landscape
    sharpness`, connect those of `landscape connect`; dynamics reads runs trained with `--track
    top_eigenvalue`. A section without its inputs is named in one error line and nothing is
    drawn.

    \b
    Example:
      landscape figures checkpoints/study results/ --section all --out figures/
      landscape figures checkpoints/two_gaussians-noise0.1-mlp-flood --section 5.1
      landscape figures checkpoints/mnist-mlp-flood --section dynamics
    """
    from landscape.analysis.figures import PAPER_SECTIONS, build_figures
    from landscape.figures.style import parse_formats

    sections = PAPER_SECTIONS if "all" in sections else tuple(dict.fromkeys(sections))
    for line in build_figures(paths, sections, out, formats=parse_formats(formats),
                              skip_epochs=skip_epochs):
        click.echo(line)
