"""Automatic placement: a host that is online, not in maintenance, runs the guest type and
has the most free memory for it."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, Sum

from guests.errors import GuestError
from guests.placement.conflicts import conflicts_on
from hosts.capabilities import CapabilityError, domain_type_for
from hosts.models import Host

HEADROOM_MIB = 256


def free_memory_mib(host: Host) -> int:
    used = host.guests.filter(
        Q(state__in=("running", "blocked", "paused")) | Q(is_privileged=True)
    ).aggregate(total=Sum("memory_mib"))["total"] or 0
    return host.memory_mib - used


def choose_host(os_type: str, memory_mib: int, *, labels: Iterable[str] = (),
                name: str = "the guest", exclude: Host | None = None) -> Host:
    reasons = []
    best: tuple[int, Host] | None = None
    hosts = Host.objects.filter(state=Host.State.ONLINE)
    if exclude is not None:
        hosts = hosts.exclude(pk=exclude.pk)
    for host in hosts:
        conflicts = conflicts_on(host, labels, name=name)
        if conflicts:
            reasons.append(f"{host}: {' '.join(conflicts)}")
            continue
        try:
            domain_type_for(host, os_type)
        except CapabilityError as exc:
            reasons.append(f"{host}: {exc}")
            continue
        free = free_memory_mib(host)
        if free < memory_mib + HEADROOM_MIB:
            reasons.append(f"{host}: only {free} MiB free")
            continue
        if best is None or free > best[0]:
            best = (free, host)
    if best is None:
        detail = "; ".join(reasons) or "no host is online"
        raise GuestError(f"No host can take this guest ({detail}).")
    return best[1]
