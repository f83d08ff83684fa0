"""Latency figures the benchmarks share."""

from __future__ import annotations

import os
import statistics
import time


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


SETTLE_SECONDS = 2.0


def quiet_start() -> None:
    """Before a timed run: the earlier runs' dirty pages written back, then a pause, so
    that every run starts from the same state. Back to back, on the lab machine (a VM
    whose kernel pages out memory it finds cold: DAMON), the second of two 4 GiB
    conversions took up to twice as long as the first, whichever tool ran it; after the
    pause both take the same time (a little longer: cached input may have been paged
    out, for both alike)."""
    os.sync()
    time.sleep(SETTLE_SECONDS)
