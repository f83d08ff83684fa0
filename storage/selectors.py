"""Reads over the pool and volume cache."""

from __future__ import annotations

import re

from django.db.models import Count, QuerySet

from guests.models import Guest
from storage.models import Pool, Volume
from xenweb.ids import parse_id

# States in which a guest holds its disks open.
ACTIVE_GUEST_STATES = (
    Guest.State.RUNNING, Guest.State.BLOCKED, Guest.State.PAUSED, Guest.State.SHUTDOWN,
    Guest.State.PMSUSPENDED,
)


def pools(host_id: str | None = None) -> QuerySet[Pool]:
    queryset = Pool.objects.select_related("host").annotate(volume_count=Count("volumes")).order_by(
        "host__name", "name", "pk")
    if host_id is not None:
        queryset = queryset.filter(host_id=parse_id(host_id)) if parse_id(host_id) \
            else queryset.none()
    return queryset


def volumes(pool_id: str | None = None) -> QuerySet[Volume]:
    queryset = Volume.objects.select_related("pool", "pool__host")
    if pool_id is not None:
        queryset = queryset.filter(pool_id=parse_id(pool_id)) if parse_id(pool_id) \
            else queryset.none()
    return queryset


def guests_using(volume: Volume) -> list[Guest]:
    """Guests with a disk whose source is the volume's path (any host for shared pools)."""
    if not volume.path:
        return []
    candidates = Guest.objects.select_related("host")
    if not volume.pool.shared:
        candidates = candidates.filter(host_id=volume.pool.host_id)
    return [guest for guest in candidates
            if any(disk.get("source") == volume.path
                   for disk in (guest.devices or {}).get("disks", []))]


def active_user(volume: Volume) -> Guest | None:
    """A guest that has the volume open right now, if any."""
    return next((g for g in guests_using(volume) if g.state in ACTIVE_GUEST_STATES), None)


MIGRATION_SAVE = re.compile(r"^\.xenweb-save-([0-9a-fA-F-]{36})\.save$")


def saved_memory_in(volume: Volume) -> Guest | None:
    """The guest whose own save image the volume is (guests.save_images): such a volume
    is locked against content writes, since libxl reads the image again after the app
    checked it (no way to pin the checked definition there)."""
    found = Guest.objects.filter(saved_volume=volume).first()
    if found is None:
        # An offline migration's save file (guests.migration.job.shared_save_path), which
        # a pool refresh may list while the migration runs.
        migrating = MIGRATION_SAVE.match(volume.name)
        if migrating:
            return Guest.objects.filter(uuid=migrating[1]).first() or Guest(
                name=f"uuid {migrating[1]}", uuid=migrating[1])
    if found is not None or not volume.path:
        return found
    # The same file seen through another host's pool of shared storage.
    return Guest.objects.filter(saved_volume__isnull=False, saved_path=volume.path).first()
