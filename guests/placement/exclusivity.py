"""A volume not marked shareable is never attached writable to two running guests.

Checked when a guest starts (or is restored), when a disk is attached (live or for the
next boot) and before a migration (`conflicts(guest, target_host=…)`, for the migration
preflight). Two attachments of one volume are fine only if both are marked shareable
(``<shareable/>``, e.g. for a cluster filesystem); read-only disks and CD-ROMs never
conflict. The guest cache (kept fresh by the watcher) says which guests run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from guests.models import Guest
from hosts.models import Host
from storage.attachments import holders
from storage.models import VolumeAttachment
from storage.sharing import pool_of_disk


@dataclass(frozen=True)
class Conflict:
    disk: str  # the guest's disk target (or the new disk's source on attach)
    path: str
    other: Guest  # the running guest that has the volume attached writable
    other_disk: str

    @property
    def message(self) -> str:
        return (f"Volume {self.path} is attached writable to guest '{self.other}' on host "
                f"'{self.other.host}' ({self.other_disk}), which is {self.other.state}; it is "
                "not marked shareable, so two running guests cannot write it at once.")


def volume_key(host: Host | int, path: str) -> tuple[Any, ...]:
    """The identity of the volume at `path` as seen from `host`: the same key means the same
    storage. A path in a shared pool is the same volume on every host that has that storage
    (the storage app's key, plus the path inside the pool); other paths are local."""
    host_id = host.pk if isinstance(host, Host) else host
    pool = pool_of_disk(host if isinstance(host, Host) else Host(pk=host_id), path)
    if pool is None or not pool.shared or not pool.share_key:
        return (host_id, path)
    base = pool.target_path.rstrip("/")
    inside = path[len(base) + 1:] if base and path.startswith(base + "/") else path
    return ("shared", pool.share_key, inside)


def writable(disk: dict[str, Any]) -> bool:
    return (disk.get("device", "disk") == "disk" and not disk.get("readonly")
            and bool(disk.get("source")))


def _exclusive(disks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in disks if writable(d)]


def _holders(paths: set[str], exclude: Guest | None) -> list[VolumeAttachment]:
    # A running guest's next-boot disks count too: it may reboot into them at any time.
    return list(holders(paths, exclude_guest=exclude.pk if exclude is not None else None))


def _all_disks(guest: Guest) -> list[dict[str, Any]]:
    devices = guest.devices or {}
    return [*devices.get("disks", []), *devices.get("next_boot_disks", [])]


def disk_conflicts(disks: Iterable[dict[str, Any]], host: Host | int, *,
                   exclude: Guest | None = None) -> list[Conflict]:
    """Conflicts of `disks` (dicts like Guest.devices' disks) if used on `host` now."""
    mine = _exclusive(disks)
    if not mine:
        return []
    paths = {disk["source"] for disk in mine}
    # Keys hold the path, so only attachments of the same path can be the same volume.
    others = _holders(paths, exclude)
    keys: dict[tuple[int, str], tuple[Any, ...]] = {}

    def key(host_id: int, path: str) -> tuple[Any, ...]:
        if (host_id, path) not in keys:
            keys[(host_id, path)] = volume_key(host_id, path)
        return keys[(host_id, path)]

    host_id = host.pk if isinstance(host, Host) else host
    found = []
    for disk in mine:
        for theirs in others:
            if disk.get("shareable") and theirs.shareable:
                continue
            if key(theirs.guest.host_id, theirs.path) == key(host_id, disk["source"]):
                found.append(Conflict(disk.get("target") or disk["source"], disk["source"],
                                      theirs.guest, theirs.target))
    return found


def conflicts(guest: Guest, target_host: Host | None = None) -> list[Conflict]:
    """Why `guest` may not run (on `target_host`, default its own host) now: the running
    guests that have one of its volumes attached writable without both marking it
    shareable."""
    host = target_host or guest.host
    return disk_conflicts(_all_disks(guest), host, exclude=guest)


def explain(found: list[Conflict]) -> str:
    return " ".join(conflict.message for conflict in found)
