"""Training runs and sweeps: from configs to run files (the public `train` API behind the CLI).

A sweep is several runs differing in flood level, seed and the axes of grid.py. Its run files
live in one folder with an index (sweep.json); a single run is one file. Runs that differ only in
flood level, seed, data seed, learning rate and weight decay train together as stacked ensembles
(each member on its own data draw, at its own rate and decay: optimizer.py), in chunks whose size
the execution chooses within the device's memory (memory.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from landscape import data as data_module
from landscape import distributed
from landscape.config import RunConfig
from landscape.config.execution import Execution, requested_chunk
from landscape.device import describe, dtype_of, resolve_device
from landscape.errors import BadInput
from landscape.files import being_written, make_folder
from landscape.memory import auto_chunk_size, free_memory, member_bytes, memory_limit
from landscape.models import count_parameters, run_model
from landscape.progress import progress_bar
from landscape.runs.folders import write_sweep_index
from landscape.runs.maker import Maker, drop_resume_state, extend_run
from landscape.runs.store import Run, layout_of
from landscape.runs.writer import RunWriter, close_all
from landscape.training.adaflood import per_sample_arrays
from landscape.training.extension import extension_problem, only_longer, untested
from landscape.training.grid import plan_paths, varied_axes
from landscape.training.loop import METRIC_NAMES, Start, epochs
from landscape.training.members import MemberData, balanced_chunks, optimizer_layout
from landscape.training.recording import record
from landscape.training.schedule import resume_state
from landscape.training.tracking import Cost, metric_names


@dataclass(frozen=True)
class TrainResult:
    paths: tuple[Path, ...]
    statuses: tuple[str, ...]     # complete | diverged | skipped (already complete)
    folder: Path | None           # the sweep folder, None for a single run

    @property
    def diverged(self) -> tuple[Path, ...]:
        return tuple(p for p, s in zip(self.paths, self.statuses) if s == "diverged")


def _config_diff(a: RunConfig, b: RunConfig) -> str:
    """The fields that differ, as "model.width 100 -> 50" (a's value -> b's)."""
    fa, fb = a.fields(), b.fields()
    return ", ".join(f"{k} {fa.get(k)} -> {fb.get(k)}"
                     for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k))


def _existing(path: Path, config: RunConfig, *, resume: bool, overwrite: bool) -> str:
    """What to do with a run path: "fresh", "resume", "extend" (resume with more epochs than the
    file was made for) or "skip"; bad input if it can't be decided."""
    if path.exists() and being_written(path):
        raise BadInput(f"{path} is being written by another process (a run in progress); wait "
                       "for it to finish, or give this one another --out")
    if not path.exists() or overwrite:
        return "fresh"
    run = Run(path)
    # Run file names leave out most settings (the width, the epochs...): another run of the same
    # name is told apart, field by field.
    longer = only_longer(run.config, config) and config.optim.epochs > run.epochs
    if run.config != config and not longer:
        raise BadInput(f"{path} holds a different run ({_config_diff(run.config, config)}, the "
                       "file's -> asked); give this one its own --name or another --out, or "
                       "pass --overwrite to replace it")
    if longer and run.status != "diverged":
        return _extension(path, run, config, resume=resume)
    if run.status == "complete":
        if resume:
            return "skip"
        raise BadInput(f"{path} is a finished run; pass --resume to keep it (finished runs are "
                       "skipped) or --overwrite to retrain it")
    if run.status == "diverged":
        raise BadInput(f"{path} diverged at epoch {run.epochs_done + 1}; pass --overwrite to "
                       "retrain it")
    if not resume:
        raise BadInput(f"{path} is an unfinished run (epoch {max(run.epochs_done, 0)} of "
                       f"{run.epochs}); pass --resume to continue it or --overwrite to start over")
    return "resume"


def _extension(path: Path, run: Run, config: RunConfig, *, resume: bool) -> str:
    """"extend" where `run` can continue to `config`'s larger number of epochs, and is asked to;
    bad input saying why not otherwise."""
    problem = extension_problem(run, config)
    if problem is not None:
        raise BadInput(f"{path} holds this run with {run.epochs} epochs and cannot be continued "
                       f"to {config.optim.epochs}: {problem}; pass --overwrite to retrain it, or "
                       "give this one another --name or --out")
    if not resume:
        raise BadInput(f"{path} holds this run with {run.epochs} epochs; pass --resume to "
                       f"continue it to {config.optim.epochs}, or --overwrite to retrain it")
    return "extend"


def _starts(path: Path, action: str) -> tuple[int, ...]:
    """The checkpointed epochs a run can continue from, latest last; (-1,) to start afresh (also
    when a file was made but killed before epoch 0 was committed)."""
    kept = Run(path).resume_epochs if action in ("resume", "extend") else ()
    # A run with only epoch 0 can also start afresh (to the same numbers), as a member that a kill
    # stopped before its epoch-0 commit must: the chunk then trains together, as it began.
    return (-1, *kept) if kept in ((), (0,)) else kept


def _common_starts(chunk: list[tuple[Path, RunConfig, str]]) -> list[list[tuple]]:
    """The chunk's members as (path, config, start) lists that train together. A kill between
    two members' commits of a checkpoint leaves them one checkpoint apart: all continue from the
    earlier one (the other slot still holds it), in the chunk they trained in, so that the
    resumed numbers are bit for bit those of an uninterrupted sweep. Other gaps (files of other
    sweeps' histories) train by their latest checkpoint."""
    kept = [_starts(p, a) for p, _, a in chunk]
    common = min(k[-1] for k in kept)
    if all(common in k for k in kept):
        return [[(p, c, common) for p, c, _ in chunk]]
    by_start: dict[int, list[tuple]] = {}
    for (p, c, _), k in zip(chunk, kept):
        by_start.setdefault(k[-1], []).append((p, c, k[-1]))
    return list(by_start.values())


def _start(path: Path, config: RunConfig, start: int) -> Start:
    """Where the member of `path` begins: after epoch `start` (its latest checkpoint, or the one
    before), or afresh for start -1."""
    adaflood = config.objective.kind == "adaflood"
    if start < 0 and not adaflood:
        return Start(config)
    run = Run(path)
    levels = run.data_array("flood_levels") if adaflood else None
    if start < 0:
        return Start(config, levels=levels)
    model_state, optim_state = run.resume_state(start)
    metrics = {k: v[:start + 1] for k, v in run.metrics().items()}
    val_acc = metrics["val_acc"]
    snapshot = run.snapshot()
    return Start(config, epoch=start, fresh=False,
                 model_state=model_state, optim_state=optim_state if start > 0 else None,
                 best_val=float(np.nanmax(val_acc)) if np.isfinite(val_acc).any() else -np.inf,
                 snapshot_taken=(snapshot is not None and snapshot.epoch <= start
                                 or not run.snapshot_slot),
                 levels=levels,
                 schedule=resume_state(config.objective, metrics))


def _train_part(part: list[tuple[Path, RunConfig, int]], data: MemberData, execution: Execution,
                device: torch.device, *, progress: bool, label: str) -> list[str]:
    """Train members that continue from one epoch together, writing their files; their statuses."""
    starts: list[Start] = []
    writers: list[RunWriter] = []
    try:
        for path, config, start in part:
            writers.append(RunWriter(path))  # its lock first: no other process writes it now
            starts.append(_start(path, config, start))
            writers[-1].resume_from(start)
        last = part[0][1].optim.epochs
        first = max(part[0][2], 0) + (0 if starts[0].fresh else 1)
        cost = Cost()
        with progress_bar(cost.watch(epochs(starts, data, device=device, amp=execution.amp,
                                            compile=execution.compile)),
                          enabled=progress, label=label, length=last + 1 - first,
                          show=cost.text if part[0][1].track is not None else None) as measured:
            return record(measured, writers, committed=part[0][2],
                          checkpoint_every=execution.checkpoint_every)
    finally:
        close_all(writers)


def chunk_size(requested: int | None, config: RunConfig, device: torch.device) -> int:
    """Members per stacked chunk: as requested (None: the auto rule), bounded by device memory."""
    size = auto_chunk_size(config.model, device) if requested is None else requested
    if size == 1:
        return 1
    shape = data_module.input_shape(config.data)
    model = run_model(config, shape, config.data.num_classes)
    dtype_bytes = dtype_of(config.dtype).itemsize
    per_member = member_bytes(config.model, count_parameters(model), shape,
                              config.optim.batch_size, dtype_bytes)
    return min(size, memory_limit(per_member, device, dtype_bytes))


def plan_chunks(items: list[tuple[Path, RunConfig, str]], requested: int | None,
                device: torch.device, ranks: int) -> list[list[tuple[Path, RunConfig, str]]]:
    """The stacked chunks of the sweep's unfinished runs: each group's runs, finished ones
    included, cut into balanced chunks (at most a rank's share of the group, so that every rank
    has work), less the finished runs. Every rank plans the same chunks, and a resume on as many
    ranks the chunks the sweep began with, so that its members stack as they did."""
    groups: dict[str, list[tuple[Path, RunConfig, str]]] = {}
    for item in items:
        groups.setdefault(group_key(item[1]), []).append(item)
    chunks = []
    for group in groups.values():
        size = min(chunk_size(requested, group[0][1], device), math.ceil(len(group) / ranks))
        for chunk in balanced_chunks(group, size):
            left = [item for item in chunk if item[2] != "skip"]
            if left:
                chunks.append(left)
    return chunks


def check_fits(config: RunConfig, device: torch.device) -> None:
    """Bad input, with the estimate, if one run cannot fit in the device's free memory: its data
    (synthetic sets are made in memory), one member's training and the file's metric rows."""
    shape = data_module.input_shape(config.data)
    dtype_bytes = dtype_of(config.dtype).itemsize
    with torch.device("meta"):  # counts parameters without allocating them
        n_params = count_parameters(run_model(config, shape, config.data.num_classes))
    rows = sum(n or 0 for n in (config.data.n_train, config.data.n_val, config.data.n_test))
    need = (rows * (math.prod(shape) * dtype_bytes + 16)  # inputs, noisy and clean labels
            + member_bytes(config.model, n_params, shape, config.optim.batch_size, dtype_bytes)
            + len(METRIC_NAMES) * 8 * (config.optim.epochs + 1))
    free = free_memory(device)
    if need > free:
        raise BadInput(f"{config.name} needs about {need / 2**30:.3g} GiB of memory ({n_params:,} "
                       f"parameters, {rows:,} data points, {config.optim.epochs:,} epochs) but "
                       f"{device} has {free / 2**30:.3g} GiB free; choose smaller sizes")


def group_key(config: RunConfig) -> str:
    """Runs with equal keys can train stacked: they differ at most in flood level, seeds,
    learning rate and weight decay (optimizer.MemberOptimizer steps each member at its own)."""
    return dataclasses.replace(
        config, seed=0, data=dataclasses.replace(config.data, seed=0),
        objective=dataclasses.replace(config.objective, flood=0.0),
        optim=dataclasses.replace(config.optim, lr=1.0, weight_decay=0.0)).to_json()


def train(configs: Sequence[RunConfig], *, out: str | Path = "checkpoints",
          execution: Execution = Execution(), resume: bool = False, overwrite: bool = False,
          name: str | None = None) -> TrainResult:
    """Train every config into its run file under `out` (see plan_paths) and return where they went.

    Existing files: a finished run is kept unless `overwrite`; an unfinished one is continued with
    `resume` (its config must match); with `resume`, finished runs are skipped, missing ones made.
    """
    if not configs:
        raise BadInput("nothing to train")
    if resume and overwrite:
        raise BadInput("--resume and --overwrite exclude each other")
    world = distributed.join()
    # Every rank plans the whole sweep from the files as they are, having read them all before any
    # rank writes; a failure here on one rank (bad input, a data set that won't load) stops all.
    with distributed.exchange(world):
        device = distributed.rank_device(resolve_device(execution.device), world)
        requested = requested_chunk(execution.ensemble)
        configs = [c.resolved(sweep=len(configs) > 1) for c in configs]
        for c in {group_key(c): c for c in configs}.values():
            check_fits(c, device)
        folder, paths = plan_paths(configs, Path(out), name)
        actions = [_existing(p, c, resume=resume, overwrite=overwrite)
                   for p, c in zip(paths, configs)]
        # This rank's runs: a share of the chunks with unfinished runs, whole chunks.
        chunks = distributed.share(plan_chunks(list(zip(paths, configs, actions)), requested,
                                               device, world.size), world)
        mine = [item for chunk in chunks for item in chunk]

        # Load every data set first: a missing or malformed file stops us before anything is
        # written. With --download, rank 0 fetches the files before the others read them.
        with distributed.rank_zero_first(world, when=execution.download):
            datasets = _load_data([c for _, c, _ in mine], execution, device)
    if folder is not None and world.rank == 0:
        make_folder(folder)
        write_sweep_index(folder, paths, grid={
            "flood": sorted({c.objective.flood for c in configs}),
            "seed": sorted({c.seed for c in configs}), **varied_axes(configs)})

    statuses = {p: "skipped" for p, a in zip(paths, actions) if a == "skip"}
    progress = execution.progress and world.rank == 0  # one bar: rank 0's
    # A rank whose work fails waits here for the others to finish theirs; then all report it.
    with distributed.exchange(world) as trained:
        _make_files(mine, execution, datasets, device, replace=overwrite)
        statuses.update(_train_chunks(chunks, datasets, execution, device, progress=progress))
        trained.value = statuses
    for part in trained.values:
        statuses.update(part)
    return TrainResult(tuple(paths), tuple(statuses[p] for p in paths), folder)


def _load_data(configs: Sequence[RunConfig], execution: Execution, device: torch.device
               ) -> dict[tuple, data_module.Dataset]:
    """Each (data, dtype) the configs train on, loaded once."""
    datasets: dict[tuple, data_module.Dataset] = {}
    for c in configs:
        key = (c.data, c.dtype)
        if key not in datasets:
            datasets[key] = data_module.load(c.data, device=device, dtype=dtype_of(c.dtype),
                                             data_dir=execution.data_dir,
                                             download=execution.download)
        rows = len(datasets[key].train)  # an image set's training rows are known only now
        if c.track is not None and c.track.samples > rows:
            raise BadInput(f"--track-samples must be at most the {rows} training rows of "
                           f"{c.data.name}, got {c.track.samples}")
    return datasets


def _make_files(items: Sequence[tuple[Path, RunConfig, str]], execution: Execution,
                datasets: dict[tuple, data_module.Dataset], device: torch.device, *,
                replace: bool) -> None:
    """The run files of the fresh runs among `items`, before any trains."""
    with Maker() as maker:
        for p, c, a in items:
            if a == "extend":  # the file made longer, then resumed
                extend_run(p, c, untested=untested(Run(p), c))
            elif a == "fresh":
                dataset = datasets[(c.data, c.dtype)]
                # AdaFlood's auxiliary phase: the levels its run file is made with.
                arrays = (per_sample_arrays(c, dataset, device=device,
                                            progress=execution.progress)
                          if c.objective.kind == "adaflood" else None)
                _create(maker, p, c, execution, dataset, device, arrays=arrays, replace=replace)


def _train_chunks(chunks: list[list[tuple[Path, RunConfig, str]]],
                  datasets: dict[tuple, data_module.Dataset], execution: Execution,
                  device: torch.device, *, progress: bool) -> dict[Path, str]:
    """Train the chunks one after another, each in parts that start at the same epoch; files
    stay open only while their chunk trains. Returns each run's status."""
    statuses = {}
    total, done = sum(len(c) for c in chunks), 0
    for chunk in chunks:
        for part in _common_starts(chunk):
            first = part[0][1]
            draws = list(dict.fromkeys(c.data for _, c, _ in part))
            data = MemberData([datasets[(d, first.dtype)] for d in draws],
                              [draws.index(c.data) for _, c, _ in part])
            label = first.name if total == 1 else f"runs {done + 1}-{done + len(part)} of {total}"
            for (p, _, _), status in zip(part, _train_part(part, data, execution, device,
                                                           progress=progress, label=label)):
                statuses[p] = status
                if status == "complete" and not execution.keep_resume_state:
                    drop_resume_state(p)
            done += len(part)
    return statuses


def _create(maker: Maker, path: Path, config: RunConfig, execution: Execution,
            dataset: data_module.Dataset, device: torch.device, *,
            arrays: dict[str, np.ndarray] | None, replace: bool) -> None:
    """Make the run file, with `arrays` under /data. Unless `replace`, another process that made
    it meanwhile (e.g. during AdaFlood's auxiliary training) makes this bad input instead of
    losing one of the two."""
    model = run_model(config, dataset.input_shape, dataset.num_classes)
    state = model.state_dict()
    params = {n: p.detach()[None] for n, p in model.named_parameters()}
    flipped = {s: dataset.split(s).flipped.nonzero().flatten().cpu().numpy()
               for s in ("train", "val", "test")}
    maker.create(path, config, execution, device=describe(device),
                 metric_names=METRIC_NAMES + metric_names(config),
                 model_layout=layout_of(state),
                 optim_layout={k: (shape, np.dtype(dt)) for k, (shape, dt) in optimizer_layout(
                     config.optim.name, config.optim.momentum, params).items()},
                 flipped=flipped, arrays=arrays, replace=replace)
