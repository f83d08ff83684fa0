"""MBR (with extended and logical partitions) and GPT, parsed with strict bounds.

Every check that fails raises InspectionError naming what is wrong ("the partition table is
damaged: partition 2 ends beyond the disk's end"); nothing past the disk's end, no loop in an
extended partition's chain and no overlap is accepted.
"""

from __future__ import annotations

import itertools
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from conversions.inspection.errors import DamagedImage, InspectionError

SECTOR = 512
MAX_LOGICAL = 128
MAX_GPT_ENTRIES = 1024
MAX_GPT_ENTRY_SIZE = 4096

EXTENDED_TYPES = {0x05, 0x0F, 0x85}
MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16 (<32M)", 0x05: "extended", 0x06: "FAT16", 0x07: "NTFS/exFAT",
    0x0B: "FAT32", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)", 0x0F: "extended (LBA)",
    0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended", 0x8E: "Linux LVM",
    0xA5: "FreeBSD", 0xEE: "GPT protective", 0xEF: "EFI System", 0xFD: "Linux RAID",
}
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
GPT_TYPES = {
    ESP: "EFI System", BIOS_BOOT: "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
}

Reader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Partition:
    number: int  # 1-4 primary, 5+ logical (MBR); 1.. (GPT); 0: a file system on the whole disk
    start: int  # bytes
    size: int  # bytes
    type: str  # "0x83" or a GPT type GUID
    type_name: str
    bootable: bool = False
    name: str = ""  # GPT partition name
    guid: str = ""  # GPT unique partition GUID

    @property
    def end(self) -> int:
        return self.start + self.size

    def as_dict(self) -> dict[str, object]:
        return {"number": self.number, "start": self.start, "size": self.size,
                "type": self.type, "type_name": self.type_name, "bootable": self.bootable,
                "name": self.name, "guid": self.guid}


@dataclass(frozen=True)
class Table:
    scheme: str  # "mbr", "gpt" or "none"
    partitions: tuple[Partition, ...]
    disk_guid: str = ""
    mbr_id: str = ""


def damaged(why: str) -> InspectionError:
    return DamagedImage(f"The partition table is damaged: {why}.")


def read_table(read: Reader, disk_size: int) -> Table:
    """The partition table of a disk of `disk_size` bytes; `read(offset, length)` reads it.

    A disk with no MBR signature is scheme "none" (a file system may cover the whole disk).
    """
    if disk_size < SECTOR:
        raise InspectionError(f"The image is {disk_size} bytes: too small to hold a disk.")
    mbr = read(0, SECTOR)
    if len(mbr) < SECTOR:
        raise InspectionError("The image is truncated: its first sector cannot be read.")
    if mbr[510:512] != b"\x55\xaa":
        return Table("none", ())
    entries = [_mbr_entry(mbr, index) for index in range(4)]
    if any(kind == 0xEE for _, kind, _, _ in entries):
        return _gpt(read, disk_size)
    return _mbr(read, disk_size, mbr, entries)


def _mbr_entry(sector: bytes, index: int) -> tuple[int, int, int, int]:
    status, kind, lba, count = struct.unpack_from("<B3xB3xII", sector, 446 + 16 * index)
    return status, kind, lba, count


def _mbr(read: Reader, disk_size: int, mbr: bytes,
         entries: list[tuple[int, int, int, int]]) -> Table:
    sectors = disk_size // SECTOR
    found: list[Partition] = []
    extended: Partition | None = None
    for index, (status, kind, lba, count) in enumerate(entries, start=1):
        if kind == 0:
            if count:
                raise damaged(f"partition {index} has a size but no type")
            continue
        if status not in (0x00, 0x80):
            raise damaged(f"partition {index} has an invalid boot flag 0x{status:02x}")
        _check_range(index, lba, count, 1, sectors)
        part = Partition(index, lba * SECTOR, count * SECTOR, f"0x{kind:02x}",
                         MBR_TYPES.get(kind, "unknown"), bootable=status == 0x80)
        if kind in EXTENDED_TYPES:
            if extended is not None:
                raise damaged("it has two extended partitions")
            extended = part
        found.append(part)
    _check_overlaps(found)
    if extended is not None:
        found += _logical(read, extended)
    mbr_id = f"{struct.unpack_from('<I', mbr, 440)[0]:08x}"
    return Table("mbr", tuple(found), mbr_id=mbr_id)


def _check_range(number: int, first: int, count: int, low: int, sectors: int) -> None:
    if count == 0:
        raise damaged(f"partition {number} has no size")
    if first < low:
        raise damaged(f"partition {number} starts at sector {first}, inside the table")
    if first + count > sectors:
        raise damaged(f"partition {number} ends beyond the disk's end (sector "
                      f"{first + count} of {sectors}: the image may be truncated)")


def _check_overlaps(parts: list[Partition]) -> None:
    ordered = sorted(parts, key=lambda p: p.start)
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise damaged(f"partitions {before.number} and {after.number} overlap")


def _logical(read: Reader, extended: Partition) -> list[Partition]:
    base = extended.start // SECTOR
    limit = extended.end // SECTOR
    logical: list[Partition] = []
    seen: set[int] = set()
    ebr_lba = base
    while True:
        if ebr_lba in seen:
            raise damaged("the extended partition's chain loops")
        if len(logical) >= MAX_LOGICAL:
            raise damaged(f"the extended partition holds more than {MAX_LOGICAL} partitions")
        seen.add(ebr_lba)
        number = 5 + len(logical)
        ebr = read(ebr_lba * SECTOR, SECTOR)
        if len(ebr) < SECTOR or ebr[510:512] != b"\x55\xaa":
            if ebr_lba == base:
                return logical  # an empty extended partition
            raise damaged(f"the boot record of partition {number} has no signature")
        status, kind, rel, count = _mbr_entry(ebr, 0)
        if kind:
            if status not in (0x00, 0x80):
                raise damaged(f"partition {number} has an invalid boot flag 0x{status:02x}")
            first = ebr_lba + rel
            if first <= ebr_lba or first + count > limit or count == 0:
                raise damaged(f"partition {number} lies outside the extended partition")
            logical.append(Partition(number, first * SECTOR, count * SECTOR, f"0x{kind:02x}",
                                     MBR_TYPES.get(kind, "unknown"), bootable=status == 0x80))
        _, next_kind, next_rel, next_count = _mbr_entry(ebr, 1)
        if next_kind not in EXTENDED_TYPES or not next_rel:
            break
        ebr_lba = base + next_rel
        if not base < ebr_lba < limit or ebr_lba + next_count > limit:
            raise damaged(f"the link after partition {number} points outside the extended "
                          "partition")
    _check_overlaps(logical)
    return logical


def _gpt(read: Reader, disk_size: int) -> Table:
    sectors = disk_size // SECTOR
    header = read(SECTOR, SECTOR)
    if len(header) < 92 or header[:8] != b"EFI PART":
        raise damaged("the disk has a protective MBR but no GPT header")
    (_, header_size, header_crc, _, my_lba, alternate, first_usable, last_usable,
     disk_guid, entries_lba, count, entry_size, entries_crc) = struct.unpack_from(
        "<IIII QQQQ 16s QIII", header, 8)
    if not 92 <= header_size <= SECTOR:
        raise damaged(f"the GPT header claims a size of {header_size} bytes")
    check = bytearray(header[:header_size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != header_crc:
        raise damaged("the GPT header's checksum does not match")
    if my_lba != 1:
        raise damaged(f"the GPT header says it lies at sector {my_lba}, not 1")
    if alternate >= sectors:
        raise damaged("the GPT's backup header lies beyond the disk's end (the image may be "
                      "truncated)")
    if not 2 <= first_usable <= last_usable < sectors:
        raise damaged("the GPT's usable area lies outside the disk")
    if not 0 < count <= MAX_GPT_ENTRIES:
        raise damaged(f"the GPT claims {count} partition entries")
    if entry_size < 128 or entry_size % 8 or entry_size > MAX_GPT_ENTRY_SIZE:
        raise damaged(f"the GPT's entries are {entry_size} bytes each")
    length = count * entry_size
    if entries_lba < 2 or entries_lba * SECTOR + length > disk_size:
        raise damaged("the GPT's partition entries lie outside the disk")
    array = read(entries_lba * SECTOR, length)
    if len(array) < length or zlib.crc32(array) != entries_crc:
        raise damaged("the GPT partition entries' checksum does not match")
    found: list[Partition] = []
    for index in range(count):
        raw = array[index * entry_size:(index + 1) * entry_size]
        type_guid = str(uuid.UUID(bytes_le=raw[:16]))
        if type_guid == "00000000-0000-0000-0000-000000000000":
            continue
        first, last = struct.unpack_from("<QQ", raw, 32)
        number = index + 1
        if last < first:
            raise damaged(f"partition {number} ends before it starts")
        if first < first_usable or last > last_usable:
            if last >= sectors:
                raise damaged(f"partition {number} ends beyond the disk's end (sector "
                              f"{last + 1} of {sectors}: the image may be truncated)")
            raise damaged(f"partition {number} lies outside the GPT's usable area")
        name = raw[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        found.append(Partition(number, first * SECTOR, (last - first + 1) * SECTOR, type_guid,
                               GPT_TYPES.get(type_guid, "unknown"), name=name,
                               guid=str(uuid.UUID(bytes_le=raw[16:32]))))
    _check_overlaps(found)
    return Table("gpt", tuple(found), disk_guid=str(uuid.UUID(bytes_le=disk_guid)))
