"""Latency figures the benchmarks share."""

from __future__ import annotations

import statistics


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency_summary(seconds: list[float], digits: int = 3) -> dict[str, float]:
    """p50, p95, p99 and mean in milliseconds."""
    ms = [value * 1000 for value in seconds]
    return {"p50_ms": round(statistics.median(ms), digits),
            "p95_ms": round(percentile(ms, 95), digits),
            "p99_ms": round(percentile(ms, 99), digits),
            "mean_ms": round(statistics.fmean(ms), digits)}
