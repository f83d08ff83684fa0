"""Performance samples: every host and its guests (beat's ``sample_metrics``; read in bulk
where the driver can, see hosts.virt.stats), kept for METRICS_RETENTION_HOURS. The charts'
series are computed from them by hosts.charts and guests.charts.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from guests.models import Guest, GuestSample
from hosts.models import Host, HostSample
from hosts.virt import VirtError
from hosts.virt.stats import host_counters
from xenweb.realtime import EVENTS_GROUP, broadcast

log = logging.getLogger(__name__)


def sample_host(host: Host) -> int:
    """One read of the host and all its guests (hosts.virt.stats) into sample rows; returns
    how many guests were sampled."""
    counters = host_counters(host.virt_target)
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
        except VirtError as exc:
            # The monitor reports unreachable hosts; this says why a host has no graphs.
            log.warning("%s: no performance samples: %s", host.name, exc)
    prune()
    return sampled


def prune() -> None:
    limit = timezone.now() - timedelta(hours=settings.METRICS_RETENTION_HOURS)
    HostSample.objects.filter(at__lt=limit).delete()
    GuestSample.objects.filter(at__lt=limit).delete()
