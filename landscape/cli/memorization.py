"""`landscape memorization`: training accuracy against the flood level (paper Sec. 5.1, Fig. 3)."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.cli import CONTEXT, cli, result_options


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@result_options("memorization", overwrite="Replace a result file computed from other runs, or "
                "from these at another point of their training (an identical one is reused).")
@click.option("--format", "formats", default="pdf,png", show_default=True,
              help="Figure formats: pdf, png, svg (comma list).")
def memorization(paths, out, name, formats, overwrite):
    """Training accuracy (noisy labels, clean labels, flipped points) against the flood level b,
    at the last epoch and at the early-stopping epoch, one line per setting (runs identical but
    for b and seed), mean and std over seeds, the b chosen by validation accuracy marked (the
    same choice as `landscape table`). A result file of the same runs is reused; one of other
    runs is refused unless --overwrite.

    \b
    Example:
      landscape train --data two_gaussians --noise 0.1 --flood 0:0.5:0.05 --seeds 2 --epochs 300
      landscape memorization checkpoints/two_gaussians-noise0.1-mlp-flood --out results
    """
    from landscape.figures.style import parse_formats, with_extension

    formats = parse_formats(formats)
    # the run files come in only now: a mistyped option is answered before torch's import
    from landscape.analysis.memorization import memorization as measure
    from landscape.analysis.memorization import report
    from landscape.figures.memorization import plot_memorization

    stem = Path(out) / name
    result = measure(paths, with_extension(stem, "h5"), overwrite=overwrite)
    written = plot_memorization(result, stem, formats)
    click.echo(report(result))
    click.echo(f"wrote {result} and {', '.join(map(str, written))}")
