"""Ranking statistics (issue 24, item 3) against independent computations: scipy's tau-b, psi
written out by hand, a pair-by-pair loop for the sign-error, the extremes (gap, -gap, constant)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau

from landscape.analysis.ranking import (
    bootstrap_over_seeds,
    granulated_tau,
    kendall_tau,
    rank_measures,
    ranking_table,
    sign_error,
)
from landscape.errors import BadInput


def grid(shape: dict[str, int], seeds: int) -> dict[str, np.ndarray]:
    """Every combination of axis values (0, 1, ...) and seeds, one run each."""
    rows = list(itertools.product(*[range(n) for n in shape.values()], range(seeds)))
    return {name: np.array([r[k] for r in rows]) for k, name in enumerate([*shape, "seed"])}


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_tau_is_scipys_tau_b(ties):
    rng = np.random.default_rng(int(ties))
    for _ in range(20):
        x, y = rng.normal(size=(2, 30))
        if ties:
            x, y = np.round(x), np.round(y * 2)
        assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


# A = 0, 1, 2 and B = 0, 1 (cell means below), 2 seeds per cell that spread around the means by
# more than the means differ, so per-seed taus differ from the taus of cell means.
GAP = {(0, 0): 1, (1, 0): 2, (2, 0): 3, (0, 1): 2, (1, 1): 5, (2, 1): 4}
MEASURE = {(0, 0): 10, (1, 0): 20, (2, 0): 30, (0, 1): 1, (1, 1): 2, (2, 1): 3}
SPREAD = {(0, 0): 50, (1, 0): 1, (2, 0): 7, (0, 1): 9, (1, 1): 0, (2, 1): 4}


def hand_table(cells):
    table = {"A": [], "B": [], "seed": []}
    measure, gap = [], []
    for a, b in cells:
        for seed, side in enumerate([1, -1]):
            table["A"].append(a), table["B"].append(b), table["seed"].append(seed)
            measure.append(MEASURE[a, b] + side * SPREAD[a, b])
            gap.append(GAP[a, b] - side * 0.5 * SPREAD[a, b])
    return table, np.array(measure, float), np.array(gap, float)


def test_psi_on_a_hand_made_table():
    table, measure, gap = hand_table(GAP)
    result = granulated_tau(table, measure, gap, axes=["A", "B"])
    # psi_A: B = 0: gap 1, 2, 3 and measure 10, 20, 30 agree (tau 1); B = 1: gap 2, 5, 4 against
    # measure 1, 2, 3: two of three pairs agree (tau 1/3). psi_B: for each A, the gap rises from
    # B = 0 to 1 while the measure falls (tau -1). Psi = (2/3 - 1) / 2.
    assert result.psi["A"] == pytest.approx((1 + 1 / 3) / 2)
    assert result.psi["B"] == pytest.approx(-1)
    assert result.psi_mean == pytest.approx(-1 / 6)
    assert result.skipped == {"A": 0, "B": 0} and result.used == {"A": 2, "B": 3}

    # without cell (2, 1): at A = 2 only B = 0 is left, a combination with nothing to rank
    table, measure, gap = hand_table([c for c in GAP if c != (2, 1)])
    result = granulated_tau(table, measure, gap, axes=["A", "B"])
    assert result.skipped == {"A": 0, "B": 1}
    assert result.psi == {"A": pytest.approx(1.0), "B": pytest.approx(-1.0)}


def test_psi_matches_a_loop_over_slices_with_scipy():
    table = grid({"a": 3, "b": 2, "c": 4}, seeds=3)
    rng = np.random.default_rng(3)
    measure, gap = rng.normal(size=(2, len(table["seed"])))
    result = granulated_tau(table, measure, gap, axes=["a", "b", "c"])
    sizes = {"a": 3, "b": 2, "c": 4}
    expected = {}
    for axis, size in sizes.items():
        others = [o for o in sizes if o != axis]
        taus = []
        for fixed in itertools.product(*[range(sizes[o]) for o in others]):
            m, g = [], []
            for v in range(size):
                runs = [r for r in range(len(measure)) if table[axis][r] == v
                        and all(table[o][r] == f for o, f in zip(others, fixed))]
                m.append(sum(measure[r] for r in runs) / len(runs))
                g.append(sum(gap[r] for r in runs) / len(runs))
            taus.append(kendalltau(m, g).statistic)
        expected[axis] = sum(taus) / len(taus)
    assert result.psi == pytest.approx(expected)
    assert result.psi_mean == pytest.approx(sum(expected.values()) / 3)


def loop_sign_error(table, axes, measure, gap):
    """Pair by pair: runs whose cells differ in one axis; an environment = that pair of cells."""
    errors = {}
    for i, j in itertools.combinations(range(len(measure)), 2):
        ci, cj = tuple(table[a][i] for a in axes), tuple(table[a][j] for a in axes)
        if sum(x != y for x, y in zip(ci, cj)) != 1:
            continue
        dm, dg = measure[i] - measure[j], gap[i] - gap[j]
        error = 0.5 if dm == 0 or dg == 0 else (0.0 if (dm > 0) == (dg > 0) else 1.0)
        errors.setdefault(frozenset([ci, cj]), []).append(error)
    everything = [e for env in errors.values() for e in env]
    worst = max(sum(e) / len(e) for e in errors.values())
    return sum(everything) / len(everything), worst, len(errors)


def test_sign_error_matches_a_pair_by_pair_loop():
    table = grid({"a": 3, "b": 2, "c": 2}, seeds=2)
    rng = np.random.default_rng(4)
    measure, gap = np.round(rng.normal(size=(2, len(table["seed"]))))  # with ties
    result = sign_error(table, measure, gap, axes=["a", "b", "c"])
    mean, worst, environments = loop_sign_error(table, ["a", "b", "c"], measure, gap)
    assert result.mean == pytest.approx(mean) and result.worst == pytest.approx(worst)
    assert result.environments == environments
    assert environments == 3 * 2 * 2 + 3 * 2 + 3 * 2  # pairs of a-values x 4, b x 6, c x 6


def test_the_gap_itself_its_negative_and_a_constant():
    table = grid({"a": 3, "b": 2}, seeds=3)
    gap = np.random.default_rng(5).normal(size=len(table["seed"]))
    for measure, tau, error in [(gap, 1.0, 0.0), (-gap, -1.0, 1.0)]:
        assert kendall_tau(measure, gap) == pytest.approx(tau)
        granulated = granulated_tau(table, measure, gap, axes=["a", "b"])
        assert granulated.psi_mean == pytest.approx(tau)
        signs = sign_error(table, measure, gap, axes=["a", "b"])
        assert (signs.mean, signs.worst) == (pytest.approx(error), pytest.approx(error))
    constant = sign_error(table, np.ones_like(gap), gap, axes=["a", "b"])
    assert (constant.mean, constant.worst) == (0.5, 0.5)


def test_rank_measures_intervals_contain_the_estimate_and_are_seeded():
    table = grid({"b": 4, "lr": 2}, seeds=4)
    rng = np.random.default_rng(6)
    gap = 0.1 * table["b"] + 0.05 * table["lr"] + 0.02 * rng.normal(size=len(table["seed"]))
    measures = {"noisy": gap + 0.05 * rng.normal(size=len(gap)), "gap": gap, "negative": -gap,
                "constant": np.zeros_like(gap)}
    rankings = rank_measures(table, measures, gap, axes=["b", "lr"], resamples=100, seed=1)
    noisy = rankings[0]
    for interval in [noisy.tau, noisy.psi_mean, noisy.psi["b"], noisy.sign_error_mean]:
        assert interval.low <= interval.estimate <= interval.high and interval.low < interval.high
    assert noisy.tau.estimate == pytest.approx(kendall_tau(measures["noisy"], gap))
    again = rank_measures(table, measures, gap, axes=["b", "lr"], resamples=100, seed=1)
    assert repr(again) == repr(rankings)  # repr: the constant's NaNs compare unequal
    (other,) = rank_measures(table, {"noisy": measures["noisy"]}, gap, axes=["b", "lr"],
                             resamples=100, seed=2)
    assert other.tau.estimate == noisy.tau.estimate and other.tau != noisy.tau

    text = ranking_table(rankings, title="A sweep.")
    assert text.startswith("A sweep. Intervals: 95% bootstrap over seeds.")
    lines = text.splitlines()[2:]
    assert lines[0].startswith("| rank | measure | Psi | psi b | psi lr | tau |")
    assert [line.split(" | ")[1] for line in lines[2:6]] == ["gap", "noisy", "negative", "constant"]
    assert "n/a" in lines[5]  # the constant's Psi is undefined (0/0 in every slice)
    latex = ranking_table(rankings, fmt="latex").splitlines()
    assert latex[1] == r"\begin{tabular}{llrrrrrr}" and latex[3].startswith(r"rank & measure & Psi")
    assert [line.split(" & ")[1] for line in latex[5:9]] == ["gap", "noisy", "negative", "constant"]


def test_bootstrap_resamples_whole_seeds():
    seeds = np.repeat([0, 1, 2, 3], 5)
    x = np.repeat([1.0, 2.0, 3.0, 10.0], 5)  # constant within a seed

    def mean(runs):
        return x[runs].mean()

    (interval,) = bootstrap_over_seeds(mean, seeds, resamples=300, seed=0)
    assert interval.estimate == 4.0 and 1.0 <= interval.low < 4.0 < interval.high <= 10.0
    assert bootstrap_over_seeds(mean, seeds, resamples=300, seed=0) == (interval,)


@pytest.mark.parametrize("call, message", [
    (lambda t: kendall_tau([1, 2, 3], [1, 2]), "the measure has 3 runs but the gap has 2"),
    (lambda t: kendall_tau([1], [1]), "at least 2"),
    (lambda t: granulated_tau(t, [1.0] * 6, [1.0] * 6, axes=["a", "width"]),
     "unknown axis 'width'"),
    (lambda t: sign_error(t, [1.0] * 5, [1.0] * 5, axes=["a"]),
     "axis 'a' has 6 runs but the measure has 5"),
    (lambda t: rank_measures(t, {"m": [1.0] * 6}, [1.0] * 6, axes=["a"], seed_axis="s"),
     "unknown seed axis"),
    (lambda t: kendall_tau([1, np.nan], [1, 2]), "non-finite"),
])
def test_bad_input_is_one_clear_line(call, message):
    table = grid({"a": 3}, seeds=2)
    with pytest.raises(BadInput) as error:
        call(table)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bootstrap_computes_each_multiset_of_seeds_once():
    seeds = np.repeat([0, 1, 2], 4)
    x = np.arange(12.0) ** 2
    calls = []

    def mean(runs):
        calls.append(len(runs))
        return x[runs].mean()

    (interval,) = bootstrap_over_seeds(mean, seeds, resamples=500, seed=3)
    assert len(calls) <= 1 + 10  # the estimate, and C(3 + 3 - 1, 3) multisets of 3 seeds
    rng = np.random.default_rng(3)  # the slow reference: every draw computed
    groups = [np.flatnonzero(seeds == s) for s in range(3)]
    draws = [x[np.concatenate([groups[d] for d in rng.integers(3, size=3)])].mean()
             for _ in range(500)]
    assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
