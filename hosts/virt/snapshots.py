"""Snapshots: libvirt domain snapshots (qcow2) and LVM snapshot volumes.

Domain snapshots (``virDomainSnapshotCreateXML`` and friends) are what QEMU/KVM and the
test driver offer: *internal* ones live inside each qcow2 image (with the memory too when
the guest runs: QEMU's ``savevm``), *external* disk-only ones start a qcow2 overlay per
disk. libvirt's Xen driver (libxl) implements none of these calls: libvirt answers
VIR_ERR_NO_SUPPORT, which becomes :class:`SnapshotsUnsupported` here.

LVM snapshot volumes are built through libvirt's logical pool: a ``<volume>`` whose
``<backingStore>`` names an existing logical volume is created with
``lvcreate --snapshot`` (storage_backend_logical.c). That works on every hypervisor,
Xen included. Reverting one is a *differential copy-back* through libvirt streams
(:func:`copy_back`): both volumes are read, and only the 4 KiB blocks that differ are
written back into the origin, so the snapshot's copy-on-write space is barely touched and
the snapshot stays valid (revert again, or delete it later). ``lvconvert --merge`` would
be the LVM-native way, but libvirt has no call for it and the appliance runs no commands
on hosts outside libvirt.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import HostDriverError, VirtOperationError, host_label, translate
from .target import VirtTarget
from .volumes import VolumeDownload, VolumeUpload

INTERNAL, EXTERNAL, NO = "internal", "external", "no"
BLOCK = 4096  # comparison granularity of copy_back (LVM's default snapshot chunk size)
READ_CHUNK = 1024 * 1024
MERGE_GAP = 64 * 1024  # differing runs closer than this are written as one range


class SnapshotsUnsupported(HostDriverError):
    """The host's libvirt driver has no domain snapshots (libvirt's Xen driver)."""


@dataclass(frozen=True)
class SnapshotDisk:
    target: str  # vda, xvda, hda…
    snapshot: str = INTERNAL  # internal, external or no
    source: str = ""  # external only: the overlay file (empty: libvirt names it)
    driver: str = ""  # external only: overlay format (qcow2)


@dataclass(frozen=True)
class SnapshotRequest:
    name: str
    description: str = ""
    memory: str = NO  # no, or internal (running guest, whole-system snapshot)
    disks: tuple[SnapshotDisk, ...] = ()
    disk_only: bool = False  # external disk-only snapshot of a running guest


@dataclass(frozen=True)
class DomainSnapshotInfo:
    name: str
    description: str
    state: str  # the guest's state when taken: running, shutoff, …
    created: int  # seconds since the epoch
    memory: str
    disks: tuple[SnapshotDisk, ...]
    parent: str
    current: bool

    @property
    def kind(self) -> str:
        external = self.memory == EXTERNAL or any(d.snapshot == EXTERNAL for d in self.disks)
        return EXTERNAL if external else INTERNAL


@dataclass(frozen=True)
class VolumeSnapshotInfo:
    name: str
    path: str
    origin: str  # path of the logical volume it snapshots
    capacity: int
    allocation: int


@dataclass(frozen=True)
class CopyBackResult:
    compared: int  # bytes read from each volume
    written: int  # bytes written back into the origin
    ranges: int  # how many ranges were written


# --- domain snapshot XML ------------------------------------------------------------------


def build_snapshot_xml(request: SnapshotRequest) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = request.name
    if request.description:
        ET.SubElement(root, "description").text = request.description
    ET.SubElement(root, "memory", snapshot=request.memory)
    if request.disks:
        disks = ET.SubElement(root, "disks")
        for disk in request.disks:
            element = ET.SubElement(disks, "disk", name=disk.target, snapshot=disk.snapshot)
            if disk.snapshot == EXTERNAL:
                if disk.driver:
                    ET.SubElement(element, "driver", type=disk.driver)
                if disk.source:
                    ET.SubElement(element, "source", file=disk.source)
    return ET.tostring(root, encoding="unicode")


def parse_snapshot_xml(xml: str, *, current: bool = False) -> DomainSnapshotInfo:
    root = SafeET.fromstring(xml)
    memory = root.find("memory")
    disks = []
    for disk in root.findall("disks/disk"):
        source = disk.find("source")
        driver = disk.find("driver")
        disks.append(SnapshotDisk(
            target=disk.get("name", ""), snapshot=disk.get("snapshot", INTERNAL),
            source=(source.get("file") or source.get("dev") or "") if source is not None else "",
            driver=driver.get("type", "") if driver is not None else "",
        ))
    created = root.findtext("creationTime", "0").strip() or "0"
    return DomainSnapshotInfo(
        name=root.findtext("name", ""), description=root.findtext("description", ""),
        state=root.findtext("state", ""), created=int(created),
        memory=memory.get("snapshot", NO) if memory is not None else NO,
        disks=tuple(disks), parent=root.findtext("parent/name", ""), current=current,
    )


def create_flags(request: SnapshotRequest) -> int:
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    if request.disk_only:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    return flags


# --- domain snapshot calls ----------------------------------------------------------------


def _translate(exc: libvirt.libvirtError, uri: str, action: str) -> Exception:
    if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
        return SnapshotsUnsupported(
            f"{host_label(uri)} cannot {action}: its libvirt driver has no domain snapshots "
            "(libvirt's Xen driver, libxl, implements none). Disks on an LVM pool can still "
            "be snapshotted as LVM snapshot volumes.",
            uri=uri, code=exc.get_error_code(), detail=str(exc))
    return translate(exc, uri, action=action)


def _domain(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    return conn.lookupByUUIDString(uuid)


def _describe(snap: libvirt.virDomainSnapshot) -> DomainSnapshotInfo:
    try:
        current = bool(snap.isCurrent(0))
    except libvirt.libvirtError:
        current = False
    return parse_snapshot_xml(snap.getXMLDesc(0), current=current)


def list_snapshots(target: VirtTarget, uuid: str) -> list[DomainSnapshotInfo]:
    """The guest's snapshots, oldest first."""
    conn = get_connection(target)
    try:
        snaps = [_describe(s) for s in _domain(conn, uuid).listAllSnapshots(0)]
    except libvirt.libvirtError as exc:
        raise _translate(exc, target.uri, f"list the snapshots of guest {uuid}") from exc
    return sorted(snaps, key=lambda s: (s.created, s.name))


def create_snapshot(target: VirtTarget, uuid: str, request: SnapshotRequest) -> DomainSnapshotInfo:
    xml = build_snapshot_xml(request)
    conn = get_connection(target)
    try:
        dom = _domain(conn, uuid)
        return _describe(dom.snapshotCreateXML(xml, create_flags(request)))
    except libvirt.libvirtError as exc:
        raise _translate(exc, target.uri,
                         f"take snapshot '{request.name}' of guest {uuid}") from exc


def revert_snapshot(target: VirtTarget, uuid: str, name: str) -> None:
    """Return the guest to the snapshot: its disks, and its memory and run state if the
    snapshot holds them (a snapshot of a shut-off guest leaves the guest shut off)."""
    conn = get_connection(target)
    try:
        dom = _domain(conn, uuid)
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)
    except libvirt.libvirtError as exc:
        raise _translate(exc, target.uri, f"revert guest {uuid} to snapshot '{name}'") from exc


def delete_snapshot(target: VirtTarget, uuid: str, name: str) -> None:
    """Delete one snapshot (its children are kept and re-parented)."""
    conn = get_connection(target)
    try:
        _domain(conn, uuid).snapshotLookupByName(name, 0).delete(0)
    except libvirt.libvirtError as exc:
        raise _translate(exc, target.uri, f"delete snapshot '{name}' of guest {uuid}") from exc


# --- LVM snapshot volumes -----------------------------------------------------------------


def build_lvm_snapshot_xml(name: str, origin: str, size: int) -> str:
    """A logical pool volume whose backing store is `origin`: libvirt runs
    ``lvcreate --name <name> -L <size> --snapshot <origin>``. `size` is the copy-on-write
    space (equal capacity and allocation keep libvirt from asking for a thin volume)."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(size)
    ET.SubElement(root, "allocation", unit="bytes").text = str(size)
    backing = ET.SubElement(root, "backingStore")
    ET.SubElement(backing, "path").text = origin
    return ET.tostring(root, encoding="unicode")


def parse_volume_backing(xml: str) -> str:
    """The backing store path of a volume ('' when it has none)."""
    return SafeET.fromstring(xml).findtext("backingStore/path", "").strip()


def _volume_snapshot(vol: libvirt.virStorageVol, origin: str) -> VolumeSnapshotInfo:
    _kind, capacity, allocation = vol.info()
    return VolumeSnapshotInfo(name=vol.name(), path=vol.path(), origin=origin,
                              capacity=capacity, allocation=allocation)


def _logical_pool(vol: libvirt.virStorageVol) -> libvirt.virStoragePool:
    pool = vol.storagePoolLookupByVolume()
    kind = SafeET.fromstring(pool.XMLDesc(0)).get("type", "")
    if kind != "logical":
        raise VirtOperationError(
            f"Volume {vol.path()} is in the {kind} pool '{pool.name()}': LVM snapshot volumes "
            "exist only in logical (LVM) pools.")
    return pool


def create_volume_snapshot(target: VirtTarget, origin: str, name: str,
                           size: int | None = None) -> VolumeSnapshotInfo:
    """An LVM snapshot of the logical volume `origin`, named `name`, with `size` bytes of
    copy-on-write space (default: the origin's size, so it can never overflow)."""
    conn = get_connection(target)
    try:
        vol = conn.storageVolLookupByPath(origin)
        pool = _logical_pool(vol)
        cow = size or vol.info()[1]
        created = pool.createXML(build_lvm_snapshot_xml(name, origin, cow), 0)
        return _volume_snapshot(created, origin)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"create the LVM snapshot '{name}' of {origin}") \
            from exc


def list_volume_snapshots(target: VirtTarget, origin: str) -> list[VolumeSnapshotInfo]:
    """The snapshot volumes of `origin` in its pool (volumes backed by it)."""
    conn = get_connection(target)
    try:
        pool = conn.storageVolLookupByPath(origin).storagePoolLookupByVolume()
        found = [_volume_snapshot(vol, origin) for vol in pool.listAllVolumes(0)
                 if parse_volume_backing(vol.XMLDesc(0)) == origin]
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"list the LVM snapshots of {origin}") from exc
    return sorted(found, key=lambda s: s.name)


def volume_exists(target: VirtTarget, path: str) -> bool:
    conn = get_connection(target)
    try:
        conn.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise translate(exc, target.uri, action=f"look up the volume {path}") from exc
    return True


def _blocks(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a byte stream into pieces of exactly `size` bytes (the last may be short)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


def differing_ranges(source: Iterable[bytes], target: Iterable[bytes], length: int, *,
                     block: int = BLOCK, merge_gap: int = MERGE_GAP,
                     progress: Callable[[int], None] | None = None) -> list[tuple[int, int]]:
    """(offset, length) ranges of the first `length` bytes where the two streams differ,
    compared `block` bytes at a time; runs closer than `merge_gap` become one range."""
    ranges: list[tuple[int, int]] = []
    offset = 0
    for a, b in zip(_blocks(source, READ_CHUNK), _blocks(target, READ_CHUNK), strict=False):
        size = min(len(a), len(b), length - offset)
        if size <= 0:
            break
        if a[:size] != b[:size]:
            for start in range(0, size, block):
                end = min(start + block, size)
                if a[start:end] == b[start:end]:
                    continue
                here = offset + start
                if ranges and here - (ranges[-1][0] + ranges[-1][1]) <= merge_gap:
                    first = ranges[-1][0]
                    ranges[-1] = (first, offset + end - first)
                else:
                    ranges.append((here, end - start))
        offset += size
        if progress is not None:
            progress(offset)
    return ranges


def copy_back(target: VirtTarget, snapshot: str, origin: str, length: int, *,
              progress: Callable[[str, int, int], None] | None = None) -> CopyBackResult:
    """Make the first `length` bytes of volume `origin` equal to volume `snapshot`,
    writing only the ranges that differ. `progress(phase, done, total)` reports the
    comparison ("compare") and the writes ("write"). Nothing may use `origin` meanwhile."""
    def compared(done: int) -> None:
        if progress is not None:
            progress("compare", done, length)

    source = VolumeDownload(target, snapshot, length=length, chunk=READ_CHUNK)
    current = VolumeDownload(target, origin, length=length, chunk=READ_CHUNK)
    try:
        ranges = differing_ranges(source, current, length, progress=compared)
    finally:
        source.abort()
        current.abort()
    total = sum(size for _offset, size in ranges)
    written = 0
    for offset, size in ranges:
        reader = VolumeDownload(target, snapshot, offset=offset, length=size, chunk=READ_CHUNK)
        with VolumeUpload(target, origin, offset=offset, length=size) as writer:
            for chunk in reader:
                writer.write(chunk)
        written += size
        if progress is not None:
            progress("write", written, total)
    return CopyBackResult(compared=length, written=written, ranges=len(ranges))
