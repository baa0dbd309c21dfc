"""Latency statistics: summaries, the speedup of one model over another with a bootstrap interval, outliers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["Speedup", "median_interval", "outliers", "speedup", "verdict"]


@dataclasses.dataclass(frozen=True)
class Speedup:
    """``ratio`` = p50(baseline) / p50(candidate): > 1 means the candidate is faster."""

    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int


def speedup(
    baseline_ms: Sequence[float],
    candidate_ms: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Speedup:
    """Ratio of medians with a percentile-bootstrap interval (both samples resampled independently)."""
    a = np.asarray(baseline_ms, dtype=np.float64)
    b = np.asarray(candidate_ms, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("speedup needs latencies for both models")
    rng = np.random.default_rng(seed)
    med_a = np.median(a[rng.integers(0, a.size, (resamples, a.size))], axis=1)
    med_b = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    ratios = med_a / med_b
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return Speedup(
        ratio=float(np.median(a) / np.median(b)),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        resamples=resamples,
    )


def median_interval(
    latencies_ms: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(p50, low, high): the median with a percentile-bootstrap interval."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latencies")
    rng = np.random.default_rng(seed)
    medians = np.median(a[rng.integers(0, a.size, (resamples, a.size))], axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(np.median(a)), float(low), float(high)


def verdict(s: Speedup, candidate: str = "int8", baseline: str = "float32") -> str:
    """A plain sentence: faster only when the whole interval is above 1."""
    if s.ci_low > 1.0:
        return f"{candidate} is {s.ratio:.2f}x faster than {baseline}"
    if s.ci_high < 1.0:
        return f"{candidate} is NOT faster on this device: {1 / s.ratio:.2f}x slower than {baseline}"
    return f"{candidate} is NOT measurably faster on this device ({s.ratio:.2f}x, interval includes 1)"


def outliers(values: dict[str, float], threshold: float = 3.5) -> list[str]:
    """Keys whose value is far from the others (modified z-score on the median absolute deviation)."""
    if len(values) < 3:
        return []
    keys = list(values)
    x = np.array([values[k] for k in keys], dtype=np.float64)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad == 0:
        return [k for k, v in zip(keys, x) if v != med] if np.count_nonzero(x != med) < len(x) / 2 else []
    z = 0.6745 * (x - med) / mad
    return [k for k, score in zip(keys, z) if abs(score) > threshold]
