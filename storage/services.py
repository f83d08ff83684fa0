"""Writes on pools and volumes: libvirt first, then the cache, then the audit record."""

from __future__ import annotations

import re
from typing import Any

from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import volumes as virt
from hosts.virt.pools import PoolInfo, VolumeInfo
from storage import access, content
from storage.attachments import active_user, saved_memory_in
from storage.errors import StorageError
from storage.inventory import store_pool
from storage.models import Pool, Volume
from xenweb.audit.services import record
from xenweb.jobs.locks import active_job, hold
from xenweb.jobs.models import Job
from xenweb.jobs.services import start_job

FORMATS = ("raw", "qcow2")
VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}$")


def _failed(action: str, exc: Exception, *, user: Any, request: Any, target: Any,
            **detail: Any) -> StorageError:
    record(action, user=user, request=request, target=target, result="failed",
           message=str(exc), **detail)
    return StorageError(str(exc))


def _store_volume(pool: Pool, info: VolumeInfo) -> Volume:
    return content.store(pool, info)


def _store_pool(pool: Pool, info: PoolInfo) -> Pool:
    return store_pool(pool.host, info)


def refresh_pool(pool: Pool, *, user: Any = None, request: Any = None) -> Pool:
    """Re-scan the pool in libvirt and update the cache of it and its volumes."""
    try:
        info = virt.refresh_pool(pool.host.virt_target, pool.name)
    except VirtError as exc:
        raise _failed("pool.refresh", exc, user=user, request=request, target=pool) from exc
    _store_pool(pool, info)
    record("pool.refresh", user=user, request=request, target=pool, volumes=len(info.volumes))
    return pool


def resync_pool(pool: Pool, *, rescan: bool = False) -> None:
    """Best effort: the pool's totals and volumes after a change (no audit record);
    ``rescan`` makes libvirt look at the storage again (a change made by another host)."""
    try:
        _store_pool(pool, virt.describe_pool(pool.host.virt_target, pool.name, refresh=rescan))
    except VirtError:
        pass


def busy_job(volume: Volume) -> Job | None:
    return active_job(volume)


def check_idle(volume: Volume, doing: str) -> None:
    """Refuse to change a volume a running guest has open, or one a job is working on."""
    guest = active_user(volume)
    if guest is not None:
        raise StorageError(
            f"Volume '{volume.name}' is attached to guest '{guest.name}', which is "
            f"{guest.state}: shut the guest down (or detach the disk) before you {doing} it.")
    job = busy_job(volume)
    if job is not None:
        raise StorageError(f"Volume '{volume.name}' is busy with job #{job.pk} ({job.title}); "
                           "wait for it to finish.")


def check_not_save_image(volume: Volume, doing: str) -> None:
    """Refuse to change the content of a guest's own save image (see guests.save_images)."""
    holder = saved_memory_in(volume)
    if holder is not None:
        raise StorageError(
            f"Volume '{volume.name}' holds the saved memory of guest '{holder}': it cannot "
            f"be {doing}. Restore the guest from it, or delete it.")


def check_name(pool: Pool, name: str) -> None:
    if not VOLUME_NAME.match(name) or ".." in name:
        raise StorageError(f"'{name}' is not a valid volume name: use letters, digits, "
                           "'.', '_', '+' and '-', starting with a letter or digit, no '..'.")
    if pool.volumes.filter(name=name).exists():
        raise StorageError(f"Pool '{pool.name}' already has a volume named '{name}'.")


def create_volume(pool: Pool, *, name: str, capacity: int, fmt: str = "raw",
                  preallocate: bool = False, user: Any = None, request: Any = None) -> Volume:
    if fmt not in FORMATS:
        raise StorageError(f"Unknown volume format '{fmt}': use {' or '.join(FORMATS)}.")
    if capacity <= 0:
        raise StorageError("A volume needs a size greater than zero.")
    access.check_pool_use(pool, user, "create")
    if not pool.active:
        raise StorageError(f"Pool '{pool.name}' is not active.")
    check_name(pool, name)
    detail = {"pool": pool.name, "capacity": capacity, "format": fmt,
              "allocation": "preallocated" if preallocate else "sparse"}
    try:
        info = virt.create_volume(pool.host.virt_target, pool.name, name, capacity, fmt,
                                  preallocate=preallocate)
    except VirtError as exc:
        raise _failed("volume.create", exc, user=user, request=request, target=pool,
                      name=name, **detail) from exc
    volume = _store_volume(pool, info)
    resync_pool(pool)
    record("volume.create", user=user, request=request, target=volume, **detail)
    return volume


def resize_volume(volume: Volume, capacity: int, *, user: Any = None,
                  request: Any = None) -> Volume:
    access.check_pool_use(volume.pool, user, "resize")
    if capacity < volume.capacity:
        raise StorageError(
            f"Volume '{volume.name}' can only grow: it is {volume.capacity} bytes, "
            f"{capacity} bytes would cut data off.")
    check_idle(volume, "resize")
    check_not_save_image(volume, "resized")
    access.check_not_link(volume, "resize")
    pool = volume.pool
    try:
        with hold(volume, kind="volume.resize", title=f"Resize {volume.name}", owner=user):
            info = virt.resize_volume(pool.host.virt_target, volume.path, capacity)
    except VirtError as exc:
        raise _failed("volume.resize", exc, user=user, request=request, target=volume,
                      capacity=capacity) from exc
    before = volume.capacity
    volume = _store_volume(pool, info)
    resync_pool(pool)
    record("volume.resize", user=user, request=request, target=volume, before=before,
           capacity=volume.capacity)
    return volume


def delete_volume(volume: Volume, *, user: Any = None, request: Any = None) -> None:
    access.check_pool_use(volume.pool, user, "delete")
    check_idle(volume, "delete")
    with hold(volume, kind="volume.delete", title=f"Delete {volume.name}", owner=user):
        _delete_volume(volume, user=user, request=request)


def discard_new_volume(volume: Volume, *, user: Any = None, request: Any = None) -> None:
    """Delete a volume the app made moments ago for work that then failed or no longer
    needs it (a guest that could not be created, a staging copy): nothing else uses it, so
    no idle check and no lock. Audited as any deletion; a volume libvirt no longer has
    only loses its row."""
    _delete_volume(volume, user=user, request=request, missing_ok=True)


def _delete_volume(volume: Volume, *, user: Any, request: Any, missing_ok: bool = False) -> None:
    pool = volume.pool
    try:
        virt.delete_volume(pool.host.virt_target, volume.path)
    except VirtError as exc:
        if not (missing_ok and isinstance(exc, VirtObjectNotFound)):
            raise _failed("volume.delete", exc, user=user, request=request,
                          target=volume) from exc
    record("volume.delete", user=user, request=request, target=volume, pool=pool.name,
           path=volume.path)
    volume.delete()
    resync_pool(pool)


def _copy_size(volume: Volume) -> int:
    """What a clone writes on the host: the source file's size (the capacity for raw)."""
    pool = volume.pool
    try:
        return virt.volume_details(pool.host.virt_target, volume.path).physical
    except VirtError:
        return volume.capacity


def start_clone(volume: Volume, new_name: str, *, user: Any = None,
                request: Any = None) -> Job:
    access.check_pool_use(volume.pool, user, "clone")
    check_idle(volume, "clone")
    content.refuse_unusable(volume, "cloned")
    access.check_not_link(volume, "copy")
    check_name(volume.pool, new_name)

    return start_job("storage.tasks.clone", kind="volume.clone", owner=user,
                     title=f"Clone {volume.name} as {new_name}", target=volume,
                     params={"name": new_name}, total=_copy_size(volume), unit=Job.Unit.BYTES,
                     request=request, in_process=volume.pool.host.in_process_only)


def start_wipe(volume: Volume, *, user: Any = None, request: Any = None) -> Job:
    access.check_pool_use(volume.pool, user, "wipe")
    check_idle(volume, "wipe")
    check_not_save_image(volume, "wiped")
    access.check_not_link(volume, "wipe")

    # No total: libvirt reports no progress for a wipe, so none is shown (not a fake one).
    return start_job("storage.tasks.wipe", kind="volume.wipe", owner=user,
                     title=f"Wipe {volume.name}", target=volume, total=None, unit=Job.Unit.BYTES,
                     request=request, in_process=volume.pool.host.in_process_only)
