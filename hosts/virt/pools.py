"""Storage pools and volumes as libvirt reports them (inventory side)."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import translate


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: str
    format: str
    capacity: int
    allocation: int


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
            capacity=capacity, allocation=allocation,
        ))
    return tuple(sorted(volumes, key=lambda v: v.name))


def _describe(pool: libvirt.virStoragePool) -> PoolInfo:
    root = SafeET.fromstring(pool.XMLDesc(0))
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
        source_path=source_path, volumes=_volumes(pool),
    )


def list_pools(uri: str, *, allow_insecure: bool = False) -> list[PoolInfo]:
    conn = get_connection(uri, allow_insecure=allow_insecure)
    try:
        return sorted((_describe(p) for p in conn.listAllStoragePools(0)), key=lambda p: p.name)
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, action="list storage pools") from exc


def delete_volume_by_path(uri: str, path: str, *, allow_insecure: bool = False) -> None:
    conn = get_connection(uri, allow_insecure=allow_insecure)
    try:
        conn.storageVolLookupByPath(path).delete(0)
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, action=f"delete the volume {path}") from exc


def create_volume(
    uri: str, pool_name: str, name: str, capacity: int, fmt: str = "raw", *,
    allow_insecure: bool = False,
) -> VolumeInfo:
    """A new sparse volume of `capacity` bytes in the pool (raw or qcow2)."""
    import xml.etree.ElementTree as ET

    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=fmt)
    conn = get_connection(uri, allow_insecure=allow_insecure)
    try:
        pool = conn.storagePoolLookupByName(pool_name)
        vol = pool.createXML(ET.tostring(root, encoding="unicode"), 0)
        _kind, cap, alloc = vol.info()
        return VolumeInfo(name=vol.name(), path=vol.path(), format=fmt, capacity=cap,
                          allocation=alloc)
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, action=f"create volume '{name}' in pool '{pool_name}'") \
            from exc
