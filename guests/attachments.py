"""The record of the files each cached guest uses (storage.models.VolumeAttachment).

Rewritten whenever a Guest row is saved, so that every writer of the guest cache (the
inventory, creation, lifecycle actions, save images, migration) keeps it current without
knowing of it. Writes that bypass save() (queryset updates) must call `record` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from guests.models import DISK_HOLDING_STATES, Guest
from guests.placement.exclusivity import writable
from storage import attachments
from storage.attachments import Attachment, Role

# The Guest fields the records are made from.
RECORDED_FIELDS = frozenset({"devices", "state", "saved_path", "saved_volume"})
RECORDED_ROLES = (Role.DISK, Role.NEXT_BOOT_DISK, Role.SAVED_MEMORY)


def _disks(guest: Guest, key: str, role: str) -> list[Attachment]:
    return [Attachment(role=role, path=disk["source"], target=disk.get("target") or "",
                       writable=writable(disk), shareable=bool(disk.get("shareable")))
            for disk in (guest.devices or {}).get(key, []) if disk.get("source")]


def described(guest: Guest) -> list[Attachment]:
    found = [*_disks(guest, "disks", Role.DISK),
             *_disks(guest, "next_boot_disks", Role.NEXT_BOOT_DISK)]
    if guest.saved_volume_id and guest.saved_path:
        found.append(Attachment(role=Role.SAVED_MEMORY, path=guest.saved_path))
    return found


def record(guest: Guest) -> None:
    attachments.replace(guest.pk, described(guest), in_use=guest.state in DISK_HOLDING_STATES,
                        roles=RECORDED_ROLES)


def on_guest_saved(sender: Any, instance: Guest, update_fields: Any = None,
                   raw: bool = False, **kwargs: Any) -> None:
    if raw or (update_fields is not None and not RECORDED_FIELDS & set(update_fields)):
        return
    record(instance)


@contextmanager
def migration_save(guest: Guest, path: str) -> Iterator[None]:
    """Record `path` as the guest's memory saved by an offline migration while it runs."""
    attachments.add(guest.pk, Attachment(role=Role.MIGRATION_SAVE, path=path), in_use=True)
    try:
        yield
    finally:
        attachments.remove(guest.pk, Role.MIGRATION_SAVE, path)
