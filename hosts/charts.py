"""The host's performance charts: its samples (taken by the inventory's beat task) turned
into the series the charts draw, and what the pages need to draw them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from hosts.models import Host


def rate(values: Sequence[Any], seconds: float) -> float | None:
    """Per second between two readings of a counter (None across a counter reset)."""
    before, after = values
    if seconds <= 0 or after < before:  # a restarted guest starts its counters at zero
        return None
    return (after - before) / seconds


def pairs(samples: list[Any]) -> list[tuple[Any, Any, float]]:
    """Consecutive samples with the seconds between them."""
    return [(a, b, (b.at - a.at).total_seconds()) for a, b in itertools.pairwise(samples)]


def host_series(host: Host, minutes: int) -> dict[str, list[Any]]:
    samples = list(host.samples.filter(at__gte=timezone.now() - timedelta(minutes=minutes)))
    series: dict[str, list[Any]] = {"t": [], "cpu_percent": [], "memory_used_percent": [],
                                    "guests_running": []}
    for before, after, _seconds in pairs(samples):
        total = after.cpu_total_ns - before.cpu_total_ns
        busy = after.cpu_busy_ns - before.cpu_busy_ns
        series["t"].append(after.at.timestamp())
        series["cpu_percent"].append(round(100 * busy / total, 2) if total > 0 else None)
        series["memory_used_percent"].append(
            round(100 * (1 - after.memory_free_kib / after.memory_total_kib), 2)
            if after.memory_free_kib is not None and after.memory_total_kib else None)
        series["guests_running"].append(after.guests_running)
    return series


def latest_load(hosts: Sequence[Host]) -> dict[int, float | None]:
    """The newest CPU percent of each host (the dashboard's at-a-glance column)."""
    load: dict[int, float | None] = {}
    for host in hosts:
        last_two = list(host.samples.order_by("-at")[:2])
        if len(last_two) == 2:
            after, before = last_two
            total = after.cpu_total_ns - before.cpu_total_ns
            load[host.pk] = round(100 * (after.cpu_busy_ns - before.cpu_busy_ns) / total, 1) \
                if total > 0 else None
        else:
            load[host.pk] = None
    return load


HOST_CHARTS = [{"title": "CPU and memory use", "series": "cpu_percent,memory_used_percent",
                "labels": "CPU,Memory", "unit": "%"}]


def chart_context(url: str, host_pk: int, charts: list[dict[str, str]]) -> dict[str, Any]:
    """What templates/_performance.html needs (also for a guest's charts)."""
    return {"url": url, "host_pk": host_pk, "charts": charts,
            "metrics_interval": settings.CELERY_BEAT_SCHEDULE["sample-metrics"]["schedule"]}
