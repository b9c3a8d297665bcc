"""`landscape train`: runs and sweeps into HDF5 run files."""

from __future__ import annotations

import re
from pathlib import Path

import click

from landscape.cli import CONTEXT, cli, end, file_name
from landscape.config import (
    DATASETS,
    MODELS,
    RUN_DEFAULTS,
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
)
from landscape.config.execution import AMP_MODES, Execution
from landscape.config.floodgrid import parse_flood_levels
from landscape.config.tracking import SAMPLES, TRACKABLE, TrackConfig
from landscape.errors import BadInput

_FLOOD_TOKEN = re.compile(r"^-?(\d|\.\d)|^[^-].*:")


# A sweep's axes: options that take several values, space-separated after the flag
# (`--flood 0 0.1 0.2`, `--lr 1e-3 1e-2`) or as comma lists. --flood also adds up when repeated;
# for the others a repeated flag replaces the earlier one, as it always did.
AXIS_OPTIONS = {"lr": ("--lr", float), "batch_size": ("--batch-size", int),
                "weight_decay": ("--weight-decay", float), "width": ("--width", int),
                "depth": ("--depth", int)}
VARIADIC = ("--flood", *(flag for flag, _ in AXIS_OPTIONS.values()))


class TrainCommand(click.Command):
    """Lets `--flood 0 0.1 0.2` and the other VARIADIC options take several space-separated
    values, as well as comma lists and, for --flood, repeated flags and ranges start:stop:step."""

    def parse_args(self, ctx, args):
        rewritten, i = [], 0
        while i < len(args):
            rewritten.append(args[i])
            if args[i] in VARIADIC and i + 1 < len(args):
                flag, values = args[i], [args[i + 1]]
                i += 2
                while i < len(args) and _FLOOD_TOKEN.match(args[i]):
                    values.append(args[i])
                    i += 1
                if flag == "--flood":
                    rewritten += [values[0]] + [t for v in values[1:] for t in ("--flood", v)]
                else:
                    rewritten.append(",".join(values))
                continue
            i += 1
        return super().parse_args(ctx, rewritten)


def _axis_values(token: str | None, flag: str, kind: type) -> tuple:
    """An axis option's values (space-separated or a comma list), each given once."""
    values = []
    if token is not None:
        for text in token.split(","):
            try:
                values.append(kind(text))
            except ValueError:
                raise BadInput(f"{flag} takes {kind.__name__} values, got {text!r}") from None
    repeated = [v for v in values if values.count(v) > 1]
    if repeated:
        raise BadInput(f"{flag} {repeated[0]:g} is given twice; give each value once")
    return tuple(values)


def _csv_ints(value: str | None, what: str) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise BadInput(f"{what} must be comma-separated integers, got {value!r}") from None


def _library(cls, name: str):
    """The library's default of a config field: click shows it, and there is one copy of it."""
    return cls.__dataclass_fields__[name].default


@cli.command(cls=TrainCommand, context_settings=CONTEXT)
@click.option("--data", "data_name", required=True, metavar="NAME",
              help=f"Data set: {', '.join(DATASETS)}.")
@click.option("--noise", type=float, default=_library(DataConfig, "noise"), show_default=True,
              help="Fraction of labels flipped in train, validation and test (exactly floor(n*F)).")
@click.option("--model", "model_name", metavar="NAME",
              help=f"Model: {', '.join(MODELS)}. Default: the paper's for the data set.")
@click.option("--depth", metavar="N", help="MLP hidden layers (default 5 synthetic, "
              "2 MNIST; mlp_bn 4); several values make a sweep axis.")
@click.option("--width", metavar="N", help="MLP hidden units (default 500 "
              "synthetic, 1000 MNIST); several values make a sweep axis.")
@click.option("--flood", "floods", multiple=True, metavar="B",
              help="Flood level(s): numbers, comma lists or ranges start:stop:step (inclusive); "
                   "several make a sweep. Default 0 (no flooding).")
@click.option("--objective", type=click.Choice(["flood", "iflood", "adaflood"]),
              default=_library(ObjectiveConfig, "kind"),
              show_default=True, help="flood: |J-b|+b on the batch mean; iflood: per sample; "
              "adaflood: a level per sample from auxiliary models (Bae et al. 2023).")
@click.option("--flood-schedule", type=click.Choice(["fixed", "adaptive"]), default="fixed",
              show_default=True, help="adaptive: from zero training error on, b moves by "
              "--flood-step with the validation accuracy (docs: beyond the paper); --flood "
              "is then the starting b.")
@click.option("--flood-step", type=float, metavar="ALPHA", help="Adaptive: change of b (0.01).")
@click.option("--flood-threshold", type=float, metavar="LAMBDA",
              help="Adaptive: validation-accuracy change that moves b (0.01).")
@click.option("--flood-max", type=float, metavar="B", help="Adaptive: largest b (0.5).")
@click.option("--adaflood-gamma", type=float, help="AdaFlood: correction gamma in (0, 1) (0.5).")
@click.option("--adaflood-folds", type=int, help="AdaFlood: folds, one auxiliary model each (2).")
@click.option("--loss", type=click.Choice(["logistic", "ce"]),
              help="Surrogate loss (default: logistic for binary data, softmax CE otherwise).")
@click.option("--seeds", type=int, help="Train seeds 0..N-1 (a sweep over trials).")
@click.option("--seed", type=int, help="The one seed to train (default 0).")
@click.option("--data-seed", type=int,
              help="Fix the data draw across seeds (default: each seed draws its own data).")
@click.option("--epochs", type=int, help="Epochs (default 500, as the paper).")
@click.option("--batch-size", metavar="N", help="Mini-batch size (default 100 "
              "synthetic, 128 images); several values make a sweep axis.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]),
              help="Default: adam for synthetic data, sgd for images.")
@click.option("--lr", metavar="LR", help="Learning rate (default 1e-3 adam, 0.1 "
              "sgd); several values (--lr 1e-3 1e-2) make a sweep axis.")
@click.option("--momentum", type=float, help="SGD momentum (default 0.9 for images).")
@click.option("--weight-decay", metavar="WD",
              help=f"L2 weight decay (default {_library(OptimConfig, 'weight_decay'):g}); several "
              "values make a sweep axis.")
@click.option("--lr-milestones", metavar="E,E", help="Multiply the learning rate by 0.1 after "
                                                     "these epochs, e.g. 250,400.")
@click.option("--augment", is_flag=True, help="Random crop (padding 4) and horizontal flip.")
@click.option("--save-every", type=int, metavar="N", help="Keep parameters every N epochs.")
@click.option("--save-epochs", metavar="E,E", help="Keep parameters at these epochs.")
@click.option("--save", "save_kind", type=click.Choice(["all", "last", "none", "log"]),
              help="Keep parameters at every epoch, the last, none, or ~30 log-spaced epochs. "
                   f"Default: {RUN_DEFAULTS['single'][0]} for one run, "
                   f"{RUN_DEFAULTS['sweep'][0]} for a sweep. Epoch 0 is always kept.")
@click.option("--eval-test", type=click.Choice(["every", "best"]),
              help="Test set every epoch, or only where validation accuracy reaches a new best, "
                   f"at saved epochs and at the end. Default: {RUN_DEFAULTS['single'][1]} for "
                   f"one run, {RUN_DEFAULTS['sweep'][1]} for sweeps.")
@click.option("--sizes", type=click.Choice(["paper", "demo"]), default=_library(DataConfig, "sizes"),
              show_default=True,
              help="Synthetic sample sizes: as the paper's text, or per class as the demo code.")
@click.option("--n-train", type=int, help="Training points in total (overrides --sizes).")
@click.option("--n-val", type=int, help="Validation points in total.")
@click.option("--n-test", type=int, help="Test points in total.")
@click.option("--sinusoid-input", type=click.Choice(["gaussian", "disk"]),
              help="Sinusoid inputs: N(0, I2) as the paper, or the demo's disk of radius 2.")
@click.option("--spiral-tau", type=float, help="Spiral input noise tau (default 0).")
@click.option("--val-fraction", type=float, help="Image sets: held-out share of the training set "
                                                 "(default 0.2, 0.15 with --augment).")
@click.option("--track", metavar="M,M", help="Record these landscape measures during training "
              f"({', '.join(TRACKABLE)}; comma list) with the optimizer's edge of stability "
              "(2/lr for SGD) and, for Adam, its preconditioned sharpness.")
@click.option("--track-every", type=int, default=_library(TrackConfig, "every"), metavar="N",
              show_default=True, help="With --track: after every N-th epoch (0, N, 2N, ...).")
@click.option("--track-samples", type=int, metavar="S", help="With --track: a fixed seeded "
              f"subset of S training rows (default {SAMPLES}, or all of a smaller training "
              "set).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]),
              default=_library(RunConfig, "dtype"), show_default=True)
@click.option("--device", default=_library(Execution, "device"), show_default=True,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Folder of the image data sets' official files (docs: training guide).")
@click.option("--download", is_flag=True, help="Fetch the image set's official files into "
                                               "--data-dir if they are missing (MD5-checked).")
@click.option("--amp", type=click.Choice(AMP_MODES), default=_library(Execution, "amp"),
              show_default=True,
              help="GPU speed: bf16 runs forward passes under bfloat16 autocast.")
@click.option("--compile", "compile_", is_flag=True,
              help="GPU speed: torch.compile the training forward (compiled once; run files keep "
                   "the plain state dict).")
@click.option("--ensemble", default=_library(Execution, "ensemble"), show_default=True,
              help="Sweeps: models stacked per vectorized chunk (auto, off or a number).")
@click.option("--out", type=click.Path(file_okay=False), default="checkpoints", show_default=True,
              help="Folder for run files.")
@click.option("--name", callback=file_name,
              help="File (one run) or folder (sweep) name instead of the derived one.")
@click.option("--checkpoint-every", type=float, metavar="SECONDS",
              help="Write the resume state at most this often (and at saved and final epochs; "
                   "metrics every epoch, or every few seconds where that is cheaper). A kill "
                   f"loses at most this interval; 0: every epoch.  "
                   f"[default: {_library(Execution, 'checkpoint_every'):g}]")
@click.option("--resume", is_flag=True,
              help="Continue unfinished runs; skip finished ones, or continue them to a larger "
                   "--epochs (all other options as they were trained with).")
@click.option("--drop-resume-state", is_flag=True,
              help="When a run finishes, remove its resume state (model and optimizer, twice: "
                   "29 of 43 MB for MNIST) from its file, which can then not be continued to "
                   "more epochs.")
@click.option("--overwrite", is_flag=True, help="Replace existing run files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(data_name, noise, model_name, depth, width, floods, objective, flood_schedule,
          flood_step, flood_threshold, flood_max, adaflood_gamma, adaflood_folds, loss, seeds, seed,
          data_seed, epochs, batch_size, optimizer, lr, momentum, weight_decay, lr_milestones,
          augment, save_every, save_epochs, save_kind, eval_test, sizes, n_train, n_val, n_test,
          sinusoid_input, spiral_tau, val_fraction, track, track_every, track_samples, dtype, device, data_dir, download, amp, compile_,
          ensemble, out, name, checkpoint_every, resume, drop_resume_state, overwrite,
          quiet):
    """Train with and without flooding; several flood levels or seeds make a sweep.

    \b
    Examples:
      landscape train --data two_gaussians --noise 0.1 --flood 0.3
      landscape train --data spiral --noise 0.05 --flood 0:0.5:0.01 --seeds 10
      landscape train --data two_gaussians --noise 0.1 --flood-schedule adaptive --seeds 3
      landscape train --data two_gaussians --noise 0.1 --objective adaflood --seeds 3
      landscape train --data mnist --data-dir tests/data --flood 0 0.02 --epochs 100
      landscape train --data two_gaussians --flood 0 0.3 --lr 1e-3 1e-2 --width 100 500 --seeds 3
      landscape train --data mnist --data-dir tests/data --flood 0 0.02 --track top_eigenvalue
      landscape train --data cifar10 --data-dir data --augment --lr-milestones 250,400 --amp bf16
      torchrun --standalone --nproc-per-node 8 -m landscape train --data spiral --flood 0:0.5:0.01

    Under torchrun each process trains its own share of the runs (docs: scale-out).
    """
    if data_name not in DATASETS:
        raise BadInput(f"unknown data set {data_name!r}; choose from {', '.join(DATASETS)}")
    if seeds is not None and seed is not None:
        raise BadInput("--seeds and --seed exclude each other")
    if seeds is not None and seeds < 1:
        raise BadInput(f"--seeds must be >= 1, got {seeds}")
    if track is None and (track_samples is not None
                          or track_every != _library(TrackConfig, "every")):
        raise BadInput("--track-every and --track-samples need --track")
    if sum(x is not None for x in (save_every, save_epochs, save_kind)) > 1:
        raise BadInput("give at most one of --save-every, --save-epochs and --save")
    # Options left unset stay None: RunConfig.resolved() fills in the paper's recipe for the
    # data set (config.PAPER_DEFAULTS), the one copy of it, and the save and test policies of one
    # run or a sweep (config.RUN_DEFAULTS).
    levels = parse_flood_levels(floods) if floods else (0.0,)
    tokens = {"lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "width": width,
              "depth": depth}
    given = {axis: _axis_values(tokens[axis], flag, kind)
             for axis, (flag, kind) in AXIS_OPTIONS.items()}
    # one value sets the base config (the run names stay as they were); several make an axis
    single = {axis: values[0] if values else None for axis, values in given.items()
              if len(values) <= 1}
    axes = {axis: values for axis, values in given.items() if len(values) > 1}
    seed_list = list(range(seeds)) if seeds is not None else [seed or 0]
    if save_every is not None:
        save = f"every:{save_every}"
    elif save_epochs is not None:
        save = f"epochs:{save_epochs}"
    else:
        save = save_kind  # None: the library's default for one run or a sweep
    base = RunConfig(
        data=DataConfig(name=data_name, noise=noise, sizes=sizes, n_train=n_train, n_val=n_val,
                        n_test=n_test, sinusoid_input=sinusoid_input, spiral_tau=spiral_tau,
                        val_fraction=val_fraction),
        model=ModelConfig(name=model_name, depth=single.get("depth"), width=single.get("width")),
        objective=ObjectiveConfig(
            kind=objective, loss=loss,
            schedule=None if flood_schedule == "fixed" else flood_schedule,
            schedule_step=flood_step, schedule_threshold=flood_threshold, schedule_max=flood_max,
            adaflood_gamma=adaflood_gamma, adaflood_folds=adaflood_folds),
        optim=OptimConfig(name=optimizer, lr=single.get("lr"), momentum=momentum,
                          weight_decay=_library(OptimConfig, "weight_decay")
                          if single.get("weight_decay") is None else single["weight_decay"],
                          milestones=_csv_ints(lr_milestones, "--lr-milestones"),
                          batch_size=single.get("batch_size"), epochs=epochs),
        augment=augment, save=save, eval_test=eval_test, dtype=dtype,
        track=None if track is None else TrackConfig(
            tuple(m.strip() for m in track.split(",") if m.strip()), every=track_every,
            samples=track_samples))
    execution = Execution(device=device, data_dir=data_dir, ensemble=ensemble, progress=not quiet,
                          download=download, amp=amp, compile=compile_,
                          keep_resume_state=not drop_resume_state,
                          **({} if checkpoint_every is None else
                             {"checkpoint_every": checkpoint_every}))
    # torch comes in only now: a mistyped option is answered before its seconds of import
    from landscape.distributed import current
    from landscape.training.grid import expand
    from landscape.training.planner import train as train_runs

    configs = expand(base, levels, seed_list, data_seed=data_seed, **axes)
    result = train_runs(configs, out=Path(out), execution=execution, resume=resume,
                        overwrite=overwrite, name=name)
    speaker = current().rank == 0  # under torchrun, rank 0 reports for all ranks
    if speaker:
        report_training(result)
    if result.diverged:
        if speaker:
            click.echo(f"landscape: {len(result.diverged)} run(s) diverged (NaN/inf loss): "
                       f"{', '.join(map(str, result.diverged[:3]))}", err=True)
        end(1, together=True)  # every rank knows every run's status, so all of them are here


def report_training(result) -> None:
    from landscape.runs.inspect import status_text, tracking_text
    from landscape.runs.store import Run

    if result.folder is not None:
        counts = {s: result.statuses.count(s) for s in dict.fromkeys(result.statuses)}
        click.echo(f"sweep of {len(result.paths)} runs in {result.folder}/ ("
                   + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
        if len(result.paths) > 12:
            return
    for path, status in zip(result.paths, result.statuses):
        run = Run(path)
        last = {k: v[-1] for k, v in run.metrics().items()}
        click.echo(f"{path}: {status_text(run) if status != 'skipped' else 'skipped (finished)'}, "
                   f"train loss {last['train_loss']:.4f}, train acc {last['train_acc']:.4f}, "
                   f"test acc {last['test_acc']:.4f}")
        if status != "skipped" and run.config.track is not None:
            click.echo(f"  tracked {tracking_text(run)}")


