"""The `landscape` command: a thin layer that parses options, calls one library function and says
where the results went. Errors are one line on stderr: exit code 2 for bad input, 1 for failed work.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import threading
import traceback
from typing import NoReturn

import click

from landscape.errors import (
    LandscapeError,
    Terminated,
    clear_pending,
    interrupt,
    quiet_when_pending,
)

CONTEXT = dict(help_option_names=["-h", "--help"], max_content_width=100)


class Group(click.Group):
    """Turns every failure into one line on stderr and the contract's exit code."""

    def main(self, args=None, prog_name=None, **kwargs):  # noqa: D401 - click's signature
        # SIGTERM (Slurm's preemption notice) as Ctrl-C, unless someone handles it already;
        # both through errors.interrupt, which the trainer re-raises if a finalizer dropped it.
        main_thread = threading.current_thread() is threading.main_thread()
        handled = {sig: handler for sig, default, handler in (
            (signal.SIGTERM, signal.SIG_DFL, _terminate),
            (signal.SIGINT, signal.default_int_handler, _interrupt))
            if main_thread and signal.getsignal(sig) is default}
        for sig, handler in handled.items():
            signal.signal(sig, handler)
        hook = sys.unraisablehook
        sys.unraisablehook = functools.partial(quiet_when_pending, fallback=hook)
        try:
            self._main(args, prog_name, **kwargs)
        finally:
            sys.unraisablehook = hook
            clear_pending()
            for sig in handled:
                signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM
                              else signal.default_int_handler)

    def _main(self, args, prog_name, **kwargs):
        try:
            super().main(args=args, prog_name=prog_name or "landscape", standalone_mode=False,
                         **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt) as e:
            # click turns Ctrl-C (and our SIGTERM) into Abort, the interrupt as its cause.
            cause = e if isinstance(e, KeyboardInterrupt) else e.__cause__
            if cause is None:
                click.echo("landscape: aborted", err=True)
                sys.exit(130)
            what = "terminated (SIGTERM)" if isinstance(cause, Terminated) else "interrupted"
            click.echo(f"landscape: {what}; the epoch in flight was not saved; continue with "
                       "the same command and --resume", err=True)
            sys.exit(143 if isinstance(cause, Terminated) else 130)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            click.echo(f"landscape: error: {e.format_message()}{hint}", err=True)
            sys.exit(2)
        except LandscapeError as e:
            click.echo(f"landscape: error: {e}", err=True)
            end(e.exit_code, together=getattr(e, "exchanged", False))
        except OSError as e:  # a write the library did not name (e.g. a figure on a full disk)
            where = f"{e.filename}: " if e.filename else ""
            text = os.strerror(e.errno) if e.errno and e.filename else str(e).splitlines()[0]
            click.echo(f"landscape: error: {where}{text}", err=True)
            sys.exit(2 if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else 1)
        except Exception as e:  # a bug: say so in one line, the traceback on request
            if os.environ.get("LANDSCAPE_DEBUG"):
                traceback.print_exc()
            click.echo(f"landscape: internal error: {type(e).__name__}: {e} (set LANDSCAPE_DEBUG=1 "
                       "for the traceback)", err=True)
            sys.exit(1)
        end(0, together=True)


def _terminate(signum, frame) -> None:
    interrupt(Terminated())


def _interrupt(signum, frame) -> None:
    interrupt(KeyboardInterrupt())


def end(code: int, *, together: bool) -> NoReturn:
    """Exit with `code`; under torchrun, through distributed.end (`together`: every rank is at
    this point). Only commands that can join a process group import landscape.distributed, and
    --help should not import torch."""
    module = sys.modules.get("landscape.distributed")
    if module is not None:
        module.end(code, together=together)
    sys.exit(code)


@click.group(cls=Group, context_settings=CONTEXT)
@click.option("--threads", metavar="N",
              help="CPU threads of each process (under torchrun, of each worker). Default: "
                   "LANDSCAPE_THREADS, else OMP_NUM_THREADS, else 1: one thread is several times "
                   "faster for small models on a shared CPU.")
@click.version_option(package_name="flooding-landscape", prog_name="landscape")
@click.pass_context
def cli(ctx: click.Context, threads: str | None) -> None:
    """Flooding (Ishida et al., ICML 2020) and the loss landscape: train runs into HDF5 files,
    then analyse them.

    Every command uses one CPU thread per process unless --threads, LANDSCAPE_THREADS or
    OMP_NUM_THREADS (in that order) says otherwise.

    \b
    Quick start:
      landscape demo
      landscape train --data two_gaussians --noise 0.1 --flood 0 0.3 --epochs 500
      landscape info checkpoints/
      landscape --threads 8 train --data cifar10 --data-dir data --augment
    """
    from landscape.threads import chosen_threads, using_threads

    # Before the command imports torch; undone when it ends (a command run inside Python).
    ctx.with_resource(using_threads(chosen_threads(threads)))


def analysis_options(command):
    """The options the analysis commands share: figure formats, device, progress bar, and where
    an image set's files are now."""
    for option in reversed((
            click.option("--data-dir", type=click.Path(file_okay=False),
                         help="Image sets: the folder holding the files, if not where training "
                         "read them (each run file records that folder)."),
            click.option("--format", "formats", default="pdf,png", show_default=True,
                         help="Figure formats, comma-separated."),
            click.option("--device", default="auto", show_default=True,
                         help="auto, cpu, cuda or cuda:N."),
            click.option("--quiet", "-q", is_flag=True, help="No progress bar."))):
        command = option(command)
    return command


def file_name(ctx, param, value):
    """A --name option's check: one file name, so that nothing is written outside --out."""
    from landscape.files import check_name

    return value if value is None else check_name(value, f"--{param.name}")


def skip_epochs_option():
    """--skip-epochs, of the per-epoch figures (gradnorm, sharpness, and figures redrawing them)."""
    from landscape.figures.epochs import SKIP_EPOCHS

    return click.option("--skip-epochs", type=click.IntRange(min=0), default=None,
                        help="Leave the first N epochs (and the initial weights) out of the "
                        "per-epoch figures; 0 draws every epoch. Default: "
                        f"{SKIP_EPOCHS} for run files (the paper's Fig. 4), 0 for your own "
                        "checkpoints (--weights).")


REPLACE = ("Replace a result file computed from other inputs or parameters (an identical one is "
           "reused).")


def result_options(name: str, *, holds: str = "the result file (NAME.h5) and the figure beside it",
                   overwrite: str = REPLACE):
    """--out, --name and --overwrite of a command that writes one result file OUT/NAME.h5 (and
    what `holds` says beside it)."""

    def decorate(command):
        for option in reversed((
                click.option("--out", type=click.Path(file_okay=False), default="results",
                             show_default=True, help=f"Folder for {holds}."),
                click.option("--name", default=name, show_default=True, callback=file_name,
                             help="File name stem."),
                click.option("--overwrite", is_flag=True, help=overwrite))):
            command = option(command)
        return command

    return decorate


def per_epoch_options(name: str):
    """The options of the analyses that measure every saved epoch (gradnorm, sharpness): which
    epochs, where the result file and figure go, and how many early epochs the figure leaves out."""

    def decorate(command):
        command = result_options(name)(skip_epochs_option()(command))
        return click.option("--epochs", default=None, metavar="E,E",
                            help="Only these saved epochs (and each run's early-stopping epoch, "
                            "where saved), or the --weights files of these epochs. Default: "
                            "every saved epoch.")(command)

    return decorate


def normalization_options(command):
    """--normalization and --include-biasbn, handed to the command as one `normalization`
    argument (an analysis.filternorm.Normalization)."""

    @functools.wraps(command)
    def wrapped(*args, normalization, include_biasbn, **kwargs):
        from landscape.measures.options import Normalization

        return command(*args, normalization=Normalization(normalization, include_biasbn), **kwargs)

    for option in reversed((
            click.option("--normalization", type=click.Choice(["filter", "layer"]),
                         default="filter", show_default=True,
                         help="Filter normalization per filter (the paper's text) or per tensor "
                         "(the authors' demo code)."),
            click.option("--include-biasbn", is_flag=True,
                         help="Include biases and BatchNorm weights too, each as one filter."))):
        wrapped = option(wrapped)
    return wrapped


def model_options(command):
    """--model, --weights, --data and --loss: analyse a user's own model and checkpoint files
    instead of run files. The command gets `paths` (run files) and `checkpoints` (None, or a
    function returning the usermodel.UserCheckpoints, to call after its own options are checked);
    with --model, further PATHS are more weight files (what a shell makes of `--weights
    ckpt/*.pt`)."""

    @functools.wraps(command)
    def wrapped(*args, paths, model, weights, user_data, loss, **kwargs):
        from landscape.errors import BadInput

        given = [name for name, v in (("--model", model), ("--weights", weights),
                                      ("--data", user_data)) if v]
        if not given:
            if not paths:
                raise BadInput("give run files or sweep folders (PATHS), or your own model with "
                               "--model MODULE:FACTORY --weights FILE... --data MODULE:FACTORY")
            return command(*args, paths=paths, checkpoints=None, **kwargs)
        if len(given) < 3:
            missing = [n for n in ("--model", "--weights", "--data") if n not in given]
            raise BadInput(f"{', '.join(given)} also needs {' and '.join(missing)}")
        def opened():  # called once the command's own options are checked: no torch before
            from landscape.analysis.usermodel import open_checkpoints

            return open_checkpoints(model, list(weights) + list(paths), user_data, loss)

        return command(*args, paths=(), checkpoints=opened, **kwargs)

    for option in reversed((
            click.option("--model", metavar="MODULE:FACTORY",
                         help="Your own model: FACTORY in MODULE (importable from the current "
                         "folder) returns the torch.nn.Module (instead of PATHS)."),
            click.option("--weights", multiple=True, metavar="FILE",
                         help="Its checkpoint files (repeatable, or a quoted glob: a trajectory "
                         "in natural order): state dicts, bare or under state_dict/model, read "
                         "with torch.load(weights_only=True)."),
            click.option("--data", "user_data", metavar="MODULE:FACTORY",
                         help="Its data: FACTORY returns a pair (x, y) of tensors or a DataLoader "
                         "(the training split), or a mapping {'train': ..., 'test': ...}."),
            click.option("--loss", default="cross_entropy", show_default=True,
                         metavar="NAME|MODULE:FN",
                         help="With --model: cross_entropy, logistic, or a function (logits, y) "
                         "-> per-sample losses."))):
        wrapped = option(wrapped)
    return wrapped


# Each command lives in its own module of this package and registers itself on `cli`.
COMMANDS = ("train", "info", "demo", "table", "mse", "memorization", "gradnorm", "flatness",
            "figures", "sharpness", "connect", "export", "generalization")


def commands() -> click.Group:
    """`cli` with every command registered (each module's import registers its command)."""
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}")
    return cli


def main() -> None:
    commands().main()
