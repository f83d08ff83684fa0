"""Boot files (guest kernels and initrds) as libvirt sees them on the host.

An administrator names a directory on the host; the app serves it as a dir pool, so the
listing and every fact about a file come from the host's libvirtd (never from the
appliance's own file system), and a file is found by pool and name, never by a path
someone typed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import VirtOperationError, translate
from .pool_xml import DirPoolSpec, build_pool_xml
from .pools import PoolInfo, _describe
from .target import VirtTarget

# The pool the app defines for a host's boot files directory (when no pool of the host
# serves that directory already).
BOOT_POOL = "xenweb-boot"
# Enough for every kernel and initrd header we recognise (bzImage's is at 0x202).
HEAD_BYTES = 4096


@dataclass(frozen=True)
class VolumeFacts:
    """What libvirt says about one volume right now."""

    name: str
    path: str
    kind: str  # file, block, dir, network…
    format: str
    capacity: int
    pool_name: str
    pool_type: str
    pool_path: str


def _pool_path(pool: libvirt.virStoragePool) -> str:
    return (SafeET.fromstring(pool.XMLDesc(0)).findtext("target/path") or "").rstrip("/")


def ensure_boot_pool(target: VirtTarget, directory: str) -> PoolInfo:
    """A running, autostarted dir pool serving `directory` (which must exist on the host):
    a pool of the host that serves it already, else the app's own ``xenweb-boot``
    (redefined when it served another directory)."""
    conn = get_connection(target)
    step = "list the storage pools"
    try:
        pool = next((p for p in conn.listAllStoragePools(0)
                     if SafeET.fromstring(p.XMLDesc(0)).get("type") == "dir"
                     and _pool_path(p) == directory), None)
        if pool is None or pool.name() != BOOT_POOL:
            _remove(conn, target.uri)  # the app's pool for a directory served no more
        if pool is None:
            step = f"define the boot files pool for {directory}"
            pool = conn.storagePoolDefineXML(
                build_pool_xml(DirPoolSpec(name=BOOT_POOL, target_path=directory)), 0)
        if not pool.isActive():
            step = f"start the boot files pool for {directory}"
            pool.create(0)
        if not pool.autostart():
            pool.setAutostart(1)
        pool.refresh(0)
        return _describe(pool)
    except libvirt.libvirtError as exc:
        error = translate(exc, target.uri, action=step)
        if "start" in step:
            error = VirtOperationError(
                f"{error} (the directory must exist on the host: create it there and put "
                "the guest kernels and initrds in it)", uri=target.uri)
        raise error from exc


def _remove(conn: libvirt.virConnect, uri: str) -> None:
    try:
        pool = conn.storagePoolLookupByName(BOOT_POOL)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return
        raise
    if pool.isActive():
        pool.destroy()
    pool.undefine()


def remove_boot_pool(target: VirtTarget) -> None:
    """Undefine the app's boot files pool, if there is one (the files stay)."""
    conn = get_connection(target)
    try:
        _remove(conn, target.uri)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"remove the storage pool '{BOOT_POOL}'") from exc


def volume_facts(target: VirtTarget, pool_name: str, name: str, *,
                 refresh: bool = True) -> VolumeFacts:
    """The volume `name` of pool `pool_name` as libvirt lists it now (after a refresh of
    the pool, so a file removed or replaced on the host is seen)."""
    conn = get_connection(target)
    try:
        pool = conn.storagePoolLookupByName(pool_name)
        if refresh and pool.isActive():
            pool.refresh(0)
        vol = pool.storageVolLookupByName(name)
        root = SafeET.fromstring(vol.XMLDesc(0))
        pool_root = SafeET.fromstring(pool.XMLDesc(0))
        fmt = root.find("target/format")
        return VolumeFacts(
            name=vol.name(), path=vol.path(), kind=root.get("type", ""),
            format=fmt.get("type", "") if fmt is not None else "",
            capacity=int(vol.info()[1]), pool_name=pool.name(),
            pool_type=pool_root.get("type", ""),
            pool_path=(pool_root.findtext("target/path") or "").rstrip("/"))
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri,
                        action=f"find '{name}' in the storage pool '{pool_name}'") from exc


def in_directory(facts: VolumeFacts) -> bool:
    """The volume's path is the pool directory joined with its name, nothing else."""
    return bool(facts.pool_path) and facts.path == posixpath.join(facts.pool_path, facts.name)


def read_head(target: VirtTarget, path: str, length: int = HEAD_BYTES) -> bytes | None:
    """The first `length` bytes of the volume at `path`, through libvirt's stream; None
    where the driver cannot download (libvirt's test driver, which never opens a file)."""
    conn = get_connection(target)
    try:
        vol = conn.storageVolLookupByPath(path)
        stream = conn.newStream(0)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"read the volume {path}") from exc
    try:
        vol.download(stream, 0, length, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        raise translate(exc, target.uri, action=f"read the volume {path}") from exc
    data = bytearray()
    try:
        # libvirt sends at most `length` bytes, then the end of the stream.
        while chunk := stream.recv(64 * 1024):
            if not isinstance(chunk, bytes):
                break
            data += chunk[:length - len(data)]
        stream.finish()
    except libvirt.libvirtError as exc:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise translate(exc, target.uri, action=f"read the volume {path}") from exc
    return bytes(data)
