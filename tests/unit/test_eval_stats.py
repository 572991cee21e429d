"""The statistics of ``mindgap eval``: pass@k, avg@n and the paired bootstrap."""

from __future__ import annotations

import random
from itertools import combinations
from math import isclose, sqrt

import pytest

from mindgap.eval_stats import (
    avg_at_n,
    k_values,
    mean_pass_at_k,
    paired_bootstrap,
    pass_at_k,
    stratified_bootstrap,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of k-subsets of n samples (c correct) holding a correct one, by counting."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_unbiased_estimator(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert isclose(pass_at_k(n, c, k), brute_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_k_known_values() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(16, 2, 4) == pytest.approx(1 - 1001 / 1820)  # C(14,4)/C(16,4)
    assert pass_at_k(16, 0, 16) == 0.0
    assert pass_at_k(16, 1, 16) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the correct share


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_k_values_are_powers_of_two_up_to_n() -> None:
    assert k_values(1) == [1]
    assert k_values(2) == [1, 2]
    assert k_values(16) == [1, 2, 4, 8, 16]
    assert k_values(12) == [1, 2, 4, 8, 12]


def test_avg_at_n_and_mean_pass_at_k() -> None:
    counts = [(4, 0), (4, 1), (4, 2), (4, 4)]
    assert avg_at_n(counts) == pytest.approx(0.4375)
    assert mean_pass_at_k(counts, 1) == pytest.approx(0.4375)  # pass@1 == avg@n
    assert mean_pass_at_k(counts, 2) == pytest.approx((0 + 0.5 + 5 / 6 + 1) / 4)
    assert mean_pass_at_k(counts, 4) == pytest.approx(0.75)
    assert avg_at_n([]) == 0.0


def test_bootstrap_of_identical_runs_is_zero() -> None:
    scores = [0.0, 0.5, 1.0, 0.25]
    d = paired_bootstrap(scores, scores, resamples=500)
    assert (d.diff, d.low, d.high, d.problems) == (0.0, 0.0, 0.0, 4)


def test_bootstrap_of_a_constant_shift_is_exact() -> None:
    a = [0.1, 0.2, 0.3, 0.4]
    d = paired_bootstrap(a, [x + 0.25 for x in a], resamples=500)
    assert d.diff == pytest.approx(0.25)
    assert d.low == pytest.approx(0.25) and d.high == pytest.approx(0.25)  # pairing: no noise


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    rng = random.Random(3)
    a = [rng.random() for _ in range(400)]
    b = [x + rng.gauss(0.05, 0.2) for x in a]
    d = paired_bootstrap(a, b, resamples=4000, seed=1)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / len(diffs)
    sd = sqrt(sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1))
    assert d.diff == pytest.approx(mean)
    assert d.low < mean < d.high
    assert (d.high - d.low) == pytest.approx(2 * 1.96 * sd / sqrt(len(diffs)), rel=0.1)


def test_bootstrap_is_seeded() -> None:
    rng = random.Random(5)
    a, b = [rng.random() for _ in range(30)], [rng.random() for _ in range(30)]
    first = paired_bootstrap(a, b, resamples=300, seed=7)
    assert paired_bootstrap(a, b, resamples=300, seed=7) == first
    assert paired_bootstrap(a, b, resamples=300, seed=8) != first


def test_stratified_bootstrap_averages_benchmarks_unweighted() -> None:
    groups = {"big": ([0.0] * 100, [1.0] * 100), "small": ([0.5, 0.5], [0.5, 0.5])}
    d = stratified_bootstrap(groups, resamples=200)
    assert (d.a, d.b, d.diff) == (pytest.approx(0.25), pytest.approx(0.75), pytest.approx(0.5))
    assert d.problems == 102


def test_bootstrap_needs_paired_scores() -> None:
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap([], [])
