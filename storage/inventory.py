"""Keeping the pool and volume cache in step with libvirt."""

from __future__ import annotations

from django.db import transaction

from hosts.models import Host
from hosts.virt.pools import PoolInfo, list_pools
from storage.models import Pool, Volume


def _pool_fields(info: PoolInfo) -> dict[str, object]:
    return {
        "name": info.name, "pool_type": info.pool_type, "active": info.active,
        "capacity": info.capacity, "allocation": info.allocation, "available": info.available,
    }


def reconcile_pools(host: Host) -> int:
    """Refresh the host's pools and volumes; returns how many pools it has.

    What libvirt does not know (the `shared` flag) is kept.
    """
    pools = list_pools(host.uri, allow_insecure=host.is_lab)
    with transaction.atomic():
        seen = []
        for info in pools:
            pool, _ = Pool.objects.update_or_create(
                host=host, uuid=info.uuid, defaults=_pool_fields(info)
            )
            seen.append(pool.pk)
            names = []
            for vol in info.volumes:
                Volume.objects.update_or_create(pool=pool, name=vol.name, defaults={
                    "path": vol.path, "format": vol.format, "capacity": vol.capacity,
                    "allocation": vol.allocation,
                })
                names.append(vol.name)
            pool.volumes.exclude(name__in=names).delete()
        host.pools.exclude(pk__in=seen).delete()
    return len(pools)


def mark_shared(host: Host, pool_name: str, shared: bool = True) -> int:
    """Declare a pool as storage other hosts can write too (NFS, SAN, cluster FS)."""
    return host.pools.filter(name=pool_name).update(shared=shared)
