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
- The folds' models train stacked as one vectorized ensemble (loop.epochs, each member
  on its own draw of the data); when F does not divide n, the complements differ in size by one
  and train as two stacks.
- The auxiliary models keep no run file: their purpose is the levels, which the run file stores
  with the held-out losses and the folds under /data (`flood_levels`, `aux_losses`, `folds`, in
  the training split's order). The planner (planner.py) runs this phase before it makes the file;
  a run killed before its file exists retrains them (deterministic).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from landscape.config import ObjectiveConfig, RunConfig
from landscape.data import Dataset, Split
from landscape.errors import WorkFailed
from landscape.measures.evaluation import sample_losses
from landscape.measures.sources import as_source
from landscape.memory import rows_for
from landscape.models import run_model
from landscape.progress import progress_bar
from landscape.training.loop import Start, epochs
from landscape.training.members import MemberData

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
    """The recipe of the auxiliary models: the run's, with the plain loss, nothing saved and
    nothing tracked."""
    plain = ObjectiveConfig(kind="flood", flood=0.0, loss=config.objective.loss)
    return dataclasses.replace(config, objective=plain, save="none", eval_test="best", track=None)


def _rows(split: Split, index: np.ndarray) -> Split:
    idx = torch.as_tensor(index, device=split.y.device)
    return Split(split.stored[idx], split.y[idx], split.y_clean[idx], split.standardize)


def fold_data(dataset: Dataset, folds: np.ndarray, f: int) -> Dataset:
    """Fold f's auxiliary data: train on the other folds; validation and test are fold f."""
    held_out = _rows(dataset.train, np.flatnonzero(folds == f))
    return Dataset(train=_rows(dataset.train, np.flatnonzero(folds != f)), val=held_out,
                   test=held_out, num_classes=dataset.num_classes)


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
    template = run_model(aux, dataset.input_shape, dataset.num_classes, device=device)
    rows = rows_for(template, dataset.input_shape, 1, device)
    losses = np.empty(n)
    for fs in stacks.values():
        trained = epochs([Start(aux) for _ in fs], MemberData([draws[f] for f in fs],
                                                              range(len(fs))), device=device)
        with progress_bar(trained, enabled=progress, length=aux.optim.epochs + 1,
                          label=f"{config.name}: auxiliary models {fs}") as measured:
            for epoch in measured:
                if epoch.diverged.any():
                    raise WorkFailed(f"{config.name}: an AdaFlood auxiliary model diverged "
                                     "(NaN/inf loss)")
        for k, f in enumerate(fs):  # the last epoch's weights: the generator's group holds them
            held_out = as_source(draws[f].val, device=device, dtype=None)
            losses[folds == f] = sample_losses(template, epoch.group.member_state(k), held_out,
                                               aux.objective.loss, rows)
    return losses, folds


def per_sample_arrays(config: RunConfig, dataset: Dataset, *, device: torch.device,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """What an AdaFlood run file keeps under /data: flood_levels, aux_losses and folds [n_train]."""
    losses, folds = auxiliary_losses(config, dataset, device=device, progress=progress)
    return {"flood_levels": corrected_levels(losses, config.objective.adaflood_gamma),
            "aux_losses": losses, "folds": folds}
