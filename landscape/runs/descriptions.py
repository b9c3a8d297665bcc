"""What each array of a run file means, with its unit: kept as each dataset's `description` and
`units` attributes (so h5ls -v, HDFView or MATLAB show it) and as `landscape export --describe`.
Losses are the surrogate losses of the paper's Sec. 3.1 in nats (natural logarithms)."""

from __future__ import annotations

# metric measure -> (meaning, units); a metric is "<split>_<measure>" or a step metric by name
MEASURES = {
    "loss": ("mean surrogate loss on the labels trained with (noisy where noise was added)",
             "nats"),
    "acc": ("accuracy on the labels trained with", "fraction"),
    "loss_clean": ("mean surrogate loss on the clean labels", "nats"),
    "acc_clean": ("accuracy on the clean labels", "fraction"),
    "acc_flipped": ("accuracy on the points whose label was flipped (memorization); NaN without "
                    "label noise", "fraction"),
}
STEP_METRICS = {
    "batch_loss": ("mean raw mini-batch loss J over the epoch's steps", "nats"),
    "batch_objective": ("mean flooded objective over the epoch's steps (|J - b| + b for "
                        "flooding; iFlood's and AdaFlood's per-sample forms)", "nats"),
    "ascent_fraction": ("share of the epoch's steps that were gradient ascent (J < b)",
                        "fraction"),
    "lr": ("learning rate during the epoch", ""),
    "seconds": ("wall seconds the epoch took to train and evaluate (NaN at epoch 0)", "s"),
    "flood_level": ("flood level b the epoch trained with (AdaFlood: the mean level)", "nats"),
}
# --track (training/tracking.py): NaN at the epochs not tracked
TRACKED = {
    "top_eigenvalue": ("largest Hessian eigenvalue of the mean loss on the tracked training rows "
                       "(Lanczos)", ""),
    "trace": ("Hutchinson estimate of the Hessian's trace on the tracked training rows", ""),
    "gradient_amplitude": ("filter-normalized gradient amplitude (paper Sec. 5.2) on the tracked "
                           "training rows", ""),
    "worst_case_sharpness": ("worst-case sharpness on the tracked training rows", "nats"),
    "threshold": ("the optimizer's edge of stability at the epoch's learning rate: 2 / lr for "
                  "SGD, (2 + 2 momentum) / lr with momentum, 38 / lr for Adam", ""),
    "preconditioned_sharpness": ("Adam: largest eigenvalue of P^-1 H of the epoch's last step "
                                 "(Cohen et al. 2022)", ""),
    "track_seconds": ("wall seconds the tracked measures took after the epoch (all members of "
                      "a stacked group), beside `seconds`, which excludes them", "s"),
}
SPLITS = {"train": "training", "val": "validation", "test": "test"}


def metric(name: str) -> tuple[str, str]:
    """(meaning, units) of a metric, one row per epoch from epoch 0 (the untrained model)."""
    split, _, measure = name.partition("_")
    if split in SPLITS and measure in MEASURES:
        meaning, units = MEASURES[measure]
        return f"{SPLITS[split]} set, per epoch: {meaning}", units
    return STEP_METRICS.get(name, TRACKED.get(name, ("", "")))


def weights(key: str) -> str:
    return (f"state-dict entry {key!r} at each kept epoch [kept epochs, *shape]; the kept epochs "
            "are /weights/epochs, the state dict's order is /weights attribute 'order'")
