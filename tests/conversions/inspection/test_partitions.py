"""MBR and GPT parsing: the partitions as written, and damaged tables refused by name."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from conversions.inspection.errors import InspectionError
from conversions.inspection.partitions import ESP, read_table
from tests.conversions.inspection import hostile
from tests.conversions.inspection.diskmaker import (
    LINUX,
    MIB,
    SECTOR,
    Part,
    gpt_structures,
    mbr_sector,
    write_disk,
)


def table_of(path: Path):
    data = path.read_bytes()
    return read_table(lambda offset, length: data[offset:offset + length], len(data))


def raw_disk(tmp_path: Path, head: bytes, size: int = 8 * MIB) -> Path:
    path = tmp_path / "disk.img"
    with open(path, "wb") as disk:
        disk.truncate(size)
        disk.write(head)
    return path


def test_mbr_primary_and_logical_partitions(tmp_path: Path) -> None:
    disk = write_disk(tmp_path / "d.img", 64 * MIB, [
        Part(2048, 8192, 0x0C, bootable=True), Part(10240, 8192, 0x83),
        Part(18432, 100000, 0x05)], logical=[Part(20480, 4096, 0x83), Part(26624, 4096, 0x82)])
    table = table_of(disk)
    assert table.scheme == "mbr"
    assert [(p.number, p.type, p.start // SECTOR) for p in table.partitions] == [
        (1, "0x0c", 2048), (2, "0x83", 10240), (3, "0x05", 18432), (5, "0x83", 20480),
        (6, "0x82", 26624)]
    assert table.partitions[0].bootable and table.mbr_id == "1234abcd"


def test_gpt_partitions(tmp_path: Path) -> None:
    disk = write_disk(tmp_path / "d.img", 64 * MIB, [Part(2048, 8192, ESP),
                                                     Part(10240, 20000, LINUX)], scheme="gpt")
    table = table_of(disk)
    assert table.scheme == "gpt"
    assert [(p.number, p.type_name, p.size) for p in table.partitions] == [
        (1, "EFI System", 8192 * SECTOR), (2, "Linux filesystem", 20000 * SECTOR)]
    assert table.partitions[0].name == "test" and table.partitions[0].guid


def test_no_signature_is_no_table(tmp_path: Path) -> None:
    assert table_of(raw_disk(tmp_path, b"")).scheme == "none"


@pytest.mark.parametrize(("entries", "message"), [
    ([(0, 0x83, 2048, 8192), (0, 0x83, 10240, 20000)],
     "partition 2 ends beyond the disk's end"),
    ([(0, 0x83, 2048, 8192), (0, 0x83, 4096, 4096)], "partitions 1 and 2 overlap"),
    ([(0x42, 0x83, 2048, 4096)], "partition 1 has an invalid boot flag 0x42"),
    ([(0, 0x83, 0, 4096)], "partition 1 starts at sector 0, inside the table"),
    ([(0, 0x83, 2048, 0)], "partition 1 has no size"),
    ([(0, 0x05, 2048, 4096), (0, 0x0F, 8192, 4096)], "two extended partitions"),
])
def test_damaged_mbr_is_refused_by_name(tmp_path: Path, entries: list[tuple[int, int, int, int]],
                                        message: str) -> None:
    disk = raw_disk(tmp_path, mbr_sector(entries), size=8 * MIB)
    with pytest.raises(InspectionError, match="The partition table is damaged") as caught:
        table_of(disk)
    assert message in str(caught.value)


def test_looping_extended_chain_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InspectionError, match="chain loops"):
        table_of(hostile.looping_extended_disk(tmp_path))


def test_logical_outside_extended_is_refused(tmp_path: Path) -> None:
    disk = raw_disk(tmp_path, mbr_sector([(0, 0x05, 2048, 8192)]), size=16 * MIB)
    with open(disk, "r+b") as out:
        out.seek(2048 * SECTOR)
        out.write(mbr_sector([(0, 0x83, 2048, 8192)], disk_id=0))
    with pytest.raises(InspectionError, match="partition 5 lies outside the extended"):
        table_of(disk)


def _gpt_disk(tmp_path: Path, size: int, parts: list[Part], *, claimed: int | None = None,
              mangle: int | None = None) -> Path:
    header, array = gpt_structures(claimed or size, parts)
    header = bytearray(header)
    if mangle is not None:
        header[mangle] ^= 0xFF
    return raw_disk(tmp_path, mbr_sector([(0, 0xEE, 1, size // SECTOR - 1)]) + bytes(header)
                    + array, size)


def test_truncated_gpt_disk_is_refused(tmp_path: Path) -> None:
    disk = _gpt_disk(tmp_path, 8 * MIB, [Part(2048, 8192, LINUX)], claimed=64 * MIB)
    with pytest.raises(InspectionError, match="beyond the disk's end"):
        table_of(disk)


def test_gpt_checksum_and_overlap(tmp_path: Path) -> None:
    disk = _gpt_disk(tmp_path, 8 * MIB, [Part(2048, 4096, LINUX)], mangle=40)
    with pytest.raises(InspectionError, match="GPT header's checksum does not match"):
        table_of(disk)
    disk = _gpt_disk(tmp_path, 8 * MIB, [Part(2048, 4096, LINUX), Part(4096, 4096, LINUX)])
    with pytest.raises(InspectionError, match="partitions 1 and 2 overlap"):
        table_of(disk)


def test_gpt_entry_count_is_capped(tmp_path: Path) -> None:
    header, array = gpt_structures(8 * MIB, [Part(2048, 4096, LINUX)])
    header = bytearray(header)
    struct.pack_into("<I", header, 80, 1_000_000)
    struct.pack_into("<I", header, 16, 0)
    import zlib
    struct.pack_into("<I", header, 16, zlib.crc32(header[:92]))
    disk = raw_disk(tmp_path, mbr_sector([(0, 0xEE, 1, 16383)]) + bytes(header) + array)
    with pytest.raises(InspectionError, match="claims 1000000 partition entries"):
        table_of(disk)


def test_protective_mbr_without_gpt(tmp_path: Path) -> None:
    disk = raw_disk(tmp_path, mbr_sector([(0, 0xEE, 1, 16383)]))
    with pytest.raises(InspectionError, match="no GPT header"):
        table_of(disk)
