"""Writes on storage pools: define/build, start/stop, autostart, delete, ISO library.

libvirt first, then the cache, then the audit record (failures are audited too).
"""

from __future__ import annotations

from typing import Any

from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import pool_xml as px
from hosts.virt import pools as virt
from storage import access
from storage.attachments import guests_on_pool
from storage.errors import StorageError
from storage.inventory import store_pool
from storage.models import Pool
from xenweb.audit.services import record

TYPE_LABELS = {
    "dir": "Directory", "fs": "Local filesystem (block device)", "netfs": "NFS export",
    "logical": "LVM volume group", "iscsi": "iSCSI target",
}




def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else str(value).strip()


def _devices(data: dict[str, Any]) -> tuple[str, ...]:
    raw = data.get("devices") or data.get("device") or ()
    if isinstance(raw, str):
        raw = raw.replace(",", "\n").splitlines()
    return tuple(d.strip() for d in raw if str(d).strip())


def spec_from_fields(pool_type: str, data: dict[str, Any]) -> px.PoolSpec:
    """The pool spec for a type from flat form/API fields, checked (StorageError says what
    is wrong)."""
    name = _text(data, "name")
    spec: px.PoolSpec
    try:
        if pool_type == "dir":
            spec = px.DirPoolSpec(name=name, target_path=_text(data, "target_path"))
        elif pool_type == "fs":
            devices = _devices(data)
            if len(devices) != 1:
                raise StorageError("An fs pool needs exactly one source device, like /dev/sdb1.")
            spec = px.FsPoolSpec(name=name, device=devices[0],
                                 target_path=_text(data, "target_path"),
                                 format=_text(data, "source_format") or "auto")
        elif pool_type == "netfs":
            spec = px.NetfsPoolSpec(name=name, source_host=_text(data, "source_host"),
                                    source_dir=_text(data, "source_dir"),
                                    target_path=_text(data, "target_path"),
                                    format=_text(data, "source_format") or "nfs")
        elif pool_type == "logical":
            spec = px.LogicalPoolSpec(name=name, vg_name=_text(data, "source_name") or name,
                                      devices=_devices(data))
        elif pool_type == "iscsi":
            port = _text(data, "port") or "3260"
            if not port.isdigit():
                raise StorageError(f"The iSCSI port must be a number (got '{port}').")
            spec = px.IscsiPoolSpec(
                name=name, source_host=_text(data, "source_host"),
                target_iqn=_text(data, "target_iqn"), port=int(port),
                initiator_iqn=_text(data, "initiator_iqn"),
                target_path=_text(data, "target_path") or "/dev/disk/by-path")
        else:
            raise StorageError(f"Pools of type '{pool_type}' cannot be created here: use one "
                               f"of {', '.join(px.CREATABLE_TYPES)}.")
        spec.validate()
    except px.PoolSpecError as exc:
        raise StorageError(str(exc)) from exc
    return spec


def _in_use_message(pool: Pool, users: list[tuple[Any, str]], doing: str) -> str:
    named = ", ".join(f"'{g.name}' ({g.get_state_display()}, {path})" for g, path in users[:5])
    more = f" and {len(users) - 5} more" if len(users) > 5 else ""
    return (f"Pool '{pool.name}' is in use: guest {named}{more} has a disk on it. Detach the "
            f"disk or delete the guest before you {doing} the pool.")


def check_managed(pool: Pool, doing: str) -> None:
    """Pools of other types are listed read-only: the app did not define them and does not
    know what stopping or deleting them would do to the host."""
    if not pool.managed:
        raise StorageError(
            f"Pool '{pool.name}' is a {pool.pool_type or 'unknown'} pool, listed read-only: "
            f"xenweb manages {', '.join(px.CREATABLE_TYPES)} pools. Use virsh on the host "
            f"to {doing} it.")


def _failed(action: str, exc: Exception, *, user: Any, request: Any, target: Any,
            **detail: Any) -> StorageError:
    record(action, user=user, request=request, target=target, result="failed",
           message=str(exc), **detail)
    return StorageError(str(exc))


def create_pool(host: Host, spec: px.PoolSpec, *, build: bool = False, start: bool = True,
                autostart: bool = True, user: Any = None, request: Any = None) -> Pool:
    if host.pools.filter(name=spec.name).exists():
        raise StorageError(f"Host '{host}' has a storage pool named '{spec.name}' already.")
    detail = {"host": host.name, "type": spec.pool_type, "name": spec.name,
              "spec": {k: v for k, v in spec.__dict__.items() if k != "name"},
              "build": build, "start": start, "autostart": autostart}
    try:
        info = virt.define_pool(host.virt_target, spec, build=build, start=start,
                                autostart=autostart)
    except (VirtError, px.PoolSpecError) as exc:
        record("pool.create", user=user, request=request, target=host, result="failed",
               message=str(exc), **detail)
        raise StorageError(str(exc)) from exc
    pool = store_pool(host, info)
    record("pool.create", user=user, request=request, target=pool, **detail)
    return pool


def start_pool(pool: Pool, *, user: Any = None, request: Any = None) -> Pool:
    check_managed(pool, "start")
    try:
        info = virt.start_pool(pool.host.virt_target, pool.name)
    except VirtError as exc:
        raise _failed("pool.start", exc, user=user, request=request, target=pool) from exc
    pool = store_pool(pool.host, info)
    record("pool.start", user=user, request=request, target=pool)
    return pool


def stop_pool(pool: Pool, *, user: Any = None, request: Any = None) -> Pool:
    """Refused while a running guest has a disk on the pool (its storage would vanish)."""
    access.check_pool_use(pool, user, "stop the pool of")
    check_managed(pool, "stop")
    users = guests_on_pool(pool, active_only=True)
    if users:
        raise StorageError(_in_use_message(pool, users, "stop"))
    try:
        info = virt.stop_pool(pool.host.virt_target, pool.name)
    except VirtError as exc:
        raise _failed("pool.stop", exc, user=user, request=request, target=pool) from exc
    pool = store_pool(pool.host, info)
    record("pool.stop", user=user, request=request, target=pool)
    return pool


def set_autostart(pool: Pool, enabled: bool, *, user: Any = None,
                  request: Any = None) -> Pool:
    access.check_pool_use(pool, user, "change the autostart of the pool of")
    check_managed(pool, "change autostart of")
    try:
        info = virt.set_pool_autostart(pool.host.virt_target, pool.name, enabled)
    except VirtError as exc:
        raise _failed("pool.autostart", exc, user=user, request=request, target=pool,
                      enabled=enabled) from exc
    pool = store_pool(pool.host, info)
    record("pool.autostart", user=user, request=request, target=pool, enabled=enabled)
    return pool


def delete_pool(pool: Pool, *, delete_storage: bool = False, user: Any = None,
                request: Any = None) -> None:
    """Undefine the pool (refused while any guest has a disk on it); `delete_storage`
    also removes a dir pool's directory, which must be empty."""
    check_managed(pool, "delete")
    users = guests_on_pool(pool)
    if users:
        raise StorageError(_in_use_message(pool, users, "delete"))
    if delete_storage and pool.pool_type != "dir":
        raise StorageError(f"Only a dir pool's directory can be deleted with the pool; "
                           f"'{pool.name}' is a {pool.pool_type} pool: its storage stays.")
    if delete_storage and pool.volumes.exists():
        raise StorageError(f"Pool '{pool.name}' still holds {pool.volumes.count()} volume(s): "
                           "delete them first, or delete the pool without its directory.")
    detail = {"host": pool.host.name, "type": pool.pool_type, "path": pool.target_path,
              "delete_storage": delete_storage}
    try:
        virt.delete_pool(pool.host.virt_target, pool.name, delete_storage=delete_storage)
    except VirtError as exc:
        raise _failed("pool.delete", exc, user=user, request=request, target=pool,
                      **detail) from exc
    record("pool.delete", user=user, request=request, target=pool, **detail)
    pool.delete()


def set_iso_library(pool: Pool, enabled: bool, *, user: Any = None,
                    request: Any = None) -> Pool:
    """Offer (or stop offering) the pool's ISO images to the create-guest wizard. A host may
    have several ISO libraries (say a local directory and an NFS share). Never the boot
    files pool: its files are kernels and initrds only."""
    if enabled:
        access.check_not_boot_pool(pool, "CD-ROM images")
    pool.iso_library = enabled
    pool.save(update_fields=["iso_library", "updated_at"])
    record("pool.iso_library", user=user, request=request, target=pool, enabled=enabled)
    return pool
