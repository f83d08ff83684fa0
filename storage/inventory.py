"""Keeping the pool and volume cache in step with libvirt."""

from __future__ import annotations

from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from hosts.models import Host
from hosts.virt.pools import PoolInfo, VolumeInfo, list_pools
from storage import content
from storage.models import Pool
from storage.sharing import apply_source, auto_shared, effective_shared
from xenweb.alerts.models import AlertKind
from xenweb.alerts.services import raise_alert

LIBVIRT_FIELDS = ["name", "pool_type", "active", "autostart", "capacity", "allocation",
                  "available", "target_path", "source", "storage_key", "updated_at"]


def _apply(pool: Pool, info: PoolInfo) -> None:
    """libvirt's facts onto the cached pool (what libvirt does not know is kept)."""
    pool.name = info.name
    pool.pool_type = info.pool_type
    pool.active = info.active
    pool.autostart = info.autostart
    pool.capacity, pool.allocation, pool.available = (
        info.capacity, info.allocation, info.available)
    apply_source(pool, info.source)


def _store_volumes(pool: Pool, volumes: tuple[VolumeInfo, ...]) -> None:
    for vol in volumes:
        content.store(pool, vol)
    pool.volumes.exclude(name__in=[v.name for v in volumes]).delete()


def store_pool(host: Host, info: PoolInfo) -> Pool:
    """Create or update the cached pool and its volumes from libvirt's description.

    An inactive pool lists no volumes: the cached ones are kept until it runs again.
    """
    with transaction.atomic():
        pool = Pool.objects.filter(host=host, uuid=info.uuid).first() or Pool(
            host=host, uuid=info.uuid)
        was_low = pool.pk is not None and pool.low_space
        _apply(pool, info)
        if pool.pk is None:
            pool.save()
        else:
            # Only libvirt's facts: a declaration saved meanwhile (sharing, ISO library)
            # is not overwritten with what this instance read before it.
            pool.save(update_fields=LIBVIRT_FIELDS)
            Pool.objects.filter(pk=pool.pk, shared_declared__isnull=True).update(
                shared=auto_shared(pool))
        if info.active:
            _store_volumes(pool, info.volumes)
        if pool.low_space and not was_low:
            _alert_low_space(host, pool)
    return pool


def _alert_low_space(host: Host, pool: Pool) -> None:
    raise_alert(AlertKind.POOL_LOW_SPACE, f"pool:{pool.pk}",
                f"Pool '{pool.name}' on host '{host}' is low on space: "
                f"{filesizeformat(pool.available)} free of {filesizeformat(pool.capacity)} "
                f"({pool.free_percent:.0f} %).", link=reverse("storage:pool", args=[pool.pk]))


def reconcile_pools(host: Host) -> int:
    """Refresh the host's pools and volumes; returns how many pools it has.

    What libvirt does not know (declared sharing, ISO library) is kept.
    """
    pools = list_pools(host.virt_target)
    with transaction.atomic():
        seen = [store_pool(host, info).pk for info in pools]
        host.pools.exclude(pk__in=seen).delete()
    return len(pools)


def mark_shared(host: Host, pool_name: str, shared: bool = True) -> int:
    """Declare a pool as storage other hosts can write too (NFS, SAN, cluster FS)."""
    count = 0
    for pool in host.pools.filter(name=pool_name):
        pool.shared_declared = shared
        pool.shared = effective_shared(pool)
        pool.save(update_fields=["shared_declared", "shared", "updated_at"])
        count += 1
    return count
