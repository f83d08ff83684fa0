"""Where a guest's saved memory goes, and what may be restored.

No operator-supplied host path ever reaches libvirt here. A save goes into a new volume
the app creates in a file pool the app manages on the guest's host (chosen by the app, or
by pool id), recorded on the guest; on the demo host (libvirt's test driver, which writes
from inside the web process) into the data dir's ``saves`` folder under the guest's UUID.

A restore takes the guest's own recorded save, or (on QEMU hosts) a volume chosen by id
on the guest's host. Before libvirt sees the image, the app reads the domain XML in its
header itself (hosts.virt.save_image; never libvirt's saveImageGetXMLDesc, which on QEMU
runs the emulator the untrusted XML names) and compares it with the guest's definition
(hosts.virt.save_xml): the one recorded at save time for its own save, the persistent
one otherwise. QEMU then restores with that checked XML (``dxml``), so a change to the
image after the check does not count. libxl and the test driver take no ``dxml`` and read
the image again themselves: there only the guest's own save is restored, a volume the app
created and has kept locked since (no upload, wipe, resize or attaching:
storage.services.check_not_save_image, guests.devices, guests.create).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from guests.errors import GuestError
from guests.lifecycle import check_allowed
from guests.models import Guest
from hosts.virt import (
    HostAuthError,
    HostDriverError,
    HostUnreachable,
    VirtError,
    VirtTarget,
    parse_uri,
    save_image,
    save_xml,
)
from hosts.virt import domains as virt
from hosts.virt.volumes import delete_file
from storage.access import is_boot_pool, why_not_a_disk
from storage.attachments import active_user
from storage.errors import StorageError
from storage.models import Pool, Volume

# Pools whose volumes are plain files: libvirt's save writes a file.
FILE_POOL_TYPES = ("dir", "fs", "netfs")
SAVE_SUFFIX = ".save"
# A save image is the guest's memory plus a header and device state.
SAVE_OVERHEAD = 64 * 1024 * 1024
# Where versions before save volumes put the app's own saves (kept restorable where the
# driver can show the image's XML).
LEGACY_SAVE_DIRS = {"Xen": "/var/lib/libvirt/libxl/save", "QEMU": "/var/lib/libvirt/qemu/save"}


class SaveImageRefused(GuestError):
    """The save or restore request itself is wrong (bad pool/volume, foreign image): 4xx."""


@dataclass(frozen=True)
class RestoreSource:
    path: str
    label: str  # how messages name it
    volume: Volume | None = None
    own: bool = False  # the app's own, recorded save of this guest
    expected_xml: str = ""  # the definition the image must hold ("" = the guest's current)
    legacy: bool = False


def _quiet(_message: str) -> None:
    pass


def writes_locally(guest: Guest) -> bool:
    """libvirt's test driver runs inside this process: its saves land on the appliance."""
    return parse_uri(guest.host.uri).driver == "test"


def demo_save_path(guest: Guest) -> Path:
    return Path(settings.DATA_DIR) / "saves" / f"{guest.uuid}{SAVE_SUFFIX}"


def legacy_save_path(guest: Guest) -> str | None:
    base = LEGACY_SAVE_DIRS.get(guest.host.hypervisor_type)
    return f"{base}/{guest.name}-{guest.uuid}{SAVE_SUFFIX}" if base else None


def needed_bytes(guest: Guest) -> int:
    return max(guest.max_memory_mib, guest.memory_mib) * 1024 * 1024 + SAVE_OVERHEAD


def volume_name(guest: Guest) -> str:
    """``<guest name, made safe>-<time>.save``: letters, digits, '-', '_', '+' only, so no
    '/', no '..' and no leading '.', whatever the guest is called on its host."""
    safe = re.sub(r"[^A-Za-z0-9_+-]+", "-", guest.name).strip("-_+")[:80] or "guest"
    return f"{safe}-{str(guest.uuid)[:8]}-{timezone.now():%Y%m%d-%H%M%S}{SAVE_SUFFIX}"


# -- save -------------------------------------------------------------------------------


def _unsuitable(pool: Pool, guest: Guest) -> str:
    """Why `pool` cannot take the guest's save image ("" when it can)."""
    if pool.host_id != guest.host_id:
        return f"pool '{pool}' is not on the guest's host {guest.host}"
    if pool.pool_type not in FILE_POOL_TYPES or not pool.managed:
        return (f"pool '{pool}' is a {pool.pool_type or 'unknown'} pool: save images go into "
                f"file pools ({', '.join(FILE_POOL_TYPES)})")
    if pool.iso_library:
        return f"pool '{pool}' is an ISO library"
    if is_boot_pool(pool):
        return f"pool '{pool}' serves the host's boot files directory"
    if not pool.active:
        return f"pool '{pool}' is not active"
    if pool.available and pool.available < needed_bytes(guest):
        return (f"pool '{pool}' has {pool.available // 2**20} MiB free; the save needs about "
                f"{needed_bytes(guest) // 2**20} MiB")
    return ""


def choose_pool(guest: Guest, pool_id: int | None) -> Pool:
    """The pool for a save image: the one asked for (checked), else the pool holding the
    guest's first disk if it can, else the suitable pool with the most free space."""
    if pool_id is not None:
        pool = Pool.objects.select_related("host").filter(pk=pool_id).first()
        if pool is None:
            raise SaveImageRefused(f"No pool #{pool_id}.")
        reason = _unsuitable(pool, guest)
        if reason:
            raise SaveImageRefused(f"Cannot save '{guest}' there: {reason}.")
        return pool
    pools = list(Pool.objects.select_related("host").filter(host=guest.host))
    if not pools:
        from storage.inventory import reconcile_pools

        with contextlib.suppress(VirtError):
            reconcile_pools(guest.host)
        pools = list(Pool.objects.select_related("host").filter(host=guest.host))
    suitable = [pool for pool in pools if not _unsuitable(pool, guest)]
    first_disk = next(iter(guest.devices.get("disks", [])), {}).get("source", "")
    for pool in suitable:
        if first_disk and pool.volumes.filter(path=first_disk).exists():
            return pool
    if suitable:
        return max(suitable, key=lambda pool: pool.available)
    raise GuestError(
        f"{guest.host} has no active file pool ({', '.join(FILE_POOL_TYPES)}) with about "
        f"{needed_bytes(guest) // 2**20} MiB free for the save image of '{guest}': create "
        "one (Storage) or free space.")


def check_save_request(guest: Guest, pool_id: int | None) -> None:
    """What can be refused before the job is queued."""
    if writes_locally(guest):
        if pool_id is not None:
            raise SaveImageRefused(
                "The demo host keeps save images in the appliance's data directory: it "
                "takes no pool.")
        return
    if pool_id is not None:
        choose_pool(guest, pool_id)


def _record(guest: Guest, path: str, volume: Volume | None, xml: str) -> None:
    guest.saved_path, guest.saved_volume, guest.saved_definition = path, volume, xml
    guest.save(update_fields=["saved_path", "saved_volume", "saved_definition"])


def save_guest(guest: Guest, pool_id: int | None, *, user: Any = None,
               log: Any = None) -> dict[str, Any]:
    """Save the guest's memory into a new app-made location; returns what the job
    reports. The previous save of the guest (stale once it ran again) is deleted."""
    from storage import services as storage

    log = log or _quiet
    check_allowed(guest, "save")
    host, uuid = guest.host.virt_target, str(guest.uuid)
    previous = _own_volume(guest)
    if writes_locally(guest):
        path = demo_save_path(guest)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        if path.is_symlink():  # the test driver's save follows one
            path.unlink()
        log(f"Saving the memory of '{guest}' to the appliance's saves folder")
        xml = virt.save(host, uuid, str(path))
        _record(guest, str(path), None, xml)
        return {"guest": guest.pk, "path": str(path)}
    pool = choose_pool(guest, pool_id)
    name = volume_name(guest)
    before = (guest.saved_path, guest.saved_volume, guest.saved_definition)
    try:
        # Recorded on the guest in the same transaction that stores the volume's row: it
        # is locked against uploads (storage.services.check_not_save_image) from the first
        # moment anyone can name it, not only once the save is written.
        with transaction.atomic():
            volume = storage.create_volume(pool, name=name, capacity=needed_bytes(guest),
                                           user=user)
            _record(guest, volume.path, volume, "")
    except StorageError as exc:
        raise GuestError(f"Cannot create the save volume: {exc}") from exc
    log(f"Saving the memory of '{guest}' into volume '{name}' of pool '{pool}'")
    try:
        xml = virt.save(host, uuid, volume.path)
    except VirtError:
        _record(guest, *before)
        with contextlib.suppress(StorageError):
            storage.delete_volume(volume, user=user)
        raise
    storage.resync_pool(pool, rescan=True)
    volume.refresh_from_db()
    _record(guest, volume.path, volume, xml)
    if previous is not None and previous.pk != volume.pk:
        try:
            storage.delete_volume(previous, user=user)
            log(f"Deleted the previous save image '{previous.name}'")
        except StorageError as exc:
            log(f"The previous save image '{previous.name}' was kept: {exc}")
    return {"guest": guest.pk, "volume": volume.pk, "pool": pool.pk, "path": volume.path}


def _own_volume(guest: Guest) -> Volume | None:
    volume = guest.saved_volume
    if volume is None or volume.path != guest.saved_path:
        return None
    return volume


# -- restore ----------------------------------------------------------------------------


def _chosen_volume(guest: Guest, volume_id: int) -> RestoreSource:
    volume = Volume.objects.select_related("pool", "pool__host").filter(pk=volume_id).first()
    if volume is None:
        raise SaveImageRefused(f"No volume #{volume_id}.")
    if volume.pool.host_id != guest.host_id:
        raise SaveImageRefused(
            f"Volume '{volume.name}' is on {volume.pool.host}, not on {guest.host} where "
            f"'{guest}' is: a guest is restored from a volume of its own host.")
    if writes_locally(guest):
        raise SaveImageRefused(
            "The demo host's volumes hold no data: only the guest's own save can be "
            "restored there.")
    if volume.pool.pool_type not in FILE_POOL_TYPES:
        raise SaveImageRefused(
            f"Volume '{volume.name}' is in a {volume.pool.pool_type or 'unknown'} pool: save "
            f"images are files in file pools ({', '.join(FILE_POOL_TYPES)}).")
    reason = why_not_a_disk(volume)
    if reason:  # a boot file, or a file reached through a link
        raise SaveImageRefused(f"{reason} It is not a save image.")
    user = active_user(volume)
    if user is not None:
        raise SaveImageRefused(f"Volume '{volume.name}' is a disk of the running guest "
                               f"'{user}': it is not a save image.")
    own = _own_volume(guest)
    if own is not None and own.pk == volume.pk:
        return RestoreSource(path=volume.path, label=f"volume '{volume.name}'", volume=volume,
                             own=True, expected_xml=guest.saved_definition)
    return RestoreSource(path=volume.path, label=f"volume '{volume.name}'", volume=volume)


def restore_source(guest: Guest, volume_id: int | None) -> RestoreSource:
    """What a restore would read: the chosen volume, or the guest's own save."""
    if volume_id is not None:
        return _chosen_volume(guest, volume_id)
    if not guest.saved_path:
        raise SaveImageRefused(f"Guest '{guest}' has no saved memory to restore: save it "
                               "first, or choose a volume holding a save image.")
    if writes_locally(guest):
        path = demo_save_path(guest)
        if guest.saved_path != str(path) or not os.path.lexists(path):
            raise SaveImageRefused(f"The saved memory of '{guest}' is gone.")
        return RestoreSource(path=str(path), label="its save", own=True,
                             expected_xml=guest.saved_definition)
    own = _own_volume(guest)
    if own is not None:
        return _chosen_volume(guest, own.pk)
    if guest.saved_path == legacy_save_path(guest):
        return RestoreSource(path=guest.saved_path, label=f"the save file {guest.saved_path}",
                             legacy=True)
    raise SaveImageRefused(
        f"The save image volume of '{guest}' is gone, or it was saved to a path given by "
        "hand before this version: restore from a volume holding a save image instead.")


def check_restore_request(guest: Guest, volume_id: int | None) -> None:
    """Before the job is queued: the source exists and holds this guest's save image (the
    job checks again right before it restores)."""
    verified_definition(guest, restore_source(guest, volume_id))


def takes_definition(guest: Guest) -> bool:
    """Whether the guest's driver restores with a definition the app passes (QEMU), so
    that what the app checked is what runs, whatever the image holds by then. libxl and
    the test driver restore with the definition inside the image."""
    return guest.host.hypervisor_type == "QEMU"


def verified_definition(guest: Guest, source: RestoreSource) -> str:
    """The domain XML inside the image, once found to be the guest's own (to restore
    with). SaveImageRefused when it is no save image, of another guest, or changed.

    The header is read by the app itself (hosts.virt.save_image), never by libvirt's
    saveImageGetXMLDesc: QEMU's driver would run the emulator an untrusted image names."""
    host = guest.host.virt_target
    label = source.label[:1].upper() + source.label[1:]
    if not source.own and not source.legacy and not takes_definition(guest):
        raise SaveImageRefused(
            f"{guest.host}'s hypervisor driver restores a guest with the definition inside "
            f"the image, which could change after the check: only the guest's own save "
            f"(made by xenweb and locked since) is restored there, not {source.label}.")
    return checked_image(host, source.path, uuid=str(guest.uuid), label=label,
                         expected=lambda: source.expected_xml or virt.domain_xml(
                             host, str(guest.uuid), inactive=True),
                         guest_label=str(guest))


def checked_image(host: VirtTarget, path: str, *, uuid: str, label: str, expected: Any,
                  guest_label: str = "") -> str:
    """The domain XML in the save image at `path` on `host`, read by the app itself,
    once it is found to be the guest `uuid`'s and to differ from `expected()` (the
    definition the save ran with, or the guest's own) only in what libvirt itself changes.
    SaveImageRefused otherwise; GuestError when the host cannot be asked."""
    guest_label = guest_label or uuid
    try:
        image_xml = save_image.read_xml(host, path)
    except save_image.SaveImageFormatError as exc:
        raise SaveImageRefused(f"{label} holds no libvirt save image: {exc}.") from exc
    except (HostUnreachable, HostAuthError, HostDriverError) as exc:
        raise GuestError(str(exc)) from exc
    except VirtError as exc:
        raise SaveImageRefused(f"{label} cannot be read as a save image: {exc}") from exc
    try:
        image_uuid, name = save_xml.identity(image_xml)
        if image_uuid != uuid.lower():
            raise SaveImageRefused(f"{label} holds the memory of guest '{name}' "
                                   f"({image_uuid}), not of '{guest_label}'.")
        problems = save_xml.differences(image_xml, expected())
    except save_xml.SaveImageXmlError as exc:
        raise SaveImageRefused(f"{label}: {exc}") from exc
    except VirtError as exc:
        raise GuestError(str(exc)) from exc
    if problems:
        raise SaveImageRefused(
            f"{label} holds a definition of '{guest_label}' that differs from the guest's "
            f"own, so it was not restored: " + "; ".join(problems))
    return image_xml


def restore_guest(guest: Guest, volume_id: int | None, *, user: Any = None,
                  log: Any = None) -> dict[str, Any]:
    log = log or _quiet
    check_allowed(guest, "restore")
    source = restore_source(guest, volume_id)
    checked = verified_definition(guest, source)
    log(f"Restoring '{guest}' from {source.label}")
    virt.restore(guest.host.virt_target, source.path,
                 dxml=checked if takes_definition(guest) else None)
    if source.own or source.legacy:
        _discard(guest, source, user=user, log=log)
        _record(guest, "", None, "")
    return {"guest": guest.pk, "restored_from": source.label}


def _discard(guest: Guest, source: RestoreSource, *, user: Any, log: Any) -> None:
    """The app's own save image, restored: deleted so saves do not fill the host. A
    volume the operator chose is theirs and kept."""
    from storage import services as storage

    try:
        if source.volume is not None:
            storage.delete_volume(source.volume, user=user)
        elif writes_locally(guest):
            Path(source.path).unlink(missing_ok=True)
        else:
            delete_file(guest.host.virt_target, source.path)
    except (StorageError, VirtError, OSError) as exc:
        log(f"The save image {source.label} was kept: {exc}")
