"""The kernel modules an initramfs holds: cpio "newc" archives, possibly several
concatenated (an uncompressed early one for microcode, then a compressed main one), parsed
with caps on entries, name lengths and decompressed size."""

from __future__ import annotations

import mmap
import os
import posixpath
import tempfile
from dataclasses import dataclass

from conversions.inspection.errors import InspectionError
from conversions.inspection.kernel import compression_of, decompress_to

MAX_INITRAMFS = 128 * 1024**2
MAX_DECOMPRESSED = 1024**3
MAX_ENTRIES = 200_000
MAX_NAME = 4096
MAX_SEGMENTS = 16
HEADER = 110
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst", ".ko.bz2")


@dataclass(frozen=True)
class InitramfsFacts:
    modules: tuple[str, ...]  # module names ("virtio_blk"), sorted, unique
    compression: tuple[str, ...]  # one per segment: "none", "gzip", "zstd"...
    entries: int


def module_name(path: str) -> str | None:
    base = posixpath.basename(path)
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return None


def read_initramfs(data: bytes) -> InitramfsFacts:
    """Parse the initramfs image `data`; InspectionError when it is damaged or too big."""
    names: list[str] = []
    kinds: list[str] = []
    _segments(data, names, kinds, depth=0)
    modules = sorted({name for path in names if (name := module_name(path))})
    return InitramfsFacts(tuple(modules), tuple(kinds), len(names))


def _segments(data: bytes | mmap.mmap, names: list[str], kinds: list[str], depth: int) -> None:
    pos, end = 0, len(data)
    while pos < end:
        while pos < end and data[pos] == 0:
            pos += 1
        if pos >= end:
            return
        if len(kinds) >= MAX_SEGMENTS:
            raise InspectionError("the initramfs has too many concatenated archives")
        head = bytes(data[pos:pos + 6])
        if head in (b"070701", b"070702"):
            if not depth and (not kinds or kinds[-1] != "none"):
                kinds.append("none")
            pos = _cpio(data, pos, names)
            continue
        kind = compression_of(bytes(data[pos:pos + 8]))
        if not kind or depth:
            if not names:
                raise InspectionError("the initramfs is not a cpio archive this reads")
            return  # trailing data this does not read
        kinds.append(kind)
        with tempfile.TemporaryDirectory(prefix="xenweb-initramfs-") as tmp:
            out = os.path.join(tmp, "cpio")
            try:
                decompress_to(bytes(data[pos:]), kind, out, MAX_DECOMPRESSED)
            except InspectionError as exc:
                raise InspectionError(f"the initramfs's {kind} archive: {exc}") from exc
            if os.path.getsize(out):
                with open(out, "rb") as inner, \
                        mmap.mmap(inner.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    _segments(view, names, kinds, depth + 1)
        return  # the end of a compressed stream is not known: nothing is read after it


def _cpio(data: bytes | mmap.mmap, pos: int, names: list[str]) -> int:
    end = len(data)
    while True:
        if pos + HEADER > end:
            raise InspectionError("the initramfs's cpio archive is truncated")
        header = bytes(data[pos:pos + HEADER])
        if header[:6] not in (b"070701", b"070702"):
            raise InspectionError(f"the initramfs's cpio archive is damaged at byte {pos}")
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise InspectionError("the initramfs's cpio archive has a damaged header") from exc
        filesize, namesize = fields[6], fields[11]
        if not 0 < namesize <= MAX_NAME:
            raise InspectionError("the initramfs's cpio archive has a damaged name length")
        name_end = pos + HEADER + namesize
        data_start = (name_end + 3) & ~3
        data_end = data_start + filesize
        if data_end > end:
            raise InspectionError("the initramfs's cpio archive is truncated")
        name = bytes(data[pos + HEADER:name_end - 1]).decode("utf-8", "replace")
        pos = (data_end + 3) & ~3
        if name == "TRAILER!!!":
            return pos
        names.append(name)
        if len(names) > MAX_ENTRIES:
            raise InspectionError(f"the initramfs holds more than {MAX_ENTRIES} files")
