"""Human-readable summaries of run files and sweeps (`landscape info`, `landscape demo`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np

from landscape.runs.folders import find_runs
from landscape.runs.store import Run


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _last_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else math.nan


def describe_run(run: Run) -> str:
    c = run.config
    m = run.metrics()
    snap = run.snapshot()
    size = run.path.stat().st_size / 2**20
    lines = [
        f"{run.path}  ({size:.1f} MiB on disk)",
        f"  status        {status_text(run)}",
        f"  data          {c.data.name}, noise {c.data.noise:g}, seed {c.data.seed}, "
        f"n = {c.data.n_train}/{c.data.n_val}/{c.data.n_test}" if c.data.n_train else
        f"  data          {c.data.name}, noise {c.data.noise:g}, seed {c.data.seed}",
        f"  model         {c.model.name}" + (f" {c.model.depth} x {c.model.width}"
                                              if c.model.depth is not None else ""),
        f"  objective     {_objective_text(c.objective)}, {c.objective.loss} loss",
        f"  optimizer     {c.optim.name}, lr {c.optim.lr:g}, batch {c.optim.batch_size}, "
        f"momentum {c.optim.momentum:g}, weight decay {c.optim.weight_decay:g}"
        + (f", milestones {list(c.optim.milestones)}" if c.optim.milestones else ""),
        f"  seed          {c.seed}; {c.dtype}; test evaluated: {c.eval_test}",
        f"  saved epochs  {_epochs_text(run.saved_epochs)}",
        *([f"  tracked       {tracking_text(run)}"] if run.config.track else []),
        "  snapshot      " + (f"step {snap.step} (epoch {snap.epoch}), mini-batch loss "
                              f"{snap.batch_loss:.4f} < b" if snap else
                              ("not yet" if c.objective.takes_snapshot else "none (b = 0)")),
        f"  device        {run.device}; torch {run.versions.get('torch', '?')}, "
        f"landscape {run.versions.get('landscape', '?')}",
    ]
    if run.epochs_done >= 0:
        lines.append(f"  last epoch    train loss {_fmt(m['train_loss'][-1])}, train acc "
                     f"{_fmt(m['train_acc'][-1])}, val acc {_fmt(m['val_acc'][-1])}, test acc "
                     f"{_fmt(_last_finite(m['test_acc']))} (clean {_fmt(_last_finite(m['test_acc_clean']))})")
        best = int(np.nanargmax(m["val_acc"]))
        lines.append(f"  best val acc  {_fmt(m['val_acc'][best])} at epoch {best}, test acc there "
                     f"{_fmt(m['test_acc'][best])}")
    return "\n".join(lines)


def tracking_text(run: Run) -> str | None:
    """What the run tracked while training and what it cost: the time its measurements took as
    a share of the time of training and evaluation (`track_seconds` over `seconds`, epoch 0's
    measurement included); None for a run that tracked nothing."""
    track = run.config.track
    if track is None:
        return None
    m = run.metrics()
    spent, trained = np.nansum(m["track_seconds"]), np.nansum(m["seconds"])
    share = f"{spent / trained:.1%} of the training time" if trained > 0 else "no training yet"
    return (f"{', '.join(track.measures)} every {track.every} epoch(s) on {track.samples} "
            f"training rows: {spent:.3g} s, {share}")


def _objective_text(o) -> str:
    if o.kind == "adaflood":
        return f"adaflood, gamma {o.adaflood_gamma:g}, {o.adaflood_folds} folds"
    if o.schedule == "adaptive":
        return (f"{o.kind}, adaptive b from {o.flood:g} (step {o.schedule_step:g}, threshold "
                f"{o.schedule_threshold:g}, max {o.schedule_max:g})")
    return f"{o.kind}, b = {o.flood:g}"


def status_text(run: Run) -> str:
    if run.status == "diverged":
        return (f"diverged in epoch {run.epochs_done + 1} (NaN/inf loss); epochs 0-"
                f"{run.epochs_done} of {run.epochs} are valid")
    if run.status == "running" and not run.in_progress:
        return (f"unfinished, {_progress_text(run)} (not being written now: continue it with "
                "`landscape train ... --resume`)")
    return f"{run.status}, {_progress_text(run)}"


def _progress_text(run: Run) -> str:
    """How far training got: epochs_done is -1 until the initial weights (epoch 0) are
    recorded."""
    if run.epochs_done < 0:
        return f"not started, 0 of {run.epochs} epochs"
    return f"epoch {run.epochs_done} of {run.epochs}"


def status_word(run: Run) -> str:
    """The stored status, with "running" split into being trained now and stopped."""
    return "unfinished" if run.status == "running" and not run.in_progress else run.status


def _epochs_text(epochs: tuple[int, ...]) -> str:
    if len(epochs) <= 12:
        return ", ".join(map(str, epochs)) or "none"
    return f"{len(epochs)} epochs: {', '.join(map(str, epochs[:5]))}, ..., {epochs[-1]}"


def describe_paths(paths: Iterable[str | Path]) -> str:
    paths = list(paths)
    files = find_runs(paths)
    if len(files) == 1 and Path(paths[0]).is_file():
        return describe_run(Run(files[0]))
    header = f"{'run':<56} {'status':<10} {'epoch':>9} {'train loss':>10} {'test acc':>8}"
    rows = [header]
    for path in files:
        if not path.exists():  # listed by the index of a sweep whose files are being made
            rows.append(f"{path.stem:<56} {'not made yet':<10}")
            continue
        run = Run(path)
        m = run.metrics() if run.epochs_done >= 0 else None
        loss = _fmt(m["train_loss"][-1]) if m else "-"
        acc = _fmt(_last_finite(m["test_acc"])) if m else "-"
        done = max(run.epochs_done, 0)  # -1 before epoch 0 is recorded: none trained either way
        rows.append(f"{run.name:<56} {status_word(run):<10} {done:>4}/{run.epochs:<4} "
                    f"{loss:>10} {acc:>8}")
    return f"{len(files)} run files\n" + "\n".join(rows)


def demo_report(paths: Iterable[Path]) -> str:
    runs = [Run(p) for p in paths]
    metrics = [r.metrics() for r in runs]
    epochs = runs[0].epochs_done
    marks = sorted({0, 1, 5, 10, 25, 50, 100, 200, 300, 400, epochs} & set(range(epochs + 1)))
    names = [f"b = {r.config.objective.flood:g}" for r in runs]
    lines = ["Training loss on the (noisy) training set, epoch by epoch:",
             f"{'epoch':>6} " + " ".join(f"{n:>12}" for n in names)]
    for e in marks:
        lines.append(f"{e:>6} " + " ".join(f"{m['train_loss'][e]:>12.4f}" for m in metrics))
    lines.append("")
    for r, m in zip(runs, metrics):
        tail = m["train_loss"][-50:]
        lines.append(f"{r.path}: b = {r.config.objective.flood:g}, train loss over the last "
                     f"{len(tail)} epochs {tail.mean():.4f} (min {tail.min():.4f}, max "
                     f"{tail.max():.4f}), train acc {m['train_acc'][-1]:.3f}, test acc "
                     f"{_last_finite(m['test_acc']):.4f} (clean labels "
                     f"{_last_finite(m['test_acc_clean']):.4f})")
    lines.append("The flooded run's training loss floats around b; the plain one goes to ~0. "
                 "Inspect a run with: landscape info " + str(runs[-1].path))
    return "\n".join(lines)
