"""Benchmark (issue 24): the bootstrap over seeds of one measure's ranking statistics (Kendall's
tau, psi per axis and Psi, the sign-error's mean and worst), as rank_measures computes them for
`landscape generalization`, on a synthetic sweep of b x lr x batch size x width x seeds runs:

  ours       analysis.ranking.bootstrap_over_seeds: each multiset of seeds drawn is computed once
             (with 3 seeds, 10 distinct resamples among 1,000 draws);
  reference  the same draws (the same generator and seed), the statistic computed for every one.

Both give the same intervals (checked first). Prints the ratio reference/ours, the modes
alternating, medians of --repeat runs beside the spread of the ratios.

    python benchmarks/ranking.py                      # 216 runs, 3 seeds, ~1 min
    python benchmarks/ranking.py --seeds 10           # more seeds: fewer repeated multisets
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from sweep import machine, parse_with_device, report, timed  # same folder

from landscape.analysis.ranking import (
    Interval,
    bootstrap_over_seeds,
    granulated_tau,
    kendall_tau,
    sign_error,
)

AXES = {"b": 6, "lr": 3, "batch_size": 2, "width": 2}  # values per axis, as the CPU study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    args, device = parse_with_device(parser)
    grid = np.array(list(itertools.product(*(range(n) for n in AXES.values()),
                                           range(args.seeds))))
    table = {a: grid[:, i] for i, a in enumerate([*AXES, "seed"])}
    rng = np.random.default_rng(0)
    measure = rng.normal(size=len(grid))
    gap = measure + rng.normal(size=len(grid))
    axes = list(AXES)

    def statistic(runs: np.ndarray) -> np.ndarray:  # rank_measures' statistics of one measure
        part = {a: table[a][runs] for a in axes}
        psi = granulated_tau(part, measure[runs], gap[runs], axes=axes)
        signs = sign_error(part, measure[runs], gap[runs], axes=axes)
        return np.array([kendall_tau(measure[runs], gap[runs]), *psi.psi.values(),
                         psi.psi_mean, signs.mean, signs.worst])

    def ours(_: int) -> tuple[Interval, ...]:
        return bootstrap_over_seeds(statistic, table["seed"], resamples=args.resamples, seed=0)

    def reference(_: int) -> tuple[Interval, ...]:
        labels = table["seed"]
        groups = [np.flatnonzero(labels == s) for s in np.unique(labels)]
        estimate = statistic(np.arange(len(labels)))
        draws_rng = np.random.default_rng(0)
        # each draw's runs in the order the cache puts them: the same sums to the last bit
        draws = np.array([statistic(np.concatenate(
            [groups[d] for d in sorted(draws_rng.integers(len(groups), size=len(groups)))]))
            for _ in range(args.resamples)])
        out = []
        for q, values in zip(estimate, draws.T):
            finite = values[np.isfinite(values)]
            low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
            out.append(Interval(float(q), float(low), float(high), 0.95))
        return tuple(out)

    if repr(ours(0)) != repr(reference(0)):  # repr: NaN intervals compare unequal
        raise SystemExit("ours and the reference disagree")
    print(machine(device) + f"; {len(grid)} runs ({' x '.join(map(str, AXES.values()))} x "
          f"{args.seeds} seeds), {args.resamples} resamples, repeat {args.repeat}, medians")
    times = timed({"reference": reference, "ours": ours}, 1, args.repeat, device)
    report("bootstrap of one measure", times, "reference", "ours")


if __name__ == "__main__":
    main()
