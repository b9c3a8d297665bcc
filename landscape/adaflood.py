"""AdaFlood (Bae et al. 2023, "AdaFlood: Adaptive Flood Regularization"): a flood level per
training sample, from how hard the sample is for models that did not train on it.

The training set is split into F folds (a seeded random partition, sizes differing by at most one).
For each fold f an auxiliary model trains on the other folds; its loss on each sample i of fold f
is the held-out loss l_aux_i. The level of sample i is the loss of the auxiliary prediction
corrected towards the label by gamma (Bae et al. 2023, Sec. 3):

    theta_i = -log((1 - gamma) exp(-l_aux_i) + gamma)      (0 <= theta_i < -log gamma)

and the run then trains on mean_i |l_i - theta_i| + theta_i over each mini-batch (flooding.py).
Samples the auxiliary models find easy get a level near 0 (fit them), samples they get wrong (often
the flipped labels) a level near -log gamma (do not memorize them).

Where we chose (the paper leaves the auxiliary training to the user):
- An auxiliary model is the run's own recipe: the same architecture, optimizer, learning rate,
  batch size, number of epochs and seed, with the plain loss (b = 0), on the other folds; l_aux
  comes from its weights after the last epoch, in eval mode. (Bae et al. also fine-tune one model
  instead of training F; not offered.) Its "validation" and "test" sets are its held-out fold.
- The folds' models train stacked as one vectorized ensemble (training.train_group, each member
  on its own draw of the data); when F does not divide n, the complements differ in size by one
  and train as two stacks.
- The auxiliary models keep no run file: their purpose is the levels, which the run file stores
  with the held-out losses and the folds under /data (`flood_levels`, `aux_losses`, `folds`, in
  the training split's order). A run killed before its file exists retrains them (deterministic).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
import numpy as np
import torch

from .config import ObjectiveConfig, RunConfig
from .data import Dataset, Split
from .ensemble import MemberData
from .errors import WorkFailed
from .evaluation import rows_for, sample_losses
from .models import build_model, output_units
from .sources import as_source
from .training import Member, train_group

FOLD_STREAM = 0xADA  # the fold draw's own stream of the run's seed


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """Each sample's fold [n] in 0..folds-1: a seeded random partition, sizes within one."""
    order = np.random.default_rng(np.random.SeedSequence([seed, FOLD_STREAM])).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


def corrected_levels(aux_losses: np.ndarray, gamma: float) -> np.ndarray:
    """theta_i = -log((1 - gamma) exp(-l_aux_i) + gamma) (Bae et al. 2023), as a log-sum-exp so
    that a huge held-out loss gives -log gamma, not a rounding error."""
    losses = np.asarray(aux_losses, dtype=np.float64)
    return -np.logaddexp(np.log1p(-gamma) - losses, np.log(gamma))


def auxiliary_config(config: RunConfig) -> RunConfig:
    """The recipe of the auxiliary models: the run's, with the plain loss and nothing saved."""
    plain = ObjectiveConfig(kind="flood", flood=0.0, loss=config.objective.loss)
    return dataclasses.replace(config, objective=plain, save="none", eval_test="best")


def _rows(split: Split, index: np.ndarray) -> Split:
    idx = torch.as_tensor(index, device=split.y.device)
    return Split(split.stored[idx], split.y[idx], split.y_clean[idx], split.standardize)


def fold_data(dataset: Dataset, folds: np.ndarray, f: int) -> Dataset:
    """Fold f's auxiliary data: train on the other folds; validation and test are fold f."""
    held_out = _rows(dataset.train, np.flatnonzero(folds == f))
    return Dataset(train=_rows(dataset.train, np.flatnonzero(folds != f)), val=held_out,
                   test=held_out, num_classes=dataset.num_classes)


class FinalState:
    """Stands in for a RunWriter: an auxiliary model keeps no file, only its last weights."""

    checkpoints_every_epoch = False  # the trainer's final epoch always brings the state

    def __init__(self, last_epoch: int) -> None:
        self.last_epoch, self.state, self.path = last_epoch, None, Path("<auxiliary model>")

    def write_epoch(self, epoch: int, metrics, *, model_state=None, optim_state=None,
                    snapshot=None) -> None:
        if epoch == self.last_epoch:
            self.state = {k: v.detach().clone() for k, v in model_state.items()}

    def write_metrics(self, epoch: int, metrics) -> None:
        pass

    def set_status(self, status: str) -> None:
        pass

    def close(self) -> None:
        pass


def auxiliary_losses(config: RunConfig, dataset: Dataset, *, device: torch.device,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(held-out losses [n_train], folds [n_train]) of a resolved AdaFlood config."""
    n = len(dataset.train)
    folds = fold_assignment(n, config.objective.adaflood_folds, config.seed)
    aux = auxiliary_config(config)
    draws = [fold_data(dataset, folds, f) for f in range(config.objective.adaflood_folds)]
    stacks: dict[int, list[int]] = {}  # folds whose complements are equally large stack together
    for f, draw in enumerate(draws):
        stacks.setdefault(len(draw.train), []).append(f)
    template = build_model(aux.model, dataset.input_shape,
                           output_units(dataset.num_classes, aux.objective.loss))
    template = template.to(device=device, dtype=getattr(torch, aux.dtype))
    rows = rows_for(template, dataset.input_shape, 1, device)
    losses = np.empty(n)
    for fs in stacks.values():
        members = [Member(aux, FinalState(aux.optim.epochs)) for _ in fs]
        statuses = train_group(members, MemberData([draws[f] for f in fs], range(len(fs))),
                               device=device, progress=progress,
                               label=f"{config.name}: auxiliary models {fs}",
                               checkpoint_every=math.inf)  # only the last epoch's weights count
        if "diverged" in statuses:
            raise WorkFailed(f"{config.name}: an AdaFlood auxiliary model diverged (NaN/inf loss)")
        for f, m in zip(fs, members):
            held_out = as_source(draws[f].val, device=device, dtype=None)
            losses[folds == f] = sample_losses(template, m.writer.state, held_out,
                                               aux.objective.loss, rows)
    return losses, folds


def per_sample_arrays(config: RunConfig, dataset: Dataset, *, device: torch.device,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """What an AdaFlood run file keeps under /data: flood_levels, aux_losses and folds [n_train]."""
    losses, folds = auxiliary_losses(config, dataset, device=device, progress=progress)
    return {"flood_levels": corrected_levels(losses, config.objective.adaflood_gamma),
            "aux_losses": losses, "folds": folds}
