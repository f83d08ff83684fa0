"""Storage volumes: create, resize, clone, wipe, delete, and streamed upload/download.

Volumes are addressed by their path (the key libvirt itself uses across pools);
callers get :class:`VolumeInfo` dataclasses and ``VirtError`` subclasses only.
Uploads and downloads go through libvirt streams (``virStorageVolUpload`` /
``virStorageVolDownload``), so they work for remote hosts as well as local ones;
with sparse streams, runs of zeros cross the wire as holes, not as bytes.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import VirtOperationError, translate
from .pools import PoolInfo, VolumeInfo, _describe, backing_of
from .target import VirtTarget

__all__ = [
    "VolumeDetails",
    "VolumeDownload",
    "VolumeUpload",
    "clone_volume",
    "content_report",
    "create_volume",
    "delete_volume",
    "describe_pool",
    "refresh_pool",
    "resize_volume",
    "volume_details",
    "wipe_volume",
]

# What one libvirt stream packet carries (VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX is 262120).
STREAM_PACKET = 256 * 1024
# libvirt's client takes bigger sends (up to its 32 MiB message limit) and is faster with
# them; the server side writes what it gets.
SEND_MAX = 1024 * 1024
_ZEROS = bytes(STREAM_PACKET)


@dataclass(frozen=True)
class VolumeDetails:
    name: str
    path: str
    format: str
    capacity: int  # virtual size
    allocation: int  # bytes used on the host
    physical: int  # size of the file/device holding it (what a download returns)
    pool: str


def _label(path: str) -> str:
    return path.rsplit("/", 1)[-1] or path


def _lookup(conn: libvirt.virConnect, path: str) -> libvirt.virStorageVol:
    return conn.storageVolLookupByPath(path)


def _info(vol: libvirt.virStorageVol) -> VolumeInfo:
    root = SafeET.fromstring(vol.XMLDesc(0))
    fmt = root.find("target/format")
    _kind, capacity, allocation = vol.info()
    return VolumeInfo(name=vol.name(), path=vol.path(),
                      format=fmt.get("type", "") if fmt is not None else "",
                      capacity=capacity, allocation=allocation, backing=_backing(root))


def _physical(vol: libvirt.virStorageVol, fallback: int) -> int:
    try:
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
    except libvirt.libvirtError:
        return fallback


def volume_details(target: VirtTarget, path: str) -> VolumeDetails:
    conn = get_connection(target)
    try:
        vol = _lookup(conn, path)
        info = _info(vol)
        return VolumeDetails(name=info.name, path=info.path, format=info.format,
                             capacity=info.capacity, allocation=info.allocation,
                             physical=_physical(vol, info.capacity),
                             pool=vol.storagePoolLookupByVolume().name())
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"read the volume {path}") from exc


_backing = backing_of


def content_report(target: VirtTarget, path: str) -> tuple[str, str]:
    """libvirt's own reading of a volume's content once its pool re-scanned it: (format,
    backing store). A dir pool probes file formats on refresh, so this is what libvirt
    (and a hypervisor it configures) will make of the bytes."""
    conn = get_connection(target)
    try:
        pool = _lookup(conn, path).storagePoolLookupByVolume()
        if pool.isActive():
            pool.refresh(0)
        root = SafeET.fromstring(_lookup(conn, path).XMLDesc(0))
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"read the volume {path}") from exc
    fmt = root.find("target/format")
    return (fmt.get("type", "") if fmt is not None else ""), _backing(root)


def describe_pool(target: VirtTarget, name: str, *, refresh: bool = False) -> PoolInfo:
    """One pool as libvirt reports it; `refresh` re-scans its volumes first."""
    conn = get_connection(target)
    try:
        pool = conn.storagePoolLookupByName(name)
        if refresh and pool.isActive():
            pool.refresh(0)
        return _describe(pool)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"read the storage pool '{name}'") from exc


def refresh_pool(target: VirtTarget, name: str) -> PoolInfo:
    return describe_pool(target, name, refresh=True)


def _volume_xml(name: str, capacity: int, allocation: int, fmt: str) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(root, "allocation", unit="bytes").text = str(allocation)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=fmt)
    if fmt == "qcow2":  # libvirt's default is still qcow2 v2 (0.10): no zero clusters
        ET.SubElement(target, "compat").text = "1.1"
    return ET.tostring(root, encoding="unicode")


def create_volume(
    target: VirtTarget, pool_name: str, name: str, capacity: int, fmt: str = "raw", *,
    preallocate: bool = False,
) -> VolumeInfo:
    """A new volume of `capacity` bytes: sparse, or with its space reserved up front."""
    flags = 0
    if preallocate and fmt == "qcow2":
        flags |= libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
    xml = _volume_xml(name, capacity, capacity if preallocate else 0, fmt)
    conn = get_connection(target)
    try:
        vol = conn.storagePoolLookupByName(pool_name).createXML(xml, flags)
        return _info(vol)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"create volume '{name}' in pool '{pool_name}'") \
            from exc


def resize_volume(target: VirtTarget, path: str, capacity: int) -> VolumeInfo:
    """Grow the volume to `capacity` bytes (never shrinks: that would destroy data)."""
    conn = get_connection(target)
    try:
        vol = _lookup(conn, path)
        _kind, current, _alloc = vol.info()
        if capacity < current:
            raise VirtOperationError(
                f"Volume '{_label(path)}' is {current} bytes: it can only grow, not shrink "
                f"to {capacity} bytes.", uri=target.uri)
        if capacity > current:
            vol.resize(capacity, 0)
        return _info(vol)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"resize the volume {path}") from exc


def _copied(pool: libvirt.virStoragePool, name: str) -> int | None:
    """How much of a volume being built exists yet (its file's size), if libvirt says."""
    try:
        vol = pool.storageVolLookupByName(name)
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
    except libvirt.libvirtError:
        return None


def clone_volume(target: VirtTarget, path: str, new_name: str, *,
                 progress: Callable[[int], None] | None = None,
                 poll_seconds: float = 1.0, fmt: str | None = None,
                 source_format: str | None = None) -> VolumeInfo:
    """A full copy of the volume, in the same pool, named `new_name`: in the same format,
    or converted to `fmt` (libvirt runs ``qemu-img convert`` on the host).

    The copy never follows a backing chain: a source in which libvirt reads a backing
    store is refused, and so is one that libvirt reads in another format than
    `source_format` (what its content was checked as; libvirt copies with the format it
    read, ``qemu-img convert -f <that>``).

    The host copies (``virStorageVolCreateXMLFrom``: no data through this process,
    reflinks where the filesystem has them) and cannot report progress or be aborted.
    With `progress`, the copy's size on the host is read every `poll_seconds` while it
    grows and passed on: an estimate (holes are skipped, a qcow2 target is compacted).
    """
    conn = get_connection(target)
    try:
        source = _lookup(conn, path)
        info = _info(source)
        backing = _backing(SafeET.fromstring(source.XMLDesc(0)))
        pool = source.storagePoolLookupByVolume()
        xml = _volume_xml(new_name, info.capacity, 0, fmt or source_format or info.format
                          or "raw")
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"clone the volume {path} as '{new_name}'") from exc
    if backing:
        raise VirtOperationError(f"Volume '{_label(path)}' has a backing store ({backing}): "
                                 "it is not copied (a copy would read the backing file).",
                                 uri=target.uri)
    if source_format is not None and (info.format or "raw") != source_format:
        raise VirtOperationError(
            f"libvirt reads volume '{_label(path)}' as {info.format or 'raw'}, not as the "
            f"{source_format} its content is: it is not copied.", uri=target.uri)
    outcome: dict[str, Any] = {}

    def copy() -> None:
        try:
            outcome["volume"] = pool.createXMLFrom(xml, source, 0)
        except libvirt.libvirtError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=copy, name=f"clone-{new_name}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(poll_seconds)
        if progress is not None and worker.is_alive():
            done = _copied(pool, new_name)
            if done is not None:
                progress(done)
    if "error" in outcome:
        raise translate(outcome["error"], target.uri,
                        action=f"clone the volume {path} as '{new_name}'") from outcome["error"]
    try:
        return _info(outcome["volume"])
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"read the clone '{new_name}'") from exc


def wipe_volume(target: VirtTarget, path: str) -> VolumeInfo:
    """Overwrite the volume's content with zeros (sparse files stay sparse). libvirt
    reports no progress for this and cannot abort it."""
    conn = get_connection(target)
    try:
        vol = _lookup(conn, path)
        vol.wipePattern(libvirt.VIR_STORAGE_VOL_WIPE_ALG_ZERO, 0)
        return _info(vol)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"wipe the volume {path}") from exc


def delete_volume(target: VirtTarget, path: str) -> None:
    conn = get_connection(target)
    try:
        _lookup(conn, path).delete(0)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"delete the volume {path}") from exc


@contextlib.contextmanager
def _file_volume(target: VirtTarget, path: str,
                 doing: str) -> Iterator[tuple[libvirt.virConnect, libvirt.virStorageVol]]:
    """The volume at `path`: of the pool that holds it, or of a transient dir pool over
    its folder when none does (a file libvirt wrote outside any pool, like a save image),
    so that the file is reached through libvirt on any host."""
    conn = get_connection(target)
    try:
        held: libvirt.virStorageVol | None = _lookup(conn, path)
    except libvirt.libvirtError:
        held = None
    if held is not None:
        yield conn, held
        return
    folder, name = path.rsplit("/", 1)
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = f"xenweb-files-{uuid.uuid4().hex[:8]}"
    ET.SubElement(ET.SubElement(root, "target"), "path").text = folder or "/"
    try:
        pool = conn.storagePoolCreateXML(ET.tostring(root, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=f"{doing} {path}") from exc
    try:
        try:
            vol = pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            raise translate(exc, target.uri, action=f"{doing} {path}") from exc
        yield conn, vol
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            pool.destroy()


def delete_file(target: VirtTarget, path: str) -> None:
    """Delete a file libvirt wrote outside any pool (a save image), through libvirt."""
    with _file_volume(target, path, "delete") as (_conn, vol):
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            raise translate(exc, target.uri, action=f"delete {path}") from exc


def read_head(target: VirtTarget, path: str, length: int) -> bytes:
    """The first `length` bytes of the volume or file at `path` (fewer where it ends),
    through a libvirt download stream: for headers, not for content."""
    with _file_volume(target, path, "read") as (conn, vol):
        try:
            size = int(vol.info()[1])
            if size <= 0:
                return b""
            stream = conn.newStream(0)
            vol.download(stream, 0, min(length, size), 0)
            chunks: list[bytes] = []
            while True:
                data = stream.recv(STREAM_PACKET)
                if not data:
                    break
                chunks.append(data)
            stream.finish()
            return b"".join(chunks)[:length]
        except libvirt.libvirtError as exc:
            raise translate(exc, target.uri, action=f"read {path}") from exc


# -- streams ----------------------------------------------------------------------------


class VolumeUpload:
    """Write bytes into a volume through a libvirt upload stream.

    ``with VolumeUpload(target, path) as up: up.write(chunk)…`` — the stream is finished
    when the block ends normally and aborted when it raises. With ``sparse=True``,
    all-zero packets become holes (only safe where the volume reads as zeros there,
    e.g. a freshly created sparse volume).
    """

    def __init__(self, target: VirtTarget, path: str, *, offset: int = 0, length: int = 0,
                 sparse: bool = False) -> None:
        self.uri = target.uri
        self.path = path
        self.sparse = sparse
        self.sent = 0
        self._pending_hole = 0
        conn = get_connection(target)
        try:
            vol = _lookup(conn, path)
            self._stream = conn.newStream(0)
            flags = libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0
            vol.upload(self._stream, offset, length, flags)
        except libvirt.libvirtError as exc:
            raise translate(exc, target.uri, action=f"upload into the volume {path}") from exc
        self._open = True

    def _error(self, exc: libvirt.libvirtError) -> Exception:
        self.abort()
        return translate(exc, self.uri, action=f"upload into the volume {self.path}")

    def _flush_hole(self) -> None:
        if self._pending_hole:
            self._stream.sendHole(self._pending_hole, 0)
            self._pending_hole = 0

    def _send(self, data: bytes) -> None:
        while data:
            data = data[self._stream.send(data):]

    def write(self, data: bytes | memoryview, *, holes: bool = True) -> None:
        """Send `data`. Runs of data go out in sends of up to SEND_MAX bytes (the whole
        `data` object itself when it is one run: no copy; libvirt takes bytes only, not a
        memoryview). With `sparse`, every all-zero STREAM_PACKET becomes a hole, unless
        ``holes=False`` (where the volume may hold stale data that must become zeros)."""
        view = memoryview(data)
        run_start = 0
        try:
            for start in range(0, len(view), STREAM_PACKET):
                packet = view[start:start + STREAM_PACKET]
                # startswith is a memcmp; comparing a memoryview with == goes byte by byte.
                if self.sparse and holes and _ZEROS.startswith(packet):
                    self._send_run(data, view, run_start, start)
                    self._pending_hole += len(packet)
                    run_start = start + len(packet)
                elif start + len(packet) - run_start >= SEND_MAX:
                    self._send_run(data, view, run_start, start + len(packet))
                    run_start = start + len(packet)
            self._send_run(data, view, run_start, len(view))
            self.sent += len(view)
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc

    def _send_run(self, data: bytes, view: memoryview, start: int, end: int) -> None:
        if end <= start:
            return
        self._flush_hole()
        whole = start == 0 and end == len(view) and isinstance(data, bytes)
        self._send(data if whole else bytes(view[start:end]))

    def hole(self, length: int) -> None:
        """Skip `length` bytes that read as zeros (sparse streams only)."""
        if not self.sparse:
            raise ValueError("holes need a sparse upload stream")
        self._pending_hole += length
        self.sent += length

    def finish(self) -> None:
        try:
            self._flush_hole()
            self._stream.finish()
            self._open = False
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc

    def abort(self) -> None:
        if self._open:
            self._open = False
            try:
                self._stream.abort()
            except libvirt.libvirtError:
                pass

    def __enter__(self) -> VolumeUpload:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


class VolumeDownload:
    """Read a volume's bytes (or `length` bytes from `offset`) through a libvirt stream.

    Iterating yields chunks of at most `chunk` bytes; holes of a sparse stream come out
    as zeros, so the reader always gets the plain byte content.
    """

    def __init__(self, target: VirtTarget, path: str, *, offset: int = 0, length: int = 0,
                 chunk: int = 1024 * 1024) -> None:
        self.uri = target.uri
        self.path = path
        self.chunk = chunk
        self.received = 0
        conn = get_connection(target)
        try:
            vol = _lookup(conn, path)
            self._stream = conn.newStream(0)
            vol.download(self._stream, offset, length,
                         libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        except libvirt.libvirtError as exc:
            raise translate(exc, target.uri, action=f"download the volume {path}") from exc
        self._open = True

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                data = self._stream.recvFlags(self.chunk, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if isinstance(data, int):  # -3: at a hole
                    hole = self._stream.recvHole(0)
                    while hole > 0:
                        size = min(hole, self.chunk)
                        hole -= size
                        self.received += size
                        yield bytes(size)
                    continue
                if not data:
                    break
                self.received += len(data)
                yield data
            self._open = False
            self._stream.finish()
        except libvirt.libvirtError as exc:
            self.abort()
            raise translate(exc, self.uri, action=f"download the volume {self.path}") from exc

    def abort(self) -> None:
        if self._open:
            self._open = False
            try:
                self._stream.abort()
            except libvirt.libvirtError:
                pass
