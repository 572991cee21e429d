"""The statistics of ``mindgap eval``: avg@n, unbiased pass@k, and the paired bootstrap.

avg@n is the mean share of correct samples per problem; pass@k is the unbiased estimator of
Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)`` per problem with ``c`` correct of ``n``,
averaged over problems. The paired bootstrap resamples problems (the same ones for both
runs), seeded, and gives the percentile 95% interval of the difference of the means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of ``k`` of the ``n`` samples (``c`` correct) is."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, not n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def k_values(n: int) -> list[int]:
    """The k of pass@k reported for ``n`` samples: 1, 2, 4, ... up to ``n``, and ``n``."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems given as (n, correct) pairs (0 for none)."""
    if not counts:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def avg_at_n(counts: Sequence[tuple[int, int]]) -> float:
    """The mean share of correct samples per problem, (n, correct) pairs (0 for none)."""
    if not counts:
        return 0.0
    return sum(c / n for n, c in counts) / len(counts)


@dataclass(frozen=True)
class Difference:
    """``b - a`` of two runs' mean accuracies on the same problems, with its interval."""

    a: float
    b: float
    diff: float
    low: float
    high: float
    problems: int


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                     seed: int = 0) -> Difference:
    """The mean of ``b - a`` (per-problem scores, paired by position) and its 95% interval."""
    return stratified_bootstrap({"": (a, b)}, resamples, seed)


def stratified_bootstrap(groups: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                         resamples: int = 10_000, seed: int = 0) -> Difference:
    """The macro average over groups of ``mean(b) - mean(a)``, problems resampled within
    each group (paired: one draw of problems for both runs), and its 95% interval."""
    rng = np.random.default_rng(seed)
    a_means, b_means, diffs = [], [], []
    for name, (a, b) in groups.items():
        left, right = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if left.shape != right.shape or not left.size:
            raise ValueError(f"{name or 'runs'}: paired scores need the same problems, "
                             f"at least one ({left.size} vs {right.size})")
        paired = right - left
        draws = rng.integers(0, paired.size, size=(resamples, paired.size))
        diffs.append(paired[draws].mean(axis=1))
        a_means.append(left.mean())
        b_means.append(right.mean())
    spread = np.mean(diffs, axis=0)
    low, high = np.percentile(spread, [2.5, 97.5])
    a_mean, b_mean = float(np.mean(a_means)), float(np.mean(b_means))
    return Difference(a=a_mean, b=b_mean, diff=b_mean - a_mean, low=float(low),
                      high=float(high), problems=sum(len(a) for a, _ in groups.values()))
