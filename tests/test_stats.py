"""Speedup statistics on synthetic data with a known ratio."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.stats import outliers, speedup, verdict


@pytest.mark.parametrize("true_ratio", [0.5, 1.0, 2.0, 3.7])
def test_bootstrap_interval_contains_the_true_ratio(true_ratio):
    rng = np.random.default_rng(42)
    # log-normal latencies like real ones: baseline median 20 ms, candidate median 20 / ratio
    base = 20.0 * rng.lognormal(0.0, 0.05, 400)
    cand = 20.0 / true_ratio * rng.lognormal(0.0, 0.05, 400)
    s = speedup(base, cand)
    assert s.ci_low < true_ratio < s.ci_high
    assert s.ci_high - s.ci_low < 0.05 * true_ratio  # and it is tight with 400 runs each


def test_bootstrap_coverage_is_close_to_nominal():
    """Over many synthetic experiments the 95 % interval misses the truth about 5 % of the time."""
    rng = np.random.default_rng(7)
    misses = 0
    trials = 120
    for i in range(trials):
        base = 10.0 * rng.lognormal(0.0, 0.2, 60)
        cand = 5.0 * rng.lognormal(0.0, 0.2, 60)
        s = speedup(base, cand, resamples=600, seed=i)
        misses += not (s.ci_low < 2.0 < s.ci_high)
    assert misses / trials < 0.15


def test_verdict_wording():
    rng = np.random.default_rng(0)
    fast = speedup(20 * rng.lognormal(0, 0.05, 200), 10 * rng.lognormal(0, 0.05, 200))
    slow = speedup(10 * rng.lognormal(0, 0.05, 200), 40 * rng.lognormal(0, 0.05, 200))
    both = 10 * rng.lognormal(0, 0.05, 200)
    same = speedup(both, rng.permutation(both))
    assert verdict(fast).startswith("int8 is 2.0") and "faster" in verdict(fast)
    assert "NOT faster" in verdict(slow) and f"{1 / slow.ratio:.2f}x slower" in verdict(slow)
    assert 1 / slow.ratio == pytest.approx(4.0, rel=0.03)
    assert "NOT measurably faster" in verdict(same)


def test_outlier_devices():
    assert outliers({"pi-1": 20.0, "pi-2": 21.0, "pi-3": 19.5, "pi-4": 20.5, "pi-5": 48.0}) == ["pi-5"]
    assert outliers({"a": 1.0, "b": 1.1}) == []
