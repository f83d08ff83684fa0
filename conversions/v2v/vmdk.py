"""VMDK descriptors, checked before qemu-img ever opens the image.

Supported: monolithicSparse and streamOptimized (one file, descriptor embedded),
monolithicFlat, vmfs, twoGbMaxExtentSparse and twoGbMaxExtentFlat (a text descriptor
naming extent files). Every extent must be a plain file name beside the descriptor
(no paths, no `..`, no links); child disks (`parentCID`, `parentFileNameHint`) and raw
device mappings are refused; the extents' declared sizes must match the files, and an
uncompressed sparse extent's grain tables must point inside its file (`check_grains`: qemu
reads a grain past the end of a file cut short as zeros, and converts it without a word).
Then qemu-img, with `-f vmdk` only, must agree: no backing file, same extents, same size.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from conversions.v2v import qemu
from conversions.v2v.proposal import MAX_DISK_BYTES, ImportRefused, whole_number
from conversions.v2v.sources import sibling

SECTOR = 512
SPARSE_MAGIC = b"KDMV"
ESX_SPARSE_MAGIC = b"COWD"
HEADER = struct.Struct("<4sIIQQQQ")  # magic, version, flags, capacity, grain, desc off/size
# ... then entries per grain table, redundant and primary grain directory offsets.
GRAIN_HEADER = struct.Struct("<4sIIQQQQIQQ")
COMPRESSED_GRAINS = 1 << 16  # streamOptimized: qemu-img fails reading one cut short
GD_AT_END = 0xFFFFFFFFFFFFFFFF
GTES_PER_GT = 512  # the VMDK specification's only value
MAX_GRAIN_TABLES = 32 * 1024 * 1024  # qemu's own limit on the grain directory
GD_CHUNK = 64 * 1024  # grain directory entries read at once
MAX_DESCRIPTOR = 64 * 1024
NO_PARENT = "ffffffff"
MAX_EXTENTS = 4096  # a twoGbMaxExtent disk of 8 TiB has 4096
MAX_SECTORS = MAX_DISK_BYTES // SECTOR
EMBEDDED_TYPES = {"monolithicSparse", "streamOptimized"}
TEXT_TYPES = {"monolithicFlat": {"FLAT"}, "vmfs": {"VMFS", "FLAT"},
              "twoGbMaxExtentFlat": {"FLAT"}, "twoGbMaxExtentSparse": {"SPARSE"}}
EXTENT_START = re.compile(r"^(RW|RDONLY|NOACCESS)\s", re.IGNORECASE)
EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$')


@dataclass(frozen=True)
class Extent:
    access: str
    sectors: int
    type: str
    file: str
    offset: int = 0


@dataclass
class Descriptor:
    create_type: str = ""
    parent_cid: str = NO_PARENT
    parent_hint: str = ""
    extents: list[Extent] = field(default_factory=list)
    adapter: str = ""

    @property
    def virtual_size(self) -> int:
        return sum(e.sectors for e in self.extents) * SECTOR


@dataclass
class VmdkFacts:
    path: Path
    create_type: str
    virtual_size: int
    files: list[Path]  # the descriptor and every extent file


def parse_descriptor(text: str) -> Descriptor:
    found = Descriptor()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = EXTENT.match(line)
        if match:
            access, sectors, kind, name, offset = match.groups()
            if len(found.extents) >= MAX_EXTENTS:
                raise ImportRefused(f"The VMDK descriptor names more than {MAX_EXTENTS} "
                                    "extents: refused.")
            found.extents.append(Extent(
                access, whole_number(sectors, "VMDK extent size", high=MAX_SECTORS),
                kind.upper(), name or "",
                whole_number(offset or "0", "VMDK extent offset", high=MAX_SECTORS)))
            if found.virtual_size > MAX_DISK_BYTES:
                raise ImportRefused(f"The VMDK's extents add up to more than {MAX_DISK_BYTES} "
                                    "bytes: refused.")
            continue
        if EXTENT_START.match(line):
            # qemu reads an extent from any line starting so (sscanf ignores what follows
            # the offset): one this parser cannot read exactly is refused, never skipped.
            raise ImportRefused(f"The VMDK descriptor has an extent line it cannot read "
                                f"exactly: {line[:80]!r}")
        key, sep, value = line.partition("=")
        if not sep:
            raise ImportRefused(f"The VMDK descriptor has a line it cannot read: {line[:80]!r}")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key == "createtype":
            found.create_type = value
        elif key == "parentcid":
            found.parent_cid = value.lower()
        elif key == "parentfilenamehint":
            found.parent_hint = value
        elif key == "ddb.adaptertype":
            found.adapter = value
    return found


def _sparse_header(path: Path) -> tuple[int, int, int]:
    """(capacity sectors, descriptor offset, descriptor size) of a hosted sparse file."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER.size)
    if len(head) < HEADER.size:
        raise ImportRefused(f"'{path.name}' is truncated: it ends inside its VMDK header.")
    magic, _version, _flags, capacity, _grain, desc_offset, desc_size = HEADER.unpack(head)
    if magic != SPARSE_MAGIC:
        raise ImportRefused(f"'{path.name}' is not a VMDK sparse extent.")
    if capacity > MAX_SECTORS:
        raise ImportRefused(f"'{path.name}' declares {capacity} sectors: refused.")
    return capacity, desc_offset, desc_size


def _entries(raw: bytes) -> array[int]:
    """Little-endian 32-bit sector numbers."""
    values = array("I", raw)
    if values.itemsize != 4:  # pragma: no cover - every platform qemu runs on has 4
        values = array("L", raw)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values


def check_grains(path: Path) -> None:
    """Refuse a hosted sparse extent (monolithicSparse, a twoGbMaxExtentSparse part) whose
    grain directory, grain tables or grains lie past its file's end: a copy or download
    that stopped early."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(GRAIN_HEADER.size)
        if len(head) < GRAIN_HEADER.size:
            raise ImportRefused(f"'{path.name}' is truncated: it ends inside its VMDK header.")
        (_magic, _version, flags, capacity, grain, _desc_offset, _desc_size, per_table,
         _redundant, directory) = GRAIN_HEADER.unpack(head)
        if flags & COMPRESSED_GRAINS or directory == GD_AT_END:
            return
        if per_table != GTES_PER_GT or grain < 8 or grain & (grain - 1):
            raise ImportRefused(f"'{path.name}' has grains of {grain} sectors in tables of "
                                f"{per_table}: not a VMDK sparse extent's geometry.")
        tables = -(-capacity // (grain * per_table))
        if tables > MAX_GRAIN_TABLES:
            raise ImportRefused(f"'{path.name}' has {tables} grain tables: refused.")
        end = _grains_end(handle, directory * SECTOR, tables, grain)
    if end > size:
        raise ImportRefused(f"'{path.name}' is truncated: its grain tables name data up to "
                            f"byte {end}, but the file has {size} bytes (a copy or download "
                            "that stopped early?).")


def _grains_end(handle: BinaryIO, directory: int, tables: int, grain: int) -> int:
    """The end, in bytes, of the last grain table or grain the directory at `directory`
    names (zero entries are unallocated, ones are zeroed grains)."""
    end = directory + tables * 4
    seen: set[int] = set()
    for first in range(0, tables, GD_CHUNK):
        count = min(GD_CHUNK, tables - first)
        handle.seek(directory + first * 4)
        raw = handle.read(count * 4)
        if len(raw) < count * 4:
            return end  # the directory itself runs past the end
        for table in set(_entries(raw)) - seen - {0}:
            seen.add(table)
            end = max(end, (table * SECTOR) + GTES_PER_GT * 4)
            handle.seek(table * SECTOR)
            raw_table = handle.read(GTES_PER_GT * 4)
            if len(raw_table) < GTES_PER_GT * 4:
                return end
            last = max(_entries(raw_table))
            if last > 1:
                end = max(end, (last + grain) * SECTOR)
    return end


def embedded_descriptor(handle: BinaryIO, base: int, name: str) -> Descriptor:
    """The descriptor inside a hosted sparse VMDK that starts at `base` in `handle`."""
    handle.seek(base)
    head = handle.read(HEADER.size)
    if len(head) < HEADER.size:
        raise ImportRefused(f"'{name}' is truncated: it ends inside its VMDK header.")
    magic, _version, _flags, capacity, _grain, offset, size = HEADER.unpack(head)
    if magic != SPARSE_MAGIC:
        raise ImportRefused(f"'{name}' is not a sparse VMDK (monolithicSparse or "
                            "streamOptimized).")
    if not offset or not size:
        raise ImportRefused(f"'{name}' is a sparse extent without a descriptor: import the "
                            "descriptor file that names it.")
    if capacity > MAX_SECTORS or offset > MAX_SECTORS:
        raise ImportRefused(f"'{name}' declares {capacity} sectors at offset {offset}: "
                            "refused.")
    if size * SECTOR > MAX_DESCRIPTOR:
        raise ImportRefused(f"'{name}' declares an embedded descriptor of {size * SECTOR} "
                            "bytes: refused.")
    handle.seek(base + offset * SECTOR)
    raw = handle.read(size * SECTOR)
    if len(raw) < size * SECTOR and b"\0" not in raw:
        raise ImportRefused(f"'{name}' is truncated inside its descriptor.")
    descriptor = parse_descriptor(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
    if descriptor.extents and descriptor.virtual_size != capacity * SECTOR:
        raise ImportRefused(f"'{name}' declares {capacity * SECTOR} bytes in its header but "
                            f"{descriptor.virtual_size} in its descriptor.")
    if descriptor.create_type not in EMBEDDED_TYPES:
        raise ImportRefused(f"'{name}' has an embedded descriptor of type "
                            f"'{descriptor.create_type}'.")
    if len(descriptor.extents) != 1 or descriptor.extents[0].type != "SPARSE":
        raise ImportRefused(f"The sparse '{name}' must name only itself as extent.")
    if descriptor.parent_hint or descriptor.parent_cid not in (NO_PARENT, ""):
        raise ImportRefused(f"'{name}' is a child disk: backing chains are refused.")
    return descriptor


def read_descriptor(path: Path) -> tuple[Descriptor, bool]:
    """The descriptor of a `.vmdk` and whether it is embedded in a sparse file."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == ESX_SPARSE_MAGIC:
        raise ImportRefused(f"'{path.name}' is an ESX redo log (a snapshot delta): import "
                            "the consolidated base disk.")
    if magic == SPARSE_MAGIC:
        with open(path, "rb") as handle:
            return embedded_descriptor(handle, 0, path.name), True
    if os.path.getsize(path) > MAX_DESCRIPTOR:
        raise ImportRefused(f"'{path.name}' is neither a VMDK descriptor nor a sparse VMDK.")
    text = path.read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace")
    if "createtype" not in text.lower():
        raise ImportRefused(f"'{path.name}' is not a VMDK descriptor (no createType).")
    return parse_descriptor(text), False


def _check_extent(directory: Path, extent: Extent, allowed: set[str]) -> Path | None:
    if extent.type == "ZERO":
        return None
    if extent.type not in allowed:
        raise ImportRefused(f"VMDK extents of type {extent.type} are not imported (raw "
                            "device mappings and snapshot deltas are refused).")
    path = sibling(directory, extent.file, what="VMDK extent")
    size = os.path.getsize(path)
    if extent.type in ("FLAT", "VMFS"):
        needed = (extent.offset + extent.sectors) * SECTOR
        if size < needed:
            raise ImportRefused(f"The extent '{extent.file}' has {size} bytes; its "
                                f"descriptor declares {needed}: the file is truncated.")
    else:
        capacity, _offset, _size = _sparse_header(path)
        if capacity != extent.sectors:
            raise ImportRefused(f"The extent '{extent.file}' holds {capacity * SECTOR} bytes "
                                f"but its descriptor declares {extent.sectors * SECTOR}.")
        check_grains(path)
    return path


def check_vmdk(path: Path) -> VmdkFacts:
    """Refuse (ImportRefused) anything but a self-contained VMDK inside its directory."""
    descriptor, embedded = read_descriptor(path)
    if descriptor.parent_hint or descriptor.parent_cid not in (NO_PARENT, ""):
        raise ImportRefused(f"'{path.name}' is a child disk (parentFileNameHint "
                            f"'{descriptor.parent_hint}'): backing chains are refused; "
                            "import the consolidated disk.")
    kind = descriptor.create_type
    if not descriptor.extents:
        raise ImportRefused(f"'{path.name}' names no extents.")
    files = [path]
    if embedded:
        if kind not in EMBEDDED_TYPES:
            raise ImportRefused(f"'{path.name}' has an embedded descriptor of type '{kind}'.")
        if len(descriptor.extents) != 1 or descriptor.extents[0].file != path.name:
            raise ImportRefused(f"The sparse '{path.name}' must name only itself as extent.")
        check_grains(path)
    else:
        if kind not in TEXT_TYPES:
            raise ImportRefused(f"VMDK type '{kind}' is not supported (monolithicSparse, "
                                "streamOptimized, monolithicFlat, twoGbMaxExtentSparse, "
                                "twoGbMaxExtentFlat and vmfs are).")
        names = [e.file for e in descriptor.extents if e.type != "ZERO"]
        if len(set(names)) != len(names) or path.name in names:
            raise ImportRefused(f"'{path.name}' names an extent twice (or itself).")
        for extent in descriptor.extents:
            checked = _check_extent(path.parent, extent, TEXT_TYPES[kind])
            if checked is not None:
                files.append(checked)
    image = qemu.Image(str(path), "vmdk")
    found = qemu.info(image)
    qemu.check_self_contained(image, found)
    directory = path.parent.resolve()
    for name in found.extents:
        extent_path = Path(name) if os.path.isabs(name) else directory / name
        if extent_path.resolve().parent != directory:
            raise ImportRefused(f"qemu-img reads an extent outside the disk's directory "
                                f"({name}): refused.")
    if found.virtual_size != descriptor.virtual_size:
        raise ImportRefused(f"'{path.name}' declares {descriptor.virtual_size} bytes but "
                            f"qemu-img reads {found.virtual_size}.")
    return VmdkFacts(path=path, create_type=kind, virtual_size=found.virtual_size,
                     files=files)
