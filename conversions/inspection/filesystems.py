"""File systems recognised by their superblocks, and read in user space.

ext2/3/4 are read with e2fsprogs' `debugfs` (read-only, catastrophic mode: no bitmaps read)
on ``image?offset=N``; FAT with mtools on ``image@@N``. Every reader is a subprocess under
prlimit and a timeout (see run.py) with a cap on its output, and all the readers of one
inspection share a budget of seconds; only named paths are looked up, never a tree walked,
so a looping directory cannot trap the inspection. A reader stopped by one of those bounds
means a file system damaged beyond reading or built to trip it: DamagedImage, the image is
refused. Other file systems (xfs, btrfs, LVM, NTFS...) are recognised and reported as not
readable here.
"""

from __future__ import annotations

import posixpath
import re
import struct
import uuid
from dataclasses import dataclass

from conversions.inspection import run
from conversions.inspection.disk import Disk
from conversions.inspection.errors import DamagedImage, InspectionError, UnreadableFile
from conversions.inspection.run import ReaderFailed, ReaderStopped

PROBE_BYTES = 68 * 1024
MAX_LISTING = 4 * 1024**2
MAX_ENTRIES = 10000
MAX_SYMLINKS = 16
READABLE = ("ext2", "ext3", "ext4", "vfat")


@dataclass(frozen=True)
class Probe:
    """What a partition's first bytes say it holds."""

    kind: str  # "ext4", "vfat", "xfs", "btrfs", "lvm2", "swap", "ntfs", "luks", ..., or ""
    uuid: str = ""
    label: str = ""
    size: int = 0  # the bytes the file system says it spans (ext only; 0: not read)

    @property
    def readable(self) -> bool:
        return self.kind in READABLE


def probe(data: bytes) -> Probe:
    """Recognise a file system from its first PROBE_BYTES bytes."""
    if len(data) >= 2048 and data[1080:1082] == b"\x53\xef":
        compat, incompat = struct.unpack_from("<II", data, 1024 + 92)
        kind = "ext4" if incompat & 0x2C0 else "ext3" if compat & 0x4 else "ext2"
        return Probe(kind, str(uuid.UUID(bytes=data[1024 + 104:1024 + 120])),
                     _text(data[1024 + 120:1024 + 136]), _ext_size(data, incompat))
    if data[:6] == b"LUKS\xba\xbe":
        return Probe("luks")
    if data[:4] == b"XFSB":
        return Probe("xfs", str(uuid.UUID(bytes=data[32:48])), _text(data[108:120]))
    if len(data) >= 0x10048 and data[0x10040:0x10048] == b"_BHRfS_M":
        return Probe("btrfs", str(uuid.UUID(bytes=data[0x10020:0x10030])),
                     _text(data[0x1012B:0x1022B]))
    if any(data[s * 512:s * 512 + 8] == b"LABELONE" for s in range(4)):
        return Probe("lvm2")
    if data[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return Probe("swap", str(uuid.UUID(bytes=data[1024 + 12:1024 + 28])),
                     _text(data[1024 + 28:1024 + 44]))
    if data[3:11] == b"NTFS    ":
        return Probe("ntfs")
    if data[3:11] == b"EXFAT   ":
        return Probe("exfat")
    if len(data) >= 4100 and struct.unpack_from("<I", data, 4096)[0] == 0xA92B4EFC:
        return Probe("linux_raid_member")
    if data[0x8001:0x8006] == b"CD001":
        return Probe("iso9660")
    if len(data) >= 512 and data[510:512] == b"\x55\xaa" and data[0] in (0xEB, 0xE9):
        if data[82:87] == b"FAT32":
            return Probe("vfat", _fat_id(data, 67), _text(data[71:82]))
        if data[54:59] in (b"FAT12", b"FAT16"):
            return Probe("vfat", _fat_id(data, 39), _text(data[43:54]))
    return Probe("")


def _ext_size(data: bytes, incompat: int) -> int:
    """Blocks count times block size, from an ext superblock (at byte 1024 of `data`)."""
    blocks, log_block = struct.unpack_from("<I16xI", data, 1024 + 4)
    if incompat & 0x80 and len(data) >= 1024 + 0x154:  # 64bit: the count's high half
        blocks |= struct.unpack_from("<I", data, 1024 + 0x150)[0] << 32
    return blocks * (1024 << min(log_block, 16))


def _text(raw: bytes) -> str:
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return "" if text == "NO NAME" else text


def _fat_id(data: bytes, at: int) -> str:
    serial = struct.unpack_from("<I", data, at)[0]
    return f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "dir", "link", "other"


class FileSystem:
    """A readable file system on a partition: look up named paths, read capped files."""

    label: str

    def read(self, path: str, max_bytes: int) -> bytes | None:
        """The file at `path` (symlinks followed), None when missing; InspectionError when
        it is larger than `max_bytes` or the file system is damaged."""
        raise NotImplementedError

    def head(self, path: str, length: int) -> bytes | None:
        """The first `length` bytes of the file at `path` (None when missing)."""
        raise NotImplementedError

    def listdir(self, path: str) -> list[Entry] | None:
        """The entries of the directory `path`, None when missing; at most MAX_ENTRIES."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        return self.listdir(path) is not None or self.head(path, 1) is not None


def reader_failed(label: str, exc: ReaderFailed) -> InspectionError:
    """A reader that a bound stopped refuses the image; one that could not start does not."""
    if isinstance(exc, ReaderStopped):
        return DamagedImage(f"{label}: reading the file system was stopped ({exc}): it is "
                            "damaged or built to trip its reader.")
    return InspectionError(f"{label}: reading the file system failed: {exc}")


def open_fs(disk: Disk, start: int, size: int, found: Probe, label: str) -> FileSystem:
    if found.kind.startswith("ext"):
        return Ext(disk, start, size, label)
    if found.kind == "vfat":
        return Fat(disk, start, size, label)
    raise InspectionError(f"{label}: file system {found.kind or 'unknown'} is not readable "
                          "here.")


class Ext(FileSystem):
    def __init__(self, disk: Disk, start: int, size: int, label: str) -> None:
        self.label = label
        self._readers = disk.readers
        window = disk.window(start, size)
        self._device = f"{window.path}?offset={window.offset}" if window.offset \
            else window.path

    def _debugfs(self, request: str, max_output: int) -> tuple[bytes, str, bool]:
        try:
            done = self._readers.run(["debugfs", "-c", "-R", request, self._device],
                                     max_output=max_output)
        except ReaderFailed as exc:
            raise reader_failed(self.label, exc) from exc
        errors = done.stderr
        if "Memory allocation failed" in errors:  # libext2fs's EXT2_ET_NO_MEMORY
            raise DamagedImage(f"{self.label}: reading the file system was stopped (debugfs "
                               f"hit its memory limit of {run.READER_ADDRESS_SPACE // 1024**2} "
                               "MiB): it is damaged or built to trip its reader.")
        if "while trying to open" in errors or "Filesystem not open" in errors:
            why = next((line for line in errors.splitlines() if "while" in line), errors)
            why = why.removeprefix("debugfs: ").split(" while trying to open")[0].strip()
            raise DamagedImage(f"{self.label}: the file system is damaged: {why} (debugfs "
                               "cannot open it).")
        if done.returncode != 0 and not done.truncated:
            raise InspectionError(f"{self.label}: debugfs failed: {_last(errors)}")
        return done.stdout, errors, done.truncated

    def _stat(self, path: str) -> tuple[str, int, str] | None:
        """(type, size, fast link target) of `path` itself, None when missing."""
        out, errors, _ = self._debugfs(f"stat {_quote(path)}", 65536)
        if "not found" in errors or "File not found" in errors or not out:
            if "ext2_lookup" in errors or "not found" in errors:
                return None
            if "Too many symbolic links" in errors:
                raise UnreadableFile(f"{self.label}: {path} is a loop of symbolic links.")
            raise DamagedImage(f"{self.label}: the file system is damaged or unreadable "
                                  f"(looking up {path}: {_last(errors)})")
        text = out.decode("utf-8", "replace")
        kind = re.search(r"Type: (\w+)", text)
        size = re.search(r"Size: (\d+)", text)
        target = re.search(r'Fast link dest: "(.*)"', text)
        return (kind.group(1) if kind else "", int(size.group(1)) if size else 0,
                target.group(1) if target else "")

    def _resolve(self, path: str) -> tuple[str, str, int] | None:
        """(path, type, size) after following symlinks of the last component."""
        for _ in range(MAX_SYMLINKS):
            found = self._stat(path)
            if found is None:
                return None
            kind, size, target = found
            if kind != "symlink":
                return path, kind, size
            if not target:
                raw, _, _ = self._debugfs(f"cat {_quote(path)}", 4096)
                target = raw.decode("utf-8", "replace")
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        raise UnreadableFile(f"{self.label}: {path} is a loop of symbolic links.")

    def read(self, path: str, max_bytes: int) -> bytes | None:
        found = self._resolve(path)
        if found is None:
            return None
        real, kind, size = found
        if kind != "regular":
            return None
        if size > max_bytes:
            raise UnreadableFile(f"{self.label}: {path} is {size} bytes, more than the "
                                  f"{max_bytes} inspection reads.")
        data, _, _ = self._debugfs(f"cat {_quote(real)}", max_bytes)
        return data

    def head(self, path: str, length: int) -> bytes | None:
        found = self._resolve(path)
        if found is None or found[1] != "regular":
            return None
        data, _, _ = self._debugfs(f"cat {_quote(found[0])}", length)
        return data[:length]

    def listdir(self, path: str) -> list[Entry] | None:
        found = self._resolve(path)
        if found is None or found[1] != "directory":
            return None
        out, _, truncated = self._debugfs(f"ls -p {_quote(found[0])}", MAX_LISTING)
        entries: list[Entry] = []
        for line in out.decode("utf-8", "replace").splitlines():
            fields = line.split("/")
            if len(fields) < 7 or fields[5] in (".", ".."):
                continue
            mode = int(fields[2] or "0", 8) & 0o170000
            kind = {0o040000: "dir", 0o100000: "file", 0o120000: "link"}.get(mode, "other")
            entries.append(Entry(fields[5], kind))
            if len(entries) > MAX_ENTRIES:
                truncated = True
                break
        if truncated:
            raise DamagedImage(f"{self.label}: the directory {path} holds more than "
                                  f"{MAX_ENTRIES} entries: refused.")
        return entries


class Fat(FileSystem):
    def __init__(self, disk: Disk, start: int, size: int, label: str) -> None:
        self.label = label
        self._readers = disk.readers
        window = disk.window(start, size)
        self._image = f"{window.path}@@{window.offset}" if window.offset else window.path

    def _mtools(self, argv: list[str], max_output: int) -> tuple[bytes, bool] | None:
        try:
            done = self._readers.run([argv[0], "-i", self._image, *argv[1:]],
                                     max_output=max_output,
                                     env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin",
                                          "LC_ALL": "C"})
        except ReaderFailed as exc:
            raise reader_failed(self.label, exc) from exc
        if done.returncode != 0 and not done.truncated:
            if "not found" in done.stderr:
                return None
            raise DamagedImage(f"{self.label}: the FAT file system is damaged or "
                                  f"unreadable: {_last(done.stderr)}")
        return done.stdout, done.truncated

    def read(self, path: str, max_bytes: int) -> bytes | None:
        done = self._mtools(["mcopy", "-n", f"::{path}", "-"], max_bytes)
        if done is None:
            return None
        data, truncated = done
        if truncated:
            raise UnreadableFile(f"{self.label}: {path} is more than the {max_bytes} bytes "
                                  "inspection reads.")
        return data

    def head(self, path: str, length: int) -> bytes | None:
        done = self._mtools(["mcopy", "-n", f"::{path}", "-"], length)
        return None if done is None else done[0][:length]

    def listdir(self, path: str) -> list[Entry] | None:
        done = self._mtools(["mdir", "-b", "-a", f"::{path.rstrip('/') or '/'}"], MAX_LISTING)
        if done is None:
            return None
        out, truncated = done
        entries: list[Entry] = []
        for line in out.decode("utf-8", "replace").splitlines():
            name = line.rstrip("/").rsplit("/", 1)[-1]
            if name and name not in (".", ".."):
                entries.append(Entry(name, "dir" if line.endswith("/") else "file"))
        if truncated or len(entries) > MAX_ENTRIES:
            raise DamagedImage(f"{self.label}: the directory {path} holds more than "
                                  f"{MAX_ENTRIES} entries: refused.")
        return entries


def _quote(path: str) -> str:
    if any(c in path for c in "\"\n\r"):
        raise UnreadableFile(f"Refused to look up a path with quotes or newlines: {path!r}")
    return f'"{path}"'


def _last(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines()
             if line.strip() and not line.startswith("debugfs ")
             and "catastrophic mode" not in line]
    return lines[-1] if lines else "no reason given"
