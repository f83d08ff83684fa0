"""Performance graphs: sampling every host in bulk, keeping the samples for a while, and
turning consecutive counters into the series the charts draw (percent, bytes per second).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from hosts.models import Host, HostSample
from hosts.virt import VirtError
from hosts.virt.stats import host_counters
from xenweb.realtime import EVENTS_GROUP, broadcast


def sample_host(host: Host) -> int:
    """One bulk read of the host and all its guests into sample rows; returns how many
    guests were sampled."""
    from guests.models import Guest, GuestSample

    counters = host_counters(host.uri, allow_insecure=host.is_lab)
    now = timezone.now()
    guests = {str(g.uuid): g.pk for g in Guest.objects.filter(host=host).only("pk", "uuid")}
    rows = [GuestSample(guest_id=guests[c.uuid], at=now, cpu_time_ns=c.cpu_time_ns,
                        vcpus=c.vcpus, memory_kib=c.memory_kib,
                        disk_read_bytes=c.disk_read_bytes, disk_write_bytes=c.disk_write_bytes,
                        net_rx_bytes=c.net_rx_bytes, net_tx_bytes=c.net_tx_bytes)
            for c in counters.guests if c.uuid in guests and c.cpu_time_ns]
    GuestSample.objects.bulk_create(rows)
    HostSample.objects.create(host=host, at=now, cpu_busy_ns=counters.cpu_busy_ns,
                              cpu_total_ns=counters.cpu_total_ns,
                              memory_total_kib=counters.memory_total_kib,
                              memory_free_kib=counters.memory_free_kib,
                              guests_running=len(rows))
    broadcast([EVENTS_GROUP], {"type": "metrics.update", "host": host.pk,
                               "at": now.isoformat()})
    return len(rows)


def sample_all() -> dict[str, int]:
    """Every online host that a worker can reach (the in-process demo host has no
    counters), then the samples past their retention are dropped."""
    sampled = {}
    for host in Host.objects.filter(state=Host.State.ONLINE):
        if host.in_process_only:
            continue
        try:
            sampled[host.name] = sample_host(host)
        except VirtError:
            continue  # the monitor reports unreachable hosts
    prune()
    return sampled


def prune() -> None:
    from guests.models import GuestSample

    limit = timezone.now() - timedelta(hours=settings.METRICS_RETENTION_HOURS)
    HostSample.objects.filter(at__lt=limit).delete()
    GuestSample.objects.filter(at__lt=limit).delete()


def _rate(values: Sequence[Any], seconds: float) -> float | None:
    before, after = values
    if seconds <= 0 or after < before:  # a restarted guest starts its counters at zero
        return None
    return (after - before) / seconds


def _pairs(samples: list[Any]) -> list[tuple[Any, Any, float]]:
    return [(a, b, (b.at - a.at).total_seconds()) for a, b in itertools.pairwise(samples)]


def host_series(host: Host, minutes: int) -> dict[str, list[Any]]:
    samples = list(host.samples.filter(at__gte=timezone.now() - timedelta(minutes=minutes)))
    series: dict[str, list[Any]] = {"t": [], "cpu_percent": [], "memory_used_percent": [],
                                    "guests_running": []}
    for before, after, _seconds in _pairs(samples):
        total = after.cpu_total_ns - before.cpu_total_ns
        busy = after.cpu_busy_ns - before.cpu_busy_ns
        series["t"].append(after.at.timestamp())
        series["cpu_percent"].append(round(100 * busy / total, 2) if total > 0 else None)
        series["memory_used_percent"].append(
            round(100 * (1 - after.memory_free_kib / after.memory_total_kib), 2)
            if after.memory_free_kib is not None and after.memory_total_kib else None)
        series["guests_running"].append(after.guests_running)
    return series


def guest_series(guest: Any, minutes: int) -> dict[str, list[Any]]:
    samples = list(guest.samples.filter(at__gte=timezone.now() - timedelta(minutes=minutes)))
    series: dict[str, list[Any]] = {"t": [], "cpu_percent": [], "memory_mib": [],
                                    "disk_read_bps": [], "disk_write_bps": [],
                                    "net_rx_bps": [], "net_tx_bps": []}
    for before, after, seconds in _pairs(samples):
        cpu = _rate((before.cpu_time_ns, after.cpu_time_ns), seconds)
        series["t"].append(after.at.timestamp())
        # CPU time per second of wall time over the vCPUs: 100 % is every vCPU busy.
        series["cpu_percent"].append(
            round(cpu / 1e9 * 100 / max(1, after.vcpus), 2) if cpu is not None else None)
        series["memory_mib"].append(round(after.memory_kib / 1024, 1))
        for name, field in (("disk_read_bps", "disk_read_bytes"),
                            ("disk_write_bps", "disk_write_bytes"),
                            ("net_rx_bps", "net_rx_bytes"), ("net_tx_bps", "net_tx_bytes")):
            value = _rate((getattr(before, field), getattr(after, field)), seconds)
            series[name].append(round(value, 1) if value is not None else None)
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
GUEST_CHARTS = [
    {"title": "CPU (of its vCPUs)", "series": "cpu_percent", "labels": "CPU", "unit": "%"},
    {"title": "Disk and network I/O",
     "series": "disk_read_bps,disk_write_bps,net_rx_bps,net_tx_bps",
     "labels": "Disk read,Disk write,Net in,Net out", "unit": "B/s"},
]


def chart_context(url: str, host_pk: int, charts: list[dict[str, str]]) -> dict[str, Any]:
    return {"url": url, "host_pk": host_pk, "charts": charts,
            "metrics_interval": settings.CELERY_BEAT_SCHEDULE["sample-metrics"]["schedule"]}
