"""Who uses a volume: one query over the attachment records (storage.models.VolumeAttachment).

Guests write the records whenever a cached guest changes (guests.attachments); storage only
reads them. A file in a pool that is not shared concerns the pool's host's guests only; a
shared pool's file is the same file for every host's guests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet

from storage.models import Pool, Volume, VolumeAttachment

Role = VolumeAttachment.Role

# Pools whose volumes are files or LVs under the target path: a guest disk below that
# path is on the pool even when the pool is stopped and lists no volumes.
PATH_TYPES = ("dir", "fs", "netfs", "logical")
# An offline migration's save file on shared storage (guests.migration.job.shared_save_path),
# which a pool refresh may list while the migration runs and which a failed migration keeps.
MIGRATION_SAVE = re.compile(r"^\.xenweb-save-([0-9a-fA-F-]{36})\.save$")


@dataclass(frozen=True)
class Attachment:
    """One file a guest uses, as its writer describes it."""

    role: str
    path: str
    target: str = ""
    writable: bool = False
    shareable: bool = False


def replace(guest_id: int, attachments: Iterable[Attachment], *, in_use: bool,
            roles: Iterable[str]) -> None:
    """Make the guest's records of `roles` equal `attachments`."""
    rows = [VolumeAttachment(guest_id=guest_id, role=a.role, path=a.path, target=a.target,
                             writable=a.writable, shareable=a.shareable, in_use=in_use)
            for a in attachments if a.path]
    with transaction.atomic():
        VolumeAttachment.objects.filter(guest_id=guest_id, role__in=list(roles)).delete()
        VolumeAttachment.objects.bulk_create(rows)


def add(guest_id: int, attachment: Attachment, *, in_use: bool) -> None:
    VolumeAttachment.objects.get_or_create(
        guest_id=guest_id, role=attachment.role, path=attachment.path,
        defaults={"target": attachment.target, "writable": attachment.writable,
                  "shareable": attachment.shareable, "in_use": in_use})


def remove(guest_id: int, role: str, path: str) -> None:
    VolumeAttachment.objects.filter(guest_id=guest_id, role=role, path=path).delete()


def _disks(path_filter: Q, *, host_id: int | None) -> QuerySet[VolumeAttachment]:
    found = VolumeAttachment.objects.filter(path_filter, role=Role.DISK).select_related(
        "guest", "guest__host")
    if host_id is not None:
        found = found.filter(guest__host_id=host_id)
    return found.order_by("guest__host__name", "guest__name", "guest_id", "target")


def _scope(pool: Pool) -> int | None:
    return None if pool.shared else pool.host_id


def _unique_guests(attachments: Iterable[VolumeAttachment]) -> list[Any]:
    seen: dict[int, Any] = {}
    for attachment in attachments:
        seen.setdefault(attachment.guest_id, attachment.guest)
    return list(seen.values())


def guests_using(volume: Volume) -> list[Any]:
    """Guests with a disk whose source is the volume's path (any host's for shared pools)."""
    if not volume.path:
        return []
    return _unique_guests(_disks(Q(path=volume.path), host_id=_scope(volume.pool)))


def active_user(volume: Volume) -> Any | None:
    """A guest that has the volume open as a disk right now, if any."""
    if not volume.path:
        return None
    found = _disks(Q(path=volume.path), host_id=_scope(volume.pool)).filter(in_use=True).first()
    return found.guest if found is not None else None


def saved_memory_in(volume: Volume) -> str | None:
    """Whose saved memory the volume holds (a guest's name), if it holds any: such a
    volume is locked against content writes, since libxl reads the image again after the
    app checked it (there is no way to pin the checked definition there)."""
    own = volume.saved_memory_of.first() if volume.pk else None
    if own is not None:
        return own.name
    if volume.path:
        # The same file seen through another host's pool of shared storage, or an offline
        # migration's save file while the migration runs.
        found = VolumeAttachment.objects.filter(
            path=volume.path, role__in=(Role.SAVED_MEMORY, Role.MIGRATION_SAVE)).select_related(
            "guest").first()
        if found is not None:
            return found.guest.name
    migrating = MIGRATION_SAVE.match(volume.name)
    return f"uuid {migrating[1]}" if migrating else None


def _on_pool_filter(pool: Pool) -> Q:
    paths = list(pool.volumes.exclude(path="").values_list("path", flat=True))
    found = Q(path__in=paths)
    prefix = pool.target_path.rstrip("/")
    if pool.pool_type in PATH_TYPES and prefix:
        found |= Q(path__startswith=prefix + "/")
    return found


def guests_on_pool(pool: Pool, *, active_only: bool = False) -> list[tuple[Any, str]]:
    """(guest, disk path) for each of the pool's host's guests with a disk on the pool (the
    first such disk)."""
    disks = _disks(_on_pool_filter(pool), host_id=pool.host_id)
    if active_only:
        disks = disks.filter(in_use=True)
    found: dict[int, tuple[Any, str]] = {}
    for disk in disks.order_by("guest__name", "guest_id", "target"):
        found.setdefault(disk.guest_id, (disk.guest, disk.path))
    return list(found.values())


def users_by_path(pool: Pool) -> dict[str, list[Any]]:
    """Volume path -> guests with that disk, read once for a whole pool (the same guests as
    guests_using per volume)."""
    paths = list(pool.volumes.exclude(path="").values_list("path", flat=True))
    found: dict[str, list[Any]] = {}
    for disk in _disks(Q(path__in=paths), host_id=_scope(pool)):
        users = found.setdefault(disk.path, [])
        if all(user.pk != disk.guest_id for user in users):
            users.append(disk.guest)
    return found


def holders(paths: Iterable[str], *, exclude_guest: int | None = None
            ) -> QuerySet[VolumeAttachment]:
    """Writable disks (now or from the next boot) at `paths` of guests that run."""
    found = VolumeAttachment.objects.filter(
        path__in=list(paths), role__in=(Role.DISK, Role.NEXT_BOOT_DISK), writable=True,
        in_use=True).select_related("guest", "guest__host")
    if exclude_guest is not None:
        found = found.exclude(guest_id=exclude_guest)
    return found.order_by("guest__host__name", "guest__name", "guest_id", "role", "target")


def free_for_a_disk(host_id: int) -> QuerySet[Volume]:
    """Volumes of the host's active pools that no guest holds as a disk (shareable disks
    excepted) and that are neither ISO images nor saved memory: what a list of volumes to
    attach offers."""
    held = VolumeAttachment.objects.filter(
        role__in=(Role.DISK, Role.NEXT_BOOT_DISK), shareable=False).values("path")
    return (Volume.objects.filter(pool__host_id=host_id, pool__active=True)
            .exclude(format="iso").exclude(path="").filter(saved_memory_of=None)
            .exclude(path__in=held.filter(guest__host_id=host_id))
            .exclude(pool__shared=True, path__in=held)
            .select_related("pool", "pool__host").order_by("pool__name", "name"))
