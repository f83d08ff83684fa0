"""Host reachability: the watcher (and beat's reconcile) probes each host, records
online/unreachable and re-reads the inventory of the hosts that answer.

A host in maintenance stays in maintenance while it answers (no new guests are placed
there); an unreachable host keeps the error and the time it went away.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone
from django.utils.timesince import timesince

from guests.inventory import reconcile_host
from hosts.capabilities import refresh_capabilities, refresh_resources
from hosts.models import Host
from hosts.services import probe_fields, test_connection
from hosts.virt import VirtError
from storage.inventory import reconcile_pools
from xenweb.alerts.models import AlertKind
from xenweb.alerts.services import raise_alert
from xenweb.realtime import EVENTS_GROUP, broadcast

log = logging.getLogger(__name__)


def refresh_host(host: Host) -> bool:
    """Probe one host and store what was found; True when its state changed."""
    before = host.state
    try:
        info = test_connection(host.virt_target)
    except VirtError as exc:
        host.state = Host.State.UNREACHABLE
        host.last_error = str(exc)
    else:
        for name, value in probe_fields(info).items():
            setattr(host, name, value)
        host.last_error = ""
        if host.state != Host.State.MAINTENANCE:
            host.state = Host.State.ONLINE
    return _store(host, before)


def mark_unreachable(host: Host, error: str) -> bool:
    """Record that the host did not answer (without probing it again); True when its state
    changed. The watcher calls it when connecting for events fails."""
    before = host.state
    host.state = Host.State.UNREACHABLE
    host.last_error = error
    return _store(host, before)


def _alert(host: Host, before: str, since: Any) -> None:
    """Going away and coming back are both worth an alert (flapping shows as a count)."""
    subject, link = f"host:{host.pk}", host.get_absolute_url()
    if host.state == Host.State.UNREACHABLE:
        raise_alert(AlertKind.HOST_UNREACHABLE, subject,
                    f"Host '{host}' is unreachable: {host.last_error}", link=link)
    elif before == Host.State.UNREACHABLE:
        away = f" after {timesince(since, host.state_since)}" if since else ""
        raise_alert(AlertKind.HOST_BACK, subject, f"Host '{host}' answers again{away}.",
                    link=link)


def _store(host: Host, before: str) -> bool:
    changed = host.state != before
    since = host.state_since
    if changed:
        host.state_since = timezone.now()
        log.info("host %s is now %s %s", host, host.state, host.last_error)
        _alert(host, before, since)
    host.save()
    if host.state != Host.State.UNREACHABLE:
        _reconcile_quietly(host)
    if changed:
        broadcast([EVENTS_GROUP], {
            "type": "inventory.update",
            "object": "host", "id": host.pk, "name": host.name, "state": host.state,
            "error": host.last_error,
        })
    return changed


def refresh_all_hosts() -> list[Host]:
    """Probe every host; returns the hosts whose state changed."""
    return [host for host in Host.objects.all() if refresh_host(host)]


def sync_inventory(host: Host) -> None:
    """Capabilities, guests and pools of the host, re-read from libvirt."""
    if not host.capabilities:
        refresh_capabilities(host)
    else:
        refresh_resources(host)
    reconcile_host(host)
    reconcile_pools(host)


def _reconcile_quietly(host: Host) -> None:
    try:
        sync_inventory(host)
    except VirtError as exc:
        log.warning("inventory of %s not refreshed: %s", host, exc)
