"""The analyses on a user's own model and checkpoint files (usermodel.UserCheckpoints: --model,
--weights, --data) instead of run files: the same measurements (measures: slices.evaluate_points,
gradients.amplitudes, theorem1.check_panels; analysis.sharpness.measure_states) and the same result files and
figures, with the checkpoint files recorded where a run's name would be.

A trajectory is the checkpoint files in natural order; a file's epoch is the last number in its
name (usermodel.epochs_of). There is no flood level or early-stopping epoch to know: the figures
mark no early-stopping epoch, draw the checkpoints as "x" (neither the paper's "o" with flooding
nor its "+" without) and show every epoch unless told to leave some out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from landscape.analysis.flatness import check_grid_fits, slice_models
from landscape.analysis.generalization import Loaded, Subject
from landscape.analysis.gradnorm import KIND as GRADNORM
from landscape.analysis.mse import KIND as MSE
from landscape.analysis.mse import check_fits, write_check
from landscape.analysis.sharpness import KIND as SHARPNESS
from landscape.analysis.sharpness import measure_states
from landscape.analysis.sliced import SlicedModel
from landscape.analysis.usermodel import UserCheckpoints, load_state, number_in_name
from landscape.errors import BadInput
from landscape.files import digest
from landscape.measures.evaluation import sample_losses
from landscape.measures.gradients import amplitudes
from landscape.measures.model import check_data
from landscape.measures.options import Normalization, SharpnessOptions, SliceOptions
from landscape.measures.sources import Source, as_sources
from landscape.measures.theorem1 import GRID_POINTS, check_panels
from landscape.memory import rows_of
from landscape.progress import progress_bar
from landscape.results import reuse_result, write_result


def _placed(ck: UserCheckpoints, device: torch.device) -> tuple[torch.nn.Module, dict[str, Source]]:
    """The model on `device` and the data splits as sources, checked to fit each other (bad
    input naming the mismatch, before any work)."""
    model = ck.model.to(device).eval()
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    sources = as_sources(ck.data, device=device, dtype=dtype)
    check_data(model, model.state_dict(), sources, ck.loss)
    return model, sources


def _need(sources: dict[str, Source], splits: Sequence[str], what: str) -> None:
    absent = [s for s in splits if s not in sources]
    if absent:
        raise BadInput(f"{what} needs the {' and '.join(absent)} split: make the --data factory "
                       "return {'train': ..., 'test': ...}")


def _per_trajectory(ck: UserCheckpoints, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-run arrays the gradnorm and sharpness figures read, for one trajectory."""
    label = ck.files[0].name if len(ck.files) == 1 else f"{ck.name} ({len(ck.files)} checkpoints)"
    return {**values, "epoch": np.asarray(ck.epochs, dtype=np.int64),
            "run": np.zeros(len(ck.files), dtype=np.int64), "run_name": np.array([ck.name]),
            "label": np.array([label]), "flood": np.array([np.nan]),
            "flooded": np.array([False]), "early_stopping_epoch": np.array([-1]),
            "marked_epoch": np.array([-1])}


def _source_attrs(ck: UserCheckpoints, identity: dict) -> dict:
    return {**identity, "epochs": ck.epochs, "model_mode": "eval", "identity": identity}


def checkpoint_gradnorm(ck: UserCheckpoints, out: str | Path, *, device: torch.device,
                        normalization: Normalization = Normalization(),
                        splits: Sequence[str] = ("train", "test"), progress: bool = True,
                        overwrite: bool = False) -> Path:
    """Gradient amplitudes (paper Sec. 5.2) at every checkpoint, as `landscape gradnorm`."""
    identity = {**ck.identity(), **normalization.attrs(), "splits": list(splits)}
    if reuse_result(out, GRADNORM, identity, overwrite=overwrite):
        return Path(out)
    model, sources = _placed(ck, device)
    _need(sources, ("train", "test"), "gradnorm")
    parts = []
    with progress_bar(range(len(ck.files)), enabled=progress, label=ck.name) as bar:
        for i in bar:  # one checkpoint in memory at a time
            state = {k: v.to(device) for k, v in ck.state(i).items()}
            parts.append(amplitudes(model, [state], {s: sources[s] for s in ("train", "test")},
                                    ck.loss, normalization, splits=splits))
    values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    attrs = {**normalization.attrs(), "splits": list(splits), **_source_attrs(ck, identity)}
    return write_result(out, kind=GRADNORM, attrs=attrs, arrays=_per_trajectory(ck, values))


def checkpoint_sharpness(ck: UserCheckpoints, out: str | Path,
                         options: SharpnessOptions = SharpnessOptions(), *,
                         device: torch.device, progress: bool = True,
                         overwrite: bool = False) -> Path:
    """Top Hessian eigenvalue, trace and average-case sharpness at every checkpoint, with the
    test loss and accuracy there, as `landscape sharpness`."""
    identity = {**ck.identity(), **options.attrs()}
    if reuse_result(out, SHARPNESS, identity, overwrite=overwrite):
        return Path(out)
    model, sources = _placed(ck, device)
    _need(sources, (options.split, "test"), "sharpness")
    parts = []
    with progress_bar(range(len(ck.files)), enabled=progress, label=ck.name) as bar:
        for i in bar:  # each checkpoint read once: its measures, then its test loss and accuracy
            state = {k: v.to(device) for k, v in ck.state(i).items()}
            part = measure_states(model, [lambda: state], sources[options.split], ck.loss,
                                  options, model_config=None, progress=False)
            tested = amplitudes(model, [state], {"test": sources["test"]}, ck.loss,
                                options.normalization, splits=())
            parts.append({**part, "test_loss": tested["test_loss"],
                          "test_acc": tested["test_acc"]})
    values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    attrs = {**options.attrs(), **_source_attrs(ck, identity), "objectives": ["checkpoints"]}
    return write_result(out, kind=SHARPNESS, attrs=attrs, arrays=_per_trajectory(ck, values))


def checkpoint_flatness(ck: UserCheckpoints, options: SliceOptions, out: str | Path, *,
                        device: torch.device, overwrite: bool = False,
                        progress: bool = True) -> list[Path]:
    """A slice (or surface) of every checkpoint, one result file each (OUT/<file>.slice.h5), as
    `landscape flatness`: every data split given is evaluated."""
    check_grid_fits(options, len(ck.files))
    model, sources = _placed(ck, device)
    if options.bn_stats == "recompute":
        _need(sources, ("train",), "--bn-stats recompute")
    stems = [f.stem for f in ck.files]
    names = stems if len(set(stems)) == len(stems) else [f"{i:04d}-{s}" for i, s in
                                                         enumerate(stems)]
    models = []
    trajectory = [lambda i=i: {k: v.to(device) for k, v in ck.state(i).items()}
                  for i in range(len(ck.files))]
    chosen = range(len(ck.files))
    if options.direction == "pca":  # the plane of the whole path, around its last point
        chosen = [len(ck.files) - 1]
    for i in chosen:
        f, name = ck.files[i], names[i]
        attrs = {"run": str(f.resolve()), "label": f.name, "weights_digest": digest(f),
                 "which": "last", "role": "model", "epoch": ck.epochs[i], "step": -1,
                 "model_mode": "eval", **ck.specs}  # a file of another model, data or loss
                                                     # is refused, not resumed
        state = {k: v.to(device) for k, v in ck.state(i).items()}
        models.append(SlicedModel(name, attrs, model, state, sources, ck.loss,
                            trajectory=trajectory[:i + 1], trajectory_epochs=ck.epochs[:i + 1]))
    return slice_models(models, options, out, overwrite=overwrite, progress=progress)


def checkpoint_mse(ck: UserCheckpoints, out: str | Path, *, sample_size: int | None, samples: int,
                   flood_grid: Sequence[float], seed: int, device: torch.device,
                   progress: bool = True, overwrite: bool = False) -> Path:
    """Theorem 1 (paper Sec. 5.4) on one checkpoint: R on the test split (the pool), R^ on index
    draws from it and from the training split, as `landscape mse`."""
    if len(ck.files) != 1:
        raise BadInput(f"mse checks one model; --weights names {len(ck.files)} files")
    identity = {**ck.identity(), "samples": samples, "sample_size": sample_size,
                "flood_grid": list(flood_grid), "draw_seed": seed}
    if reuse_result(out, MSE, identity, overwrite=overwrite):
        return Path(out)
    check_fits(samples, len(flood_grid) or GRID_POINTS, device=device)
    model, sources = _placed(ck, device)
    _need(sources, ("train", "test"), "mse")
    state = {k: v.to(device) for k, v in ck.state(0).items()}
    pool, train = (sample_losses(model, state, sources[s], ck.loss, rows_of(model, sources[s], 1,
                                                                              device),
                                 progress=progress and s == "test", label=f"{s} losses")
                   for s in ("test", "train"))
    size = sample_size or len(train)
    check = check_panels(pool, train, sample_size=size, samples=samples, flood_grid=flood_grid,
                         seed=seed, progress=progress)
    epoch = number_in_name(ck.files[0])  # final.pt has none: the report then names no epoch
    attrs = {**({} if epoch is None else {"epoch": str(epoch)}), "samples": samples,
             "sample_size": size,
             "draw_seed": seed, "run": str(ck.files[0]),
             "config_digest": identity["weights_digests"][0],
             "pool": f"the test split of the data factory ({len(pool)} points)",
             "pool_points": len(pool), "train_points": len(train),
             "loss": ck.specs["loss"], "identity": identity}
    return write_check(out, check, attrs)


HYPERPARAMETER_TABLE = ("checkpoint", "seed", "train_error", "test_error")  # required columns


def checkpoint_subjects(ck: UserCheckpoints, table: str | Path) -> list[Subject]:
    """The rows of `landscape generalization` for a user's checkpoints: one per checkpoint file,
    its hyperparameters and outcomes read from the CSV `table` (one row per file). Columns:
    checkpoint (the file's name, or its path relative to the CSV's folder), seed, train_error,
    test_error (on the labels trained with: the gap is their difference); optional train_loss,
    test_loss (the second target) and init (the initial weights' file, for the distance
    measures); every other column is a hyperparameter axis (numbers, or text such as an
    optimizer's name)."""
    import csv

    table = Path(table)
    _need(ck.data, ("train",), "generalization")
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadInput(f"--hyperparameters: {table}: {err}") from None
    columns = list(rows[0]) if rows else []
    missing = [c for c in HYPERPARAMETER_TABLE if c not in columns]
    if missing:
        raise BadInput(f"--hyperparameters: {table} has no column {missing[0]!r} (it needs "
                       f"{', '.join(HYPERPARAMETER_TABLE)}, one row per checkpoint file)")
    by_file = {}
    for number, row in enumerate(rows, 2):
        path = Path(row["checkpoint"])
        matches = [f for f in ck.files if f.name == row["checkpoint"]
                   or (table.parent / path).resolve() == f.resolve()]
        if len(matches) != 1:
            raise BadInput(f"--hyperparameters: {table} line {number}: checkpoint "
                           f"{row['checkpoint']!r} names {len(matches)} of the --weights files")
        if matches[0] in by_file:
            raise BadInput(f"--hyperparameters: {table} names {matches[0]} twice")
        by_file[matches[0]] = row
    absent = [f for f in ck.files if f not in by_file]
    if absent:
        raise BadInput(f"--hyperparameters: {table} has no row for {absent[0]}")
    known = set(HYPERPARAMETER_TABLE) | {"train_loss", "test_loss", "init"}
    axes = [c for c in columns if c not in known]

    def number(row: dict, column: str, *, required: bool = True) -> float:
        value = (row.get(column) or "").strip()
        if not value and not required:
            return float("nan")
        try:
            return float(value)
        except ValueError:
            raise BadInput(f"--hyperparameters: {table}: {column} of {row['checkpoint']} is "
                           f"{value!r}, not a number") from None

    def axis(value: str) -> float | str:
        try:
            return float(value)
        except ValueError:
            return value.strip()

    has_init = "init" in columns and all((r.get("init") or "").strip() for r in rows)
    subjects = []
    for i, f in enumerate(ck.files):
        row = by_file[f]
        init = (table.parent / row["init"].strip()) if has_init else None
        if init is not None:
            load_state(init, ck.model)  # refused now, not after hours of measuring

        def load(device: torch.device, i=i, init=init) -> Loaded:
            state = {k: v.to(device) for k, v in ck.state(i).items()}
            start = None if init is None else {k: v.to(device)
                                               for k, v in load_state(init, ck.model).items()}
            return ck.model, state, start, ck.data["train"], ck.loss

        seed = number(row, "seed")
        subjects.append(Subject(
            f.name, "checkpoint", ck.epochs[i],
            {**{a: axis(row[a]) for a in axes}, "seed": seed},
            {"train_error": number(row, "train_error"), "test_error": number(row, "test_error"),
             "train_loss": number(row, "train_loss", required=False),
             "test_loss": number(row, "test_loss", required=False)}, load, has_init=has_init))
    return subjects


def checkpoint_identity(ck: UserCheckpoints, table: str | Path) -> dict:
    """What a generalization result of these checkpoints depends on: them and the table."""
    return {**ck.identity(), "hyperparameters": str(Path(table).resolve()),
            "hyperparameters_digest": digest(Path(table))}
