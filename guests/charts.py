"""A guest's performance charts: its samples (taken by the inventory's beat task) turned
into the series the charts draw."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from guests.models import Guest
from hosts.charts import pairs, rate

GUEST_CHARTS = [
    {"title": "CPU (of its vCPUs)", "series": "cpu_percent", "labels": "CPU", "unit": "%"},
    {"title": "Disk and network I/O",
     "series": "disk_read_bps,disk_write_bps,net_rx_bps,net_tx_bps",
     "labels": "Disk read,Disk write,Net in,Net out", "unit": "B/s"},
]


def guest_series(guest: Guest, minutes: int) -> dict[str, list[Any]]:
    samples = list(guest.samples.filter(at__gte=timezone.now() - timedelta(minutes=minutes)))
    series: dict[str, list[Any]] = {"t": [], "cpu_percent": [], "memory_mib": [],
                                    "disk_read_bps": [], "disk_write_bps": [],
                                    "net_rx_bps": [], "net_tx_bps": []}
    for before, after, seconds in pairs(samples):
        cpu = rate((before.cpu_time_ns, after.cpu_time_ns), seconds)
        series["t"].append(after.at.timestamp())
        # CPU time per second of wall time over the vCPUs: 100 % is every vCPU busy.
        series["cpu_percent"].append(
            round(cpu / 1e9 * 100 / max(1, after.vcpus), 2) if cpu is not None else None)
        series["memory_mib"].append(round(after.memory_kib / 1024, 1))
        for name, field in (("disk_read_bps", "disk_read_bytes"),
                            ("disk_write_bps", "disk_write_bytes"),
                            ("net_rx_bps", "net_rx_bytes"), ("net_tx_bps", "net_tx_bytes")):
            value = rate((getattr(before, field), getattr(after, field)), seconds)
            series[name].append(round(value, 1) if value is not None else None)
    return series
