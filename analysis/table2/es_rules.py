"""Early stopping by other rules than ours: how much of Table 2 (B) depends on the rule.

"With early stopping" in the paper is "the model that recorded the best validation accuracy during
training"; how often it was recorded and which of equal accuracies won is not stated. Validation
accuracy on 100 points moves in steps of 1%, so ties are common, and a baseline that peaks in its
first 10 epochs is sensitive to both. This takes runs whose test accuracy was measured every epoch
(`landscape train ... --eval-test every`, archived with archive.py) and reports the test accuracy
at the epoch each rule picks, mean (std) over trials, per setting and flood level:

    python analysis/table2/es_rules.py analysis/table2/runs/es-rules-*.npz

The archived runs (analysis/RESULTS.md) were trained and archived by, per setting (b = 0.3 for Two
Gaussians, 0.25 for Sinusoid):

    landscape train --data two_gaussians --noise 0.1 --seeds 10 --flood 0,0.3 --n-test 5000 \
        --eval-test every --save last --name es-rules-two_gaussians-noise0.1 \
        --out checkpoints/es-rules --resume
    python analysis/table2/archive.py save checkpoints/es-rules/es-rules-two_gaussians-noise0.1 \
        analysis/table2/runs/es-rules-two_gaussians-noise0.1.npz

Rules: `first best` (ours, the first epoch of the best validation accuracy), `last best` (ties go
to the later epoch: `if val >= best: keep`), `every k` (validation checked only at epochs k, 2k,
..., and the last), `patience p` (training stops after p epochs without a new best, keeping the
best so far) and `last epoch` (no early stopping).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from archive import markdown, records

from landscape.analysis.selection import early_stopping_epoch

EVERY = (5, 10, 25, 50)
PATIENCE = (10, 50)


def _best(val: np.ndarray, epochs: np.ndarray, *, last_of_ties: bool = False) -> int:
    """The epoch among `epochs` with the best validation accuracy (NaN rows never win)."""
    v = np.where(np.isfinite(val[epochs]), val[epochs], -np.inf)
    top = np.flatnonzero(v == v.max())
    return int(epochs[top[-1] if last_of_ties else top[0]])


def rule_epochs(val: np.ndarray) -> dict[str, int]:
    """The epoch each rule picks from one run's validation accuracies (row e = after e epochs)."""
    val = np.asarray(val, dtype=np.float64)
    last = len(val) - 1
    all_epochs = np.arange(len(val))
    picked = {"first best": early_stopping_epoch(val),  # the library's, as `landscape table`
              "last best": _best(val, all_epochs, last_of_ties=True)}
    for k in EVERY:
        picked[f"every {k}"] = _best(val, np.unique(np.r_[np.arange(k, last + 1, k), last]))
    for p in PATIENCE:
        best, since, chosen = -math.inf, 0, 0
        for epoch, v in enumerate(val):
            if v > best:
                best, since, chosen = v, 0, epoch
            else:
                since += 1
                if since >= p:
                    break
        picked[f"patience {p}"] = chosen
    picked["last epoch"] = last
    return picked


def rule_table(archives: list[str]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows: setting, b, trials, then each rule's mean (std) test accuracy (%)."""
    accs: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for config, metrics in records(archives):
        test = np.asarray(metrics["test_acc"], dtype=np.float64)
        if not np.isfinite(test).all():
            raise SystemExit(f"{config.name}: the test accuracy is not there every epoch; train "
                             "with --eval-test every")
        key = (f"{config.data.name} {config.data.noise:.0%}", config.objective.flood)
        for rule, epoch in rule_epochs(metrics["val_acc"]).items():
            accs[key][rule].append(float(test[epoch]))
    rules = list(next(iter(accs.values())))
    rows = []
    for (setting, flood), by_rule in accs.items():
        cells = []
        for rule in rules:
            v = 100 * np.array(by_rule[rule])
            cells.append(f"{v.mean():.2f}" + (f" ({v.std(ddof=1):.2f})" if len(v) > 1 else ""))
        rows.append((setting, f"{flood:g}", str(len(by_rule[rules[0]])), *cells))
    return ("setting", "b", "trials", *rules), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archives", nargs="+", type=Path)
    args = parser.parse_args()
    print(markdown(*rule_table([str(p) for p in args.archives])))


if __name__ == "__main__":
    main()
