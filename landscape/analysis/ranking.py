"""How well a generalization measure ranks runs by their generalization gap (issue 24, item 3).

Pure functions over arrays, one value per run: a table of hyperparameters (axis -> value per run,
the seed among them), each measure, and the gap (e.g. test error - train error).

- `kendall_tau`: Kendall's tau-b over all runs (Kendall 1945; as scipy.stats.kendalltau).
- `granulated_tau`: Jiang et al. (ICLR 2020, "Fantastic generalization measures and where to find
  them", Sec. 4, Eq. (4)-(5)). psi_i is the mean, over every combination of the other axes' values,
  of tau over the runs that differ only in axis i; Psi is the mean of psi_i over the axes. Eq. (4)
  indexes models by their hyperparameters theta alone (one model per theta; the seed is not in
  their Theta), so runs that share every axis value (a cell: its seeds) are averaged first, measure
  and gap alike, and tau is taken over cell means. The seeds' spread goes to the bootstrap.
- `sign_error`: Dziugaite et al. (NeurIPS 2020, "In search of robust measures of generalization"),
  their coupled-network experiments and robust (worst-case) sign-error. An environment is a pair
  of cells that differ in exactly one axis, as in their coupled-network code
  (create_environments.py: "every possible pair of hyperparameter combinations that differ in
  exactly one value"); its sign-error is the mean over every pair of
  runs (one from each cell, so all seed pairs) of 1/2 (1 - sign(dmeasure) sign(dgap)). The robust
  (worst) sign-error is the max over environments; the mean is over all such run pairs (with the
  same number of seeds in every cell, the same as the mean over environments). Their Monte Carlo
  filter (pairs weighted by a Hoeffding bound on |dgap|) and minimum effective sample size per
  environment are not applied here: every environment counts, however few its seeds.
- `bootstrap_over_seeds`: percentile intervals, resampling seeds with replacement (a seed's runs
  travel together, as they share a data draw).
- `rank_measures` and `ranking_table`: all of the above per measure, and the ranked table
  (Markdown or LaTeX).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from landscape.analysis.selection import tabular
from landscape.errors import require

Values = Sequence[float] | np.ndarray  # one number per run
Table = Mapping[str, Sequence | np.ndarray]  # axis -> its value per run


@dataclass(frozen=True)
class Interval:
    """A statistic on all runs and its bootstrap percentile interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class GranulatedTau:
    """Jiang et al.'s psi_i per axis (Eq. 4) and Psi (Eq. 5), with what each axis had to skip.

    `skipped[axis]`: combinations of the other axes with fewer than 2 distinct values along `axis`
    (no pair to rank). `undefined[axis]`: combinations where tau-b is 0/0 (measure or gap constant
    there). Both are left out of psi_i; an axis with no combination left has psi_i = NaN and is
    left out of Psi."""

    psi: Mapping[str, float]
    psi_mean: float
    used: Mapping[str, int]
    skipped: Mapping[str, int]
    undefined: Mapping[str, int]


@dataclass(frozen=True)
class SignError:
    """Dziugaite et al.'s sign-error over environments (pairs of cells differing in one axis)."""

    mean: float
    worst: float
    environments: int
    worst_environment: str


@dataclass(frozen=True)
class MeasureRanking:
    """One measure against the gap: every statistic with its bootstrap interval over seeds.

    `psi_mean` is Psi (Jiang et al. Eq. 5); `skipped` and `undefined` count the combinations left
    out of each psi_i (see GranulatedTau); `worst_environment` names the worst pair of cells."""

    measure: str
    tau: Interval
    psi: Mapping[str, Interval]
    psi_mean: Interval
    sign_error_mean: Interval
    sign_error_worst: Interval
    skipped: Mapping[str, int]
    undefined: Mapping[str, int]
    worst_environment: str


def _values(x: Values, what: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    require(v.ndim == 1, f"{what} must be one value per run, got shape {v.shape}")
    require(len(v) >= 2, f"{what} has {len(v)} run(s); ranking needs at least 2")
    require(bool(np.isfinite(v).all()), f"{what} has non-finite values in runs "
            f"{np.flatnonzero(~np.isfinite(v)).tolist()[:5]}")
    return v


def _checked(table: Table, measure: Values, gap: Values, axes: Sequence[str]):
    """(codes, measure, gap): codes[r, i] = index of run r's value along axes[i] (n, k)."""
    m, g = _values(measure, "the measure"), _values(gap, "the gap")
    require(len(m) == len(g), f"the measure has {len(m)} runs but the gap has {len(g)}")
    require(len(axes) >= 1, "no hyperparameter axis given")
    unknown = [a for a in axes if a not in table]
    require(not unknown, f"unknown axis {', '.join(map(repr, unknown))}; the table has "
            f"{', '.join(map(repr, table))}")
    columns = []
    for a in axes:
        values = np.asarray(table[a])
        require(len(values) == len(m),
                f"axis {a!r} has {len(values)} runs but the measure has {len(m)}")
        columns.append(np.unique(values, return_inverse=True)[1].reshape(-1))
    return np.stack(columns, axis=1), m, g


def _signs(x: np.ndarray) -> np.ndarray:
    """sign(x_i - x_j) for every pair (n, n)."""
    return np.sign(x[:, None] - x[None, :])


def _tau_b(m: np.ndarray, g: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (Kendall 1945) within each group of runs (labels 0..G-1): over the pairs in
    a group, sum s_ij t_ij / sqrt(#{s_ij != 0} #{t_ij != 0}) with s_ij = sign(m_i - m_j),
    t_ij = sign(g_i - g_j); NaN where 0/0 (fewer than 2 runs, or m or g constant there)."""
    s, t = _signs(m), _signs(g)
    same = group[:, None] == group[None, :]
    label = np.broadcast_to(group[:, None], same.shape)[same]
    n = group.max() + 1
    # pairs tied in one variable count in neither the sum nor that variable's denominator (tau-b)
    concordance = np.bincount(label, (s * t)[same], n)
    untied = np.bincount(label, (s != 0)[same], n) * np.bincount(label, (t != 0)[same], n)
    with np.errstate(invalid="ignore"):
        return concordance / np.sqrt(untied)


def kendall_tau(measure: Values, gap: Values) -> float:
    """Kendall's tau-b over all runs (as scipy.stats.kendalltau); NaN when either is constant."""
    m, g = _values(measure, "the measure"), _values(gap, "the gap")
    require(len(m) == len(g), f"the measure has {len(m)} runs but the gap has {len(g)}")
    return float(_tau_b(m, g, np.zeros(len(m), dtype=np.int64))[0])


def _cell_means(codes: np.ndarray, m: np.ndarray, g: np.ndarray):
    """(cells (c, k), measure (c,), gap (c,)): runs with the same value on every axis averaged."""
    cells, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse)
    return cells, np.bincount(inverse, m) / count, np.bincount(inverse, g) / count


def granulated_tau(table: Table, measure: Values, gap: Values, *,
                   axes: Sequence[str]) -> GranulatedTau:
    """Jiang et al. (2020) Eq. (4)-(5) over the given axes; runs equal on all of them (seeds) are
    averaged first. psi_i = mean over the other axes' value combinations of tau over that slice."""
    codes, m, g = _checked(table, measure, gap, axes)
    cells, cm, cg = _cell_means(codes, m, g)
    psi, used, skipped, undefined = {}, {}, {}, {}
    for i, axis in enumerate(axes):
        # a group: the cells that share every other axis's value, i.e. differ only along `axis`
        group = np.unique(np.delete(cells, i, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
        tau = _tau_b(cm, cg, group)
        rankable = np.bincount(group) >= 2  # cells are distinct: 2 cells = 2 values along `axis`
        defined = rankable & ~np.isnan(tau)
        used[axis], skipped[axis] = int(defined.sum()), int((~rankable).sum())
        undefined[axis] = int((rankable & np.isnan(tau)).sum())
        psi[axis] = float(tau[defined].mean()) if defined.any() else float("nan")
    defined = [p for p in psi.values() if not np.isnan(p)]
    return GranulatedTau(psi, float(np.mean(defined)) if defined else float("nan"),
                         used, skipped, undefined)


def sign_error(table: Table, measure: Values, gap: Values, *, axes: Sequence[str]) -> SignError:
    """Dziugaite et al. (2020): over pairs of runs whose cells differ in exactly one axis,
    error = 1/2 (1 - sign(dmeasure) sign(dgap)) (0 same order, 1 reversed, 1/2 a tie in either);
    the mean over all those pairs and the worst environment's mean (see the module docstring)."""
    codes, m, g = _checked(table, measure, gap, axes)
    cell = np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)
    differing = (codes[:, None, :] != codes[None, :, :]).sum(axis=2)  # (n, n) axes that differ
    i, j = np.nonzero(np.triu(differing == 1))
    if len(i) == 0:
        return SignError(float("nan"), float("nan"), 0, "none: no two cells differ in one axis")
    error = 0.5 * (1.0 - np.sign(m[i] - m[j]) * np.sign(g[i] - g[j]))
    n_cells = cell.max() + 1
    pair = np.minimum(cell[i], cell[j]) * n_cells + np.maximum(cell[i], cell[j])
    environments, which = np.unique(pair, return_inverse=True)
    which = which.reshape(-1)
    per_environment = np.bincount(which, error) / np.bincount(which)
    worst = int(np.argmax(per_environment))
    first = np.flatnonzero(which == worst)[0]
    return SignError(float(error.mean()), float(per_environment[worst]), len(environments),
                     _environment(table, axes, i[first], j[first]))


def _environment(table: Table, axes: Sequence[str], a: int, b: int) -> str:
    """'axis: x vs y at other=v, ...' for the cells of runs a and b."""
    value = {ax: (np.asarray(table[ax])[a].item(), np.asarray(table[ax])[b].item()) for ax in axes}
    varied = next(ax for ax in axes if value[ax][0] != value[ax][1])
    fixed = ", ".join(f"{ax}={value[ax][0]}" for ax in axes if ax != varied)
    return f"{varied}: {value[varied][0]} vs {value[varied][1]}" + (f" at {fixed}" if fixed else "")


def bootstrap_over_seeds(statistic: Callable[[np.ndarray], float | Sequence[float] | np.ndarray],
                         seeds: Sequence | np.ndarray, *, resamples: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[Interval, ...]:
    """Percentile intervals (Efron & Tibshirani 1993, Sec. 13.3) of `statistic(runs)`, which takes
    the indices of the runs to use (in any order: the same runs must give the same value) and
    returns one value or a 1-D array of them (one Interval each).

    Each resample draws as many seeds as there are, with replacement, and takes all runs of each
    drawn seed (a seed drawn twice contributes its runs twice): runs of one seed share a data draw,
    so they are resampled together. The estimate is the statistic on all runs; resamples where a
    value is NaN are left out of its interval (all NaN: a NaN interval)."""
    labels = np.asarray(seeds)
    require(labels.ndim == 1 and len(labels) >= 2,
            "the bootstrap needs a seed per run, at least 2 runs")
    require(resamples >= 1, f"resamples must be at least 1, got {resamples}")
    require(0 < level < 1, f"level must lie in (0, 1), got {level}")
    groups = [np.flatnonzero(labels == s) for s in np.unique(labels)]
    estimate = np.atleast_1d(np.asarray(statistic(np.arange(len(labels))), dtype=np.float64))
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, len(estimate)))
    # A resample is a multiset of seeds: with few seeds most draws repeat one (3 seeds: 10
    # multisets among 1000 draws), computed once. The statistic must not depend on the runs' order.
    computed: dict[tuple[int, ...], np.ndarray] = {}
    for r in range(resamples):
        drawn = tuple(sorted(rng.integers(len(groups), size=len(groups)).tolist()))
        if drawn not in computed:
            runs = np.concatenate([groups[d] for d in drawn])
            computed[drawn] = np.asarray(statistic(runs), dtype=np.float64)
        draws[r] = computed[drawn]
    tails = [50 * (1 - level), 50 * (1 + level)]
    intervals = []
    for q, values in zip(estimate, draws.T, strict=True):
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, tails) if len(finite) else (np.nan, np.nan)
        intervals.append(Interval(float(q), float(low), float(high), level))
    return tuple(intervals)


def rank_measures(table: Table, measures: Mapping[str, Values], gap: Values, *,
                  axes: Sequence[str], seed_axis: str = "seed", resamples: int = 1000,
                  seed: int = 0, level: float = 0.95) -> tuple[MeasureRanking, ...]:
    """Every measure against the gap, in the order given: Kendall's tau over all runs, psi per axis
    and Psi (Jiang et al. Eq. 4-5, seeds averaged per cell), the sign-error's mean and worst
    environment (Dziugaite et al.), each with its bootstrap interval over `table[seed_axis]`.

    Example:
        rank_measures({"b": b, "lr": lr, "seed": s}, {"sharpness": sh}, gap, axes=["b", "lr"])"""
    axes = list(axes)
    require(seed_axis in table,
            f"unknown seed axis {seed_axis!r}; the table has {', '.join(map(repr, table))}")
    require(seed_axis not in axes,
            f"the seed axis {seed_axis!r} cannot also be a hyperparameter axis")
    require(len(measures) >= 1, "no measure given")
    g = _values(gap, "the gap")
    rankings = []
    for name, values in measures.items():
        m = np.asarray(values, dtype=np.float64)
        granulated = granulated_tau(table, m, g, axes=axes)  # validates the table against m and g
        signs = sign_error(table, m, g, axes=axes)

        def statistics(runs: np.ndarray, m=m) -> np.ndarray:
            part = {a: np.asarray(table[a])[runs] for a in axes}
            gr = granulated_tau(part, m[runs], g[runs], axes=axes)
            se = sign_error(part, m[runs], g[runs], axes=axes)
            return np.array([kendall_tau(m[runs], g[runs]), *gr.psi.values(), gr.psi_mean,
                             se.mean, se.worst])

        tau, *psi, psi_mean, mean, worst = bootstrap_over_seeds(
            statistics, table[seed_axis], resamples=resamples, seed=seed, level=level)
        rankings.append(MeasureRanking(name, tau, dict(zip(axes, psi, strict=True)), psi_mean, mean,
                                       worst, granulated.skipped, granulated.undefined,
                                       signs.worst_environment))
    return tuple(rankings)


def _cell(interval: Interval) -> str:
    if np.isnan(interval.estimate):
        return "n/a"
    return f"{interval.estimate:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def ranking_table(rankings: Sequence[MeasureRanking], *, fmt: Literal["md", "latex"] = "md",
                  title: str = "") -> str:
    """The ranked table, Markdown or a LaTeX tabular as `landscape table` makes them: best first by
    Psi (signed, largest first; NaN last), ties by the mean sign-error. Signed, not |Psi|: a
    measure is meant to grow with the gap, and one that orders runs backwards is wrong, not good
    with its sign flipped after the fact (its sign-error says the same). Cells: estimate [low,
    high] of the bootstrap interval. The caption (`title`, then notes: the intervals, the skipped
    cells) comes first."""
    require(len(rankings) >= 1, "no measure to rank")
    ordered = sorted(rankings, key=lambda r: (np.isnan(r.psi_mean.estimate),
                                              -np.nan_to_num(r.psi_mean.estimate),
                                              r.sign_error_mean.estimate))
    axes = list(rankings[0].psi)
    header = ["rank", "measure", "Psi", *[f"psi {a}" for a in axes], "tau",
              "sign-error mean", "sign-error worst"]
    rows = [[str(k), r.measure, _cell(r.psi_mean), *[_cell(r.psi[a]) for a in axes], _cell(r.tau),
             _cell(r.sign_error_mean), _cell(r.sign_error_worst)] for k, r in enumerate(ordered, 1)]
    level = rankings[0].tau.level
    notes = [title, (f"Intervals: {100 * level:.0f}% bootstrap over seeds. Psi: Jiang et al. (2020) "
                     "Eq. (5); sign-error: Dziugaite et al. (2020), worst over environments.")]
    skipped = {a: rankings[0].skipped[a] for a in axes if rankings[0].skipped[a]}
    if skipped:
        notes.append("psi skips combinations with fewer than 2 values along the axis: "
                     + ", ".join(f"{a} {n}" for a, n in skipped.items()) + ".")
    return tabular(header, rows, " ".join(filter(None, notes)), fmt=fmt, first=2)
