"""The training loop: a generator over the epochs of a group of runs that share architecture and
schedule. It does arithmetic only: it yields each epoch's metrics and snapshots, and accessors for
the members' state; what is written, and when, is recording.py's business.

A group is one model (a single run) or several sweep members stacked as an `Ensemble`, each with its
own flood level, initialization seed, batch order, draw of the data, learning rate and weight decay
(optimizer.py). From epoch 0 (the untrained model, unless the group resumes) every member's
metrics are measured after every epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from landscape.config import RunConfig
from landscape.data.augment import random_crop_flip
from landscape.device import autocast, channels_last, dtype_of
from landscape.flooding import flooded_objective, per_sample_loss, predictions
from landscape.measures.stack import Ensemble
from landscape.memory import rows_for
from landscape.models import run_model
from landscape.runs.store import Snapshot
from landscape.training.members import MemberData, load_optimizer_states, optimizer_state_of
from landscape.training.optimizer import MemberOptimizer, rates_at
from landscape.training.schedule import AdaptiveRule, LevelState, update
from landscape.training.tracking import Tracking

# Per split: loss and accuracy on the labels used (noisy where noise was added), on the clean
# labels, and accuracy on the flipped points against their noisy labels (memorization).
SPLIT_METRICS = ("loss", "acc", "loss_clean", "acc_clean", "acc_flipped")
# flood_level: the b an epoch trained with (the adaptive schedule's; AdaFlood: the mean level).
STEP_METRICS = ("batch_loss", "batch_objective", "ascent_fraction", "lr", "seconds", "flood_level")
METRIC_NAMES = tuple(f"{s}_{m}" for s in ("train", "val", "test") for m in SPLIT_METRICS) + STEP_METRICS


@dataclass(frozen=True)
class Start:
    """Where one member of a group begins: afresh from its config's seed, or after a checkpoint."""

    config: RunConfig
    epoch: int = 0                       # the checkpoint's epoch (0 also when starting fresh)
    fresh: bool = True                   # epoch 0 still to be measured
    model_state: dict | None = None      # None: initialize from config.seed
    optim_state: dict | None = None
    best_val: float = -math.inf          # best validation accuracy so far (test policy "best")
    snapshot_taken: bool = False
    schedule: LevelState | None = None   # adaptive b: the state after `epoch` (None: fresh)
    levels: np.ndarray | None = None     # AdaFlood: each training sample's level [n_train]


@dataclass(frozen=True)
class Epoch:
    """What the loop yields after measuring an epoch. `group`'s state accessors are valid until
    the loop resumes."""

    epoch: int
    metrics: dict[str, torch.Tensor]     # name -> [K] float64, on the CPU
    snapshots: dict[int, Snapshot]       # member -> its snapshot, if taken during this epoch
    diverged: torch.Tensor               # [K] bool: members whose loss turned non-finite now
    last: bool                           # the final epoch, or every member has diverged
    group: Group


def epoch_generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu"
                    ) -> torch.Generator:
    """A generator determined by (seed, epoch, stream): batch order and augmentation need no saved
    RNG state to resume exactly."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return g


def epochs(starts: list[Start], data: MemberData, *, device: torch.device, amp: str = "off",
           compile: bool = False) -> Iterator[Epoch]:
    """Train the members (same architecture, optimizer and schedule; each its own flood level,
    seed, data draw, learning rate and weight decay) to their last epoch, yielding every measured
    epoch. `amp` and `compile` are Execution's GPU switches. Diverged members train on (as NaN)
    until all have diverged."""
    group = Group(starts, data, device=device, amp=amp, compile=compile)
    last = group.config.optim.epochs
    alive = torch.ones(group.size, dtype=torch.bool)
    for epoch in range(starts[0].epoch + (0 if starts[0].fresh else 1), last + 1):
        tic = time.perf_counter()
        metrics, snapshots = group.train_epoch(epoch) if epoch > 0 else (group.untrained(), {})
        with group.precision:
            metrics.update(group.measure(epoch))
        metrics["seconds"] = torch.full((group.size,), math.nan if epoch == 0 else
                                        time.perf_counter() - tic, dtype=torch.float64)
        if group.rule is not None:  # the level of the next epoch (schedule.py)
            group.next_levels(metrics)
        finite = torch.isfinite(metrics["batch_loss"]) & torch.isfinite(metrics["train_loss"])
        diverged = alive & ~finite if epoch > 0 else torch.zeros_like(alive)
        alive &= ~diverged
        if group.tracking is not None:  # after `seconds`: its cost is reported against them
            metrics.update(group.tracking(epoch, group.ensemble, group.optimizer,
                                           group.stepper.ratio, alive))
        yield Epoch(epoch, metrics, snapshots, diverged, epoch == last or not alive.any(), group)
        if not alive.any():
            return


class Group:
    """The stacked members with their optimizer, flood levels and what each has seen so far."""

    def __init__(self, starts: list[Start], data: MemberData, *, device: torch.device,
                 amp: str, compile: bool) -> None:
        self.config = config = starts[0].config
        self.data, self.device, self.size = data, device, len(starts)
        self.dtype = dtype = dtype_of(config.dtype)
        template = run_model(config, data.input_shape, data.num_classes)
        states = [s.model_state or run_model(config, data.input_shape, data.num_classes,
                                               seed=s.config.seed).state_dict() for s in starts]
        self.ensemble = Ensemble(template, states, device=device, dtype=dtype)
        # Each member's learning rate and weight decay (a chunk may mix them: optimizer.py).
        self.stepper = MemberOptimizer([s.config.optim for s in starts],
                                     list(self.ensemble.params.values()))
        self.optimizer = self.stepper.optimizer
        if starts[0].optim_state:
            load_optimizer_states(self.optimizer, self.ensemble, [s.optim_state for s in starts])
        self.seeds = [s.config.seed for s in starts]
        self.rule = AdaptiveRule.of(config.objective)  # the same for the group (sweep.group_key)
        self.schedules = [s.schedule or LevelState(s.config.objective.flood) for s in starts
                          ] if self.rule is not None else None
        self.theta = (torch.as_tensor(np.stack([s.levels for s in starts])).to(device, dtype)
                      if config.objective.kind == "adaflood" else None)        # [K, n_train]
        self.save_epochs = set(config.save_epochs)
        self.floods = [s.config.objective.flood for s in starts]
        self.b = torch.tensor(self._levels(), device=device, dtype=dtype)  # [K]
        self.snapshot_wanted = torch.tensor([s.config.objective.takes_snapshot
                                             and not s.snapshot_taken for s in starts])
        self.best_val = torch.tensor([s.best_val for s in starts], dtype=torch.float64)
        self.chunk = rows_for(template, data.input_shape, self.size, device)
        # Speed settings, applied once (docs/guides/training.md: Speed). The compiled forward shares the
        # ensemble's tensors, so run files keep the plain state dict.
        self.precision = autocast(device, amp)
        self.forward = (torch.compile(self.ensemble.forward, dynamic=False) if compile
                        else self.ensemble.forward)
        self.nhwc = device.type == "cuda" and self.size == 1 and len(data.input_shape) == 3
        self.tracking = Tracking(config, data) if config.track is not None else None

    def member_state(self, k: int, *, clone: bool = False) -> dict[str, torch.Tensor]:
        return self.ensemble.member_state(k, clone=clone)

    def optim_state(self, k: int) -> dict[str, torch.Tensor]:
        return optimizer_state_of(self.optimizer, self.ensemble, k)

    def flood_level(self) -> torch.Tensor:
        """[K] float64: each member's b in the epoch now training (AdaFlood: its mean level), as
        given (not rounded to the run's dtype)."""
        if self.theta is not None:
            return self.theta.mean(-1).double().cpu()
        return torch.tensor(self._levels(), dtype=torch.float64)

    def _levels(self) -> list[float]:
        return self.floods if self.rule is None else [state.level for state in self.schedules]

    def untrained(self) -> dict[str, torch.Tensor]:
        """Epoch 0's step metrics: none trained yet, at the first epoch's rate and level."""
        nan = torch.full((self.size,), math.nan, dtype=torch.float64)
        return dict(batch_loss=nan, batch_objective=nan, ascent_fraction=nan,
                    lr=rates_at(self.stepper.optims, 1),
                    flood_level=self.flood_level())

    def train_epoch(self, epoch: int) -> tuple[dict[str, torch.Tensor], dict[int, Snapshot]]:
        """One epoch of mini-batch steps: its step metrics [K] and the snapshots it took."""
        config, data, K = self.config, self.data, self.size
        batch_size, n_train = config.optim.batch_size, data.size("train")
        steps = math.ceil(n_train / batch_size)
        rates = self.stepper.start_epoch(epoch)                            # [K]
        self.ensemble.train(True)
        orders = batch_orders(self.seeds, epoch, n_train, self.device)     # [K, n]
        aug_gens = ([epoch_generator(seed, epoch, 2, self.device) for seed in self.seeds]
                    if config.augment else None)
        sums = torch.zeros(3, K, device=self.device, dtype=self.dtype)  # loss, objective, ascent
        level_now = self.flood_level()
        # While an adaptive level is 0 nothing can fall below it: no per-step check then.
        pending = self.snapshot_wanted & (level_now > 0)
        snapshots: dict[int, Snapshot] = {}
        for step in range(steps):
            idx = orders[:, step * batch_size:(step + 1) * batch_size]  # [K, B]
            xb, yb = data.batch(idx)                    # stored form [K, B, ...], [K, B]
            if aug_gens is not None:
                xb = torch.stack([random_crop_flip(xb[k], g) for k, g in enumerate(aug_gens)])
            xb = data.prepare(xb)                                  # model input
            if self.nhwc:
                xb = channels_last(xb)
            with self.precision:  # bf16 logits under --amp: losses in the run's dtype
                logits = self.forward(xb, shared=False).to(self.dtype)  # [K, B, C]
            losses = per_sample_loss(logits, yb, config.objective.loss)  # [K, B]
            batch_loss = losses.mean(-1).detach()
            level = self.b if self.theta is None else self.theta.gather(1, idx)  # [K] or [K, B]
            objective = flooded_objective(losses, level, config.objective.kind)
            if pending.any():
                below = (batch_loss < self.b).cpu() & pending
                for k in below.nonzero().flatten().tolist():
                    # kept on the CPU until its commit (seconds later): not in device memory
                    state = {n: t.to("cpu", copy=True) for n, t in self.member_state(k).items()}
                    snapshots[k] = Snapshot((epoch - 1) * steps + step + 1, epoch,
                                            float(batch_loss[k]), state)
                pending &= ~below
                self.snapshot_wanted &= ~below
            self.optimizer.zero_grad(set_to_none=True)
            objective.sum().backward()
            self.stepper.step()
            sums[0] += batch_loss
            sums[1] += objective.detach()
            if config.objective.kind != "flood":  # share of samples on the ascent side
                per_sample = level if self.theta is not None else self.b[:, None]
                sums[2] += (losses.detach() < per_sample).to(self.dtype).mean(-1)
            else:
                sums[2] += (batch_loss < self.b).to(self.dtype)
        means = (sums / steps).double().cpu()
        return {"batch_loss": means[0], "batch_objective": means[1], "ascent_fraction": means[2],
                "lr": rates,
                "flood_level": level_now}, snapshots

    def measure(self, epoch: int) -> dict[str, torch.Tensor]:
        """Metrics of every split: name -> [K] (CPU, float64). The test split is measured at every
        epoch (policy "every"), at saved and final ones, and where a member's validation accuracy
        reaches a new best (only for those members); NaN where it is not."""
        config, data, loss = self.config, self.data, self.config.objective.loss
        out: dict[str, torch.Tensor] = {}
        for split in ("train", "val"):
            for m, v in split_metrics(self.ensemble, data, split, loss, self.chunk).items():
                out[f"{split}_{m}"] = v.cpu()
        improved = out["val_acc"] > self.best_val
        self.best_val = torch.fmax(self.best_val, out["val_acc"])  # a NaN is no best
        need = (torch.ones_like(improved) if config.eval_test == "every"
                or epoch in self.save_epochs or epoch == config.optim.epochs else improved)
        # Only the members that need it: in a stacked sweep the test set (20,000 points for the
        # synthetic sets) costs ~100 training steps, and members reach new bests at different epochs.
        members = None if need.all() else need.nonzero().flatten().to(data.which.device)
        test = (split_metrics(self.ensemble, data, "test", loss, self.chunk, members)
                if bool(need.any()) else {})
        for m in SPLIT_METRICS:
            out[f"test_{m}"] = torch.full(need.shape, math.nan, dtype=torch.float64)
            if test:
                out[f"test_{m}"][need] = test[m].cpu()
        return out

    def next_levels(self, metrics: dict[str, torch.Tensor]) -> None:
        """The adaptive rule after an epoch: each member's level for the next one."""
        for k, state in enumerate(self.schedules):
            self.schedules[k] = update(state, self.rule, train_acc=float(metrics["train_acc"][k]),
                                       val_acc=float(metrics["val_acc"][k]))
            self.b[k] = self.schedules[k].level


def batch_orders(seeds: list[int], epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """Each member's permutation of the training set for `epoch`: [K, n], from its own seed."""
    by_seed: dict[int, torch.Tensor] = {}
    for seed in seeds:
        if seed not in by_seed:
            by_seed[seed] = torch.randperm(n, generator=epoch_generator(seed, epoch, 1))
    return torch.stack([by_seed[seed] for seed in seeds]).to(device)


@torch.inference_mode()
def split_metrics(ensemble: Ensemble, data: MemberData, split: str, loss: str, chunk: int,
             members: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The trainer's per-epoch measure: every member's (or the indexed members') loss and
    accuracy on a whole split of its own data draw, on the labels trained with and the clean
    ones, and the accuracy on the flipped points, in chunks of rows: name -> [K] (or [K'])."""
    ensemble.train(False)
    n = data.size(split)
    totals = {m: 0.0 for m in ("loss", "acc", "loss_clean", "acc_clean", "hits_flipped")}
    for start in range(0, n, chunk):
        x, y, y_clean = data.rows(split, slice(start, start + chunk), members)  # y: [c] or [K, c]
        logits = ensemble.forward(x, shared=data.shared, members=members)      # [K, c, C]
        logits = logits.to(x.dtype)  # bf16 under --amp: losses in the run's dtype
        pred = predictions(logits, loss)                           # [K, c]
        totals["loss"] = totals["loss"] + per_sample_loss(logits, y, loss).sum(-1)
        totals["loss_clean"] = totals["loss_clean"] + per_sample_loss(logits, y_clean, loss).sum(-1)
        totals["acc"] = totals["acc"] + (pred == y).sum(-1)
        totals["acc_clean"] = totals["acc_clean"] + (pred == y_clean).sum(-1)
        totals["hits_flipped"] = totals["hits_flipped"] + ((pred == y) & (y != y_clean)).sum(-1)
    out = {k: v / n for k, v in totals.items() if k != "hits_flipped"}
    n_flipped = data.flipped(split, members)                       # [K]
    out["acc_flipped"] = torch.where(n_flipped > 0, totals["hits_flipped"] / n_flipped.clamp(min=1),
                                     math.nan)
    return {k: v.to(torch.float64) for k, v in out.items()}
