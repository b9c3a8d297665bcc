"""The training loop: one flat function over a group of runs that share architecture and schedule.

A group is one model (a single run) or several sweep members stacked as an `Ensemble`, each with its
own flood level, initialization seed, batch order and draw of the data. Per epoch, from epoch 0 (the
untrained model), every member's metrics are measured and committed to its run file (store.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import RunConfig
from .data.augment import random_crop_flip
from .device import autocast, channels_last
from .ensemble import (Ensemble, MemberData, load_optimizer_states,
                       optimizer_state_of)
from .evaluation import rows_for, split_metrics
from .flooding import flooded_objective, per_sample_loss
from .models import build_model, output_units
from .progress import progress_bar
from .schedule import AdaptiveRule, LevelState, update
from .store import RunWriter

# Per split: loss and accuracy on the labels used (noisy where noise was added), on the clean
# labels, and accuracy on the flipped points against their noisy labels (memorization).
SPLIT_METRICS = ("loss", "acc", "loss_clean", "acc_clean", "acc_flipped")
# flood_level: the b an epoch trained with (the adaptive schedule's; AdaFlood: the mean level).
STEP_METRICS = ("batch_loss", "batch_objective", "ascent_fraction", "lr", "seconds", "flood_level")
METRIC_NAMES = tuple(f"{s}_{m}" for s in ("train", "val", "test") for m in SPLIT_METRICS) + STEP_METRICS


@dataclass
class Member:
    """One run of a group: its config, its open run file and where training starts."""

    config: RunConfig
    writer: RunWriter
    start_epoch: int = 0                 # last committed epoch (0 also when starting fresh)
    fresh: bool = True                   # epoch 0 still to be measured
    model_state: dict | None = None      # resume state; None: initialize from config.seed
    optim_state: dict | None = None
    best_val: float = -math.inf          # best validation accuracy so far (test policy "best")
    snapshot_taken: bool = False
    schedule: LevelState | None = None   # adaptive b: the state after start_epoch (None: fresh)
    levels: np.ndarray | None = None     # AdaFlood: each training sample's level [n_train]
    status: str = "running"
    pending_snapshot: tuple | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.writer.path


def epoch_generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu"
                    ) -> torch.Generator:
    """A generator determined by (seed, epoch, stream): batch order and augmentation need no saved
    RNG state to resume exactly."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


def make_optimizer(config: RunConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    o = config.optim
    kwargs = dict(lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "sgd":
        kwargs["momentum"] = o.momentum
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.SGD
    try:  # fused kernels are faster where the build has them (benchmarks/RESULTS.md)
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def measure(ensemble: Ensemble, data: MemberData, config: RunConfig, chunk: int,
            want_test: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Metrics of every split: name -> [K] (CPU, float64). The test split is measured only for the
    members `want_test(val_acc)` [K] selects; NaN for the others."""
    out: dict[str, torch.Tensor] = {}
    for split in ("train", "val"):
        for m, v in split_metrics(ensemble, data, split, config.objective.loss, chunk).items():
            out[f"{split}_{m}"] = v.cpu()
    need = want_test(out["val_acc"])
    # Only the members that need it: in a stacked sweep the test set (20,000 points for the
    # synthetic sets) costs ~100 training steps, and members reach new bests at different epochs.
    members = None if need.all() else need.nonzero().flatten().to(data.which.device)
    test = (split_metrics(ensemble, data, "test", config.objective.loss, chunk, members)
            if bool(need.any()) else {})
    for m in SPLIT_METRICS:
        out[f"test_{m}"] = torch.full(need.shape, math.nan, dtype=torch.float64)
        if test:
            out[f"test_{m}"][need] = test[m].cpu()
    return out


def train_group(members: list[Member], data: MemberData, *, device: torch.device,
                progress: bool = True, label: str = "", amp: str = "off",
                compile: bool = False, checkpoint_every: float = 0.0) -> list[str]:
    """Train the members (same architecture, optimizer and schedule; each its own flood level,
    seed and data draw) to their last epoch. `amp` and `compile` are Execution's GPU switches;
    the resume state is written at most every `checkpoint_every` seconds (and at saved and final
    epochs; 0: every epoch), metrics every epoch.

    Returns each member's final status: "complete" or "diverged".
    """
    # -- setup ----------------------------------------------------------------------------------
    config = members[0].config
    epochs, batch_size = config.optim.epochs, config.optim.batch_size
    dtype = getattr(torch, config.dtype)
    out_units = output_units(data.num_classes, config.objective.loss)
    template = build_model(config.model, data.input_shape, out_units)
    states = [m.model_state or build_model(config.model, data.input_shape, out_units,
                                           seed=m.config.seed).state_dict() for m in members]
    ensemble = Ensemble(template, states, device=device, dtype=dtype)
    optimizer = make_optimizer(config, list(ensemble.params.values()))
    if members[0].optim_state:
        load_optimizer_states(optimizer, ensemble, [m.optim_state for m in members])
    K = len(members)
    rule = AdaptiveRule.of(config.objective)  # the same for the group (sweep.group_key)
    if rule is not None:
        for m in members:
            m.schedule = m.schedule or LevelState(m.config.objective.flood)
    b = torch.tensor([m.schedule.level if m.schedule else m.config.objective.flood
                      for m in members], device=device, dtype=dtype)
    theta = (torch.as_tensor(np.stack([m.levels for m in members])).to(device=device, dtype=dtype)
             if config.objective.kind == "adaflood" else None)             # [K, n_train]
    chunk = rows_for(template, data.input_shape, K, device)
    n_train = data.size("train")
    steps = math.ceil(n_train / batch_size)
    save_epochs = set(config.save_epochs)
    start = members[0].start_epoch
    # Speed settings, applied once (README: Speed). The compiled forward shares the
    # ensemble's tensors, so run files keep the plain state dict.
    precision = autocast(device, amp)
    train_forward = torch.compile(ensemble.forward, dynamic=False) if compile else ensemble.forward
    nhwc = device.type == "cuda" and K == 1 and len(data.input_shape) == 3

    def flood_level() -> torch.Tensor:
        """[K] float64: each member's b in the epoch now training (AdaFlood: its mean level)."""
        if theta is not None:
            return theta.mean(-1).double().cpu()
        return torch.tensor([m.schedule.level if m.schedule else m.config.objective.flood
                             for m in members], dtype=torch.float64)

    every_epoch = checkpoint_every == 0 or any(m.writer.checkpoints_every_epoch for m in members)
    last_checkpoint = [time.monotonic()]

    def commit(epoch: int, metrics: dict[str, torch.Tensor]) -> None:
        # The whole group checkpoints together, so that a resume finds its members at one epoch.
        due = (every_epoch or epoch in save_epochs or epoch == epochs
               or time.monotonic() - last_checkpoint[0] >= checkpoint_every)
        if due:
            last_checkpoint[0] = time.monotonic()
        for k, m in enumerate(members):
            if m.status != "running":
                continue
            row = {name: float(v[k]) for name, v in metrics.items()}
            m.writer.write_epoch(epoch, row,
                                 model_state=(ensemble.member_state(k)
                                              if due or epoch in save_epochs else None),
                                 optim_state=optimizer_state_of(optimizer, ensemble, k)
                                 if due else None,
                                 snapshot=m.pending_snapshot)
            if m.pending_snapshot is not None:
                m.snapshot_taken, m.pending_snapshot = True, None

    def test_wanted(epoch: int, val_acc: torch.Tensor) -> torch.Tensor:
        best = torch.tensor([m.best_val for m in members], dtype=torch.float64)
        improved = val_acc > best
        for k, m in enumerate(members):
            m.best_val = max(m.best_val, float(val_acc[k]))
        if config.eval_test == "every" or epoch in save_epochs or epoch == epochs:
            return torch.ones(K, dtype=torch.bool)
        return improved

    # -- epoch 0: the untrained model -----------------------------------------------------------
    if members[0].fresh:
        nan = torch.full((K,), math.nan, dtype=torch.float64)
        with precision:
            metrics = measure(ensemble, data, config, chunk, lambda val: test_wanted(0, val))
        metrics.update(batch_loss=nan, batch_objective=nan, ascent_fraction=nan, seconds=nan,
                       lr=torch.full((K,), config.optim.lr_at(1), dtype=torch.float64),
                       flood_level=flood_level())
        commit(0, metrics)

    # -- epochs ---------------------------------------------------------------------------------
    bar = progress_bar(range(start + 1, epochs + 1), enabled=progress, label=label)
    with bar as epoch_iter:
        for epoch in epoch_iter:
            tic = time.perf_counter()
            lr = config.optim.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ensemble.train(True)
            orders = batch_orders(members, epoch, n_train, device)     # [K, n]
            aug_gens = ([epoch_generator(m.config.seed, epoch, 2, device) for m in members]
                        if config.augment else None)
            loss_sum = torch.zeros(K, device=device, dtype=dtype)
            objective_sum = torch.zeros_like(loss_sum)
            ascent_sum = torch.zeros_like(loss_sum)
            # While an adaptive level is 0 nothing can fall below it: no per-step check then.
            pending = torch.tensor([m.config.objective.takes_snapshot and not m.snapshot_taken
                                    and m.pending_snapshot is None and level > 0
                                    for m, level in zip(members, flood_level().tolist())])
            for step in range(steps):
                idx = orders[:, step * batch_size:(step + 1) * batch_size]  # [K, B]
                xb, yb = data.batch(idx)                    # stored form [K, B, ...], [K, B]
                if aug_gens is not None:
                    xb = torch.stack([random_crop_flip(xb[k], g) for k, g in enumerate(aug_gens)])
                xb = data.prepare(xb)                                  # model input
                if nhwc:
                    xb = channels_last(xb)
                with precision:  # bf16 logits under --amp: losses in the run's dtype
                    logits = train_forward(xb, shared=False).to(dtype)  # [K, B, C]
                losses = per_sample_loss(logits, yb, config.objective.loss)  # [K, B]
                batch_loss = losses.mean(-1).detach()
                level = b if theta is None else theta.gather(1, idx)   # [K] or AdaFlood's [K, B]
                objective = flooded_objective(losses, level, config.objective.kind)
                if pending.any():
                    below = (batch_loss < b).cpu() & pending
                    for k in below.nonzero().flatten().tolist():
                        global_step = (epoch - 1) * steps + step + 1
                        members[k].pending_snapshot = (global_step, epoch, float(batch_loss[k]),
                                                       ensemble.member_state(k, clone=True))
                        pending[k] = False
                optimizer.zero_grad(set_to_none=True)
                objective.sum().backward()
                optimizer.step()
                loss_sum += batch_loss
                objective_sum += objective.detach()
                if config.objective.kind != "flood":  # share of samples on the ascent side
                    per_sample = level if theta is not None else b[:, None]
                    ascent_sum += (losses.detach() < per_sample).to(dtype).mean(-1)
                else:
                    ascent_sum += (batch_loss < b).to(dtype)
            metrics = {"batch_loss": loss_sum / steps, "batch_objective": objective_sum / steps,
                       "ascent_fraction": ascent_sum / steps}
            metrics = {k: v.double().cpu() for k, v in metrics.items()}
            with precision:
                metrics.update(measure(ensemble, data, config, chunk,
                                       lambda val: test_wanted(epoch, val)))
            metrics["lr"] = torch.full((K,), lr, dtype=torch.float64)
            metrics["seconds"] = torch.full((K,), time.perf_counter() - tic, dtype=torch.float64)
            metrics["flood_level"] = flood_level()
            if rule is not None:  # the level of the next epoch (schedule.py)
                for k, m in enumerate(members):
                    m.schedule = update(m.schedule, rule, train_acc=float(metrics["train_acc"][k]),
                                        val_acc=float(metrics["val_acc"][k]))
                    b[k] = m.schedule.level
            diverged = ~torch.isfinite(metrics["batch_loss"]) | ~torch.isfinite(metrics["train_loss"])
            for k in diverged.nonzero().flatten().tolist():
                m = members[k]
                if m.status == "running":
                    m.writer.write_metrics(epoch, {n: float(v[k]) for n, v in metrics.items()})
                    m.writer.set_status("diverged")
                    m.status = "diverged"
            commit(epoch, metrics)
            if all(m.status != "running" for m in members):
                break
    for m in members:
        if m.status == "running":
            m.writer.set_status("complete")
            m.status = "complete"
    return [m.status for m in members]


def batch_orders(members: list[Member], epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """Each member's permutation of the training set for `epoch`: [K, n], from its own seed."""
    by_seed: dict[int, torch.Tensor] = {}
    for m in members:
        if m.config.seed not in by_seed:
            by_seed[m.config.seed] = torch.randperm(n, generator=epoch_generator(m.config.seed,
                                                                                 epoch, 1))
    return torch.stack([by_seed[m.config.seed] for m in members]).to(device)
