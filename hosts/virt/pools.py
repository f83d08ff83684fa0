"""Storage pools and volumes as libvirt reports them (inventory side)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import VirtOperationError, translate
from .pool_xml import BUILDABLE_TYPES, PoolSource, PoolSpec, build_pool_xml, parse_pool_source
from .target import VirtTarget


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: str
    format: str
    capacity: int
    allocation: int
    backing: str = ""  # the backing store libvirt reads in the volume ("" when none)


def backing_of(root: Any) -> str:
    """The backing store in a volume's XML ("" when none)."""
    store = root.find("backingStore")
    if store is None:
        return ""
    return (store.findtext("path") or "").strip() or "(a backing store)"


@dataclass(frozen=True)
class PoolInfo:
    uuid: str
    name: str
    pool_type: str
    active: bool
    autostart: bool
    capacity: int
    allocation: int
    available: int
    target_path: str
    source_host: str  # NFS/iSCSI server
    source_path: str  # NFS export, iSCSI target, VG device…
    volumes: tuple[VolumeInfo, ...]
    source: PoolSource = field(default_factory=lambda: PoolSource(pool_type=""))


def _volumes(pool: libvirt.virStoragePool) -> tuple[VolumeInfo, ...]:
    if not pool.isActive():
        return ()
    volumes = []
    for vol in pool.listAllVolumes(0):
        try:
            root = SafeET.fromstring(vol.XMLDesc(0))
            _kind, capacity, allocation = vol.info()
        except libvirt.libvirtError as exc:
            # On shared storage another host may have deleted it since the last refresh.
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                continue
            raise
        fmt = root.find("target/format")
        volumes.append(VolumeInfo(
            name=vol.name(), path=vol.path(),
            format=fmt.get("type", "") if fmt is not None else "",
            capacity=capacity, allocation=allocation, backing=backing_of(root),
        ))
    return tuple(sorted(volumes, key=lambda v: v.name))


def _describe(pool: libvirt.virStoragePool) -> PoolInfo:
    xml = pool.XMLDesc(0)
    root = SafeET.fromstring(xml)
    _state, capacity, allocation, available = pool.info()
    host = root.find("source/host")
    source_dir = root.find("source/dir")
    source_device = root.find("source/device")
    source_path = (
        (source_dir.get("path", "") if source_dir is not None else "")
        or (source_device.get("path", "") if source_device is not None else "")
        or root.findtext("source/name", "")
    )
    return PoolInfo(
        uuid=pool.UUIDString(), name=pool.name(), pool_type=root.get("type", ""),
        active=bool(pool.isActive()), autostart=bool(pool.autostart()),
        capacity=capacity, allocation=allocation, available=available,
        target_path=root.findtext("target/path", ""),
        source_host=host.get("name", "") if host is not None else "",
        source_path=source_path, volumes=_volumes(pool), source=parse_pool_source(xml),
    )


def list_pools(target: VirtTarget) -> list[PoolInfo]:
    conn = get_connection(target)
    try:
        return sorted((_describe(p) for p in conn.listAllStoragePools(0)), key=lambda p: p.name)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="list storage pools") from exc


def delete_volume_by_path(target: VirtTarget, path: str) -> None:
    conn = get_connection(target)
    try:
        conn.storageVolLookupByPath(path).delete(0)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"delete the volume {path}") from exc


# ---- pool lifecycle -----------------------------------------------------------------------

def _pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    return conn.storagePoolLookupByName(name)


def define_pool(target: VirtTarget, spec: PoolSpec, *, build: bool = False, start: bool = True,
                autostart: bool = True) -> PoolInfo:
    """Define the pool; optionally build its storage (mkdir, mkfs on an empty device,
    vgcreate), start it and mark it autostart. Nothing stays defined when a step fails."""
    xml = build_pool_xml(spec)
    if build and spec.pool_type not in BUILDABLE_TYPES:
        raise VirtOperationError(f"A {spec.pool_type} pool has nothing to build: its storage "
                                 "exists on the network already.", uri=target.uri)
    conn = get_connection(target)
    step = f"define the storage pool '{spec.name}'"
    try:
        pool = conn.storagePoolDefineXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=step) from exc
    try:
        if build:
            step = f"build the storage of pool '{spec.name}'"
            # NO_OVERWRITE: mkfs/vgcreate refuse a device that holds data already.
            flags = libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE if spec.pool_type in (
                "fs", "logical") else 0
            pool.build(flags)
        if start:
            step = f"start the storage pool '{spec.name}'"
            pool.create(0)
        if autostart:
            step = f"mark the storage pool '{spec.name}' autostart"
            pool.setAutostart(1)
        return _describe(pool)
    except libvirt.libvirtError as exc:
        error = translate(exc, target.uri, action=step)
        try:
            if pool.isActive():
                pool.destroy()
            pool.undefine()
        except libvirt.libvirtError:
            pass
        raise error from exc


def _pool_call(target: VirtTarget, name: str, action: str,
               work: Callable[[libvirt.virStoragePool], object]) -> PoolInfo:
    conn = get_connection(target)
    try:
        pool = _pool(conn, name)
        work(pool)
        return _describe(pool)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"{action} the storage pool '{name}'") from exc


def start_pool(target: VirtTarget, name: str) -> PoolInfo:
    def work(pool: libvirt.virStoragePool) -> None:
        if not pool.isActive():
            pool.create(0)
    return _pool_call(target, name, "start", work)


def stop_pool(target: VirtTarget, name: str) -> PoolInfo:
    def work(pool: libvirt.virStoragePool) -> None:
        if pool.isActive():
            pool.destroy()
    return _pool_call(target, name, "stop", work)


def set_pool_autostart(target: VirtTarget, name: str, enabled: bool) -> PoolInfo:
    return _pool_call(target, name, "change autostart of",
                      lambda pool: pool.setAutostart(1 if enabled else 0))


def delete_pool(target: VirtTarget, name: str, *, delete_storage: bool = False) -> None:
    """Stop and undefine the pool; `delete_storage` also removes its (empty) directory."""
    conn = get_connection(target)
    step = f"find the storage pool '{name}'"
    try:
        pool = _pool(conn, name)
        if delete_storage:
            kind = SafeET.fromstring(pool.XMLDesc(0)).get("type", "")
            if kind != "dir":
                raise VirtOperationError(
                    f"Only a dir pool's storage can be deleted from here; '{name}' is a {kind} "
                    "pool: remove its storage on the storage side.", uri=target.uri)
        if pool.isActive():
            step = f"stop the storage pool '{name}'"
            pool.destroy()
        if delete_storage:
            step = f"delete the directory of storage pool '{name}'"
            pool.delete(libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
        step = f"undefine the storage pool '{name}'"
        pool.undefine()
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=step) from exc
