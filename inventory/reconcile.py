"""The inventory follows enrolments and is reconciled on beat.

A host just enrolled (``hosts.signals.host_enrolled``) has its capabilities, guests and
pools read at once, inside the enrolment, so that its answer shows them. Beat's
``reconcile_inventory`` task then re-reads every host in full every
INVENTORY_RECONCILE_INTERVAL seconds, as the watcher process does every 30 s: an appliance
running without the watcher still converges. It is idempotent: rows are only changed, and
browsers only told, where libvirt says something else than the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache import cache

from hosts.models import Host
from hosts.signals import host_enrolled
from inventory.monitor import refresh_host, sync_inventory

log = logging.getLogger(__name__)

# Longer than any enrolment's first sync; a crashed enrolment's mark expires by itself.
ENROLLING_SECONDS = 600


def _enrolling_key(host: Host) -> str:
    return f"inventory:enrolling:{host.pk}"


@contextmanager
def enrolling(host: Host) -> Iterator[None]:
    """Marks the host as being enrolled (in the shared cache) for the enrolment's sync:
    the periodic reconcile, maybe in another process, leaves it alone meanwhile."""
    cache.set(_enrolling_key(host), True, ENROLLING_SECONDS)
    try:
        yield
    finally:
        cache.delete(_enrolling_key(host))


def is_enrolling(host: Host) -> bool:
    return cache.get(_enrolling_key(host)) is not None


def on_host_enrolled(sender: Any, host: Host, **kwargs: Any) -> None:
    """The enrolment's first inventory sync; its VirtError reaches enrol_host."""
    with enrolling(host):
        sync_inventory(host)


def reconcile_all() -> dict[str, str]:
    """Probe every enrolled host and re-read its inventory; returns each refreshed host's
    state by name. Skipped: hosts being enrolled (their enrolment syncs them) and the
    in-process demo host (only the web process may drive it). One host's failure is
    logged and does not stop the others."""
    done = {}
    for pk in Host.objects.values_list("pk", flat=True):
        # Read just before its turn: a setting changed meanwhile (maintenance) is kept.
        host = Host.objects.filter(pk=pk).first()
        if host is None or host.in_process_only or is_enrolling(host):
            continue
        try:
            refresh_host(host)
        except Exception:
            log.exception("inventory of %s not reconciled", host)
            continue
        done[host.name] = host.state
    return done


def connect() -> None:
    host_enrolled.connect(on_host_enrolled, dispatch_uid="inventory.reconcile.enrolled")
