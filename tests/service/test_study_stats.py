"""The study statistics against direct computations (numpy by hand, scipy's t table)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.studies.stats import bootstrap_mean_interval, paired_difference, summarize, t_interval


def test_the_bootstrap_interval_is_a_seeded_percentile_interval_of_resampled_means():
    values = [1.62, 1.58, 1.63]
    rng = np.random.default_rng(7)
    draws = np.asarray(values)[rng.integers(0, 3, size=(5000, 3))].mean(axis=1)
    expected = np.quantile(draws, [0.025, 0.975])
    found = bootstrap_mean_interval(values, resamples=5000, seed=7)
    assert (found.low, found.high) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    assert bootstrap_mean_interval(values, resamples=5000, seed=7) == found  # reproducible
    assert min(values) <= found.low <= found.high <= max(values)


def test_the_t_interval_matches_the_textbook_formula():
    values = [1.0, 2.0, 4.0]
    mean, error = 7 / 3, np.std(values, ddof=1) / math.sqrt(3)
    found = t_interval(values)
    assert found.low == pytest.approx(mean - 4.302652729911275 * error)  # t(0.975, 2)
    assert found.high == pytest.approx(mean + 4.302652729911275 * error)
    assert t_interval([1.0]).low == -math.inf


def test_summary_of_k_values():
    summary = summarize([2.0, 4.0, 6.0, 8.0])
    assert (summary.n, summary.mean, summary.std) == (4, 5.0, pytest.approx(np.std([2, 4, 6, 8], ddof=1)))


def test_identical_runs_are_not_distinguishable_and_a_consistent_gap_is_called():
    same = paired_difference("b", "a", {1: (1.6, 1.6), 2: (1.7, 1.7), 3: (1.65, 1.65)})
    assert same.differences == [0.0, 0.0, 0.0]
    assert "not distinguishable at k = 3" in same.verdict
    better = paired_difference("sym", "adamw", {1: (1.60, 1.88), 2: (1.61, 1.885), 3: (1.59, 1.882)})
    assert better.verdict.startswith("sym better than adamw by 0.282 ± ")
    worse = paired_difference("sym", "adamw", {1: (1.90, 1.88), 2: (1.91, 1.885), 3: (1.895, 1.882)})
    assert worse.verdict.startswith("sym worse than adamw by")


def test_three_same_sign_seeds_with_a_wide_spread_are_not_called():
    # Every seed favours the candidate, so the bootstrap interval excludes zero; but the spread is
    # as large as the gap, the t interval (k = 3) includes zero, and no winner is claimed.
    noisy = paired_difference("b", "a", {1: (1.60, 1.601), 2: (1.55, 1.60), 3: (1.50, 1.60)})
    assert noisy.summary.bootstrap.excludes(0.0)
    assert not noisy.summary.t.excludes(0.0)
    assert "not distinguishable" in noisy.verdict


def test_seeds_missing_on_either_side_are_left_out_of_the_pairing():
    found = paired_difference("b", "a", {1: (1.0, 2.0), 2: (None, 2.0), 3: (1.5, None), 4: (1.2, 2.1)})
    assert found.seeds == [1, 4]
    assert found.differences == pytest.approx([-1.0, -0.9])
