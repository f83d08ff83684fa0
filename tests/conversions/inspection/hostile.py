"""Guest file systems built to trip a reader, for the inspection tests and the import API's:
looping directories and symbolic links, a directory with too many entries, a truncated or
damaged ext4, a root directory whose lookups never end, a geometry that takes a reader
gigabytes to open, a looping chain of extended partitions. Each returns a raw image."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from tests.conversions.inspection.diskmaker import (
    MIB,
    SECTOR,
    Part,
    ext4,
    mbr_sector,
    root_tree,
    write_disk,
)

BLOCK = 4096
EXTENT_MAGIC = 0xF30A
PER_BLOCK = (BLOCK - 12) // 12  # extent (or index) entries in one 4 KiB tree block


def debugfs_write(image: Path, *requests: str) -> None:
    """Change an ext image with `debugfs -w` (one request per run)."""
    for request in requests:
        subprocess.run(["debugfs", "-w", "-R", request, str(image)], check=True,
                       capture_output=True)


def looping_links_fs(base: Path) -> Path:
    """Directory hard links that loop (/boot/up is /, /etc/again is /etc...) and symbolic
    links to themselves (/boot/vmlinuz, /etc/hostname): inspection reads it, with warnings."""
    grub = b"menuentry 'x' {\n linux /boot/vmlinuz root=/dev/xvda1\n}\n"
    root = root_tree(base, fstab="LABEL=root / ext4 defaults 0 1\n",
                     boot={"boot/grub/grub.cfg": grub})
    disk = ext4(base / "fs.img", root, 16, label="root")
    debugfs_write(disk, "link / /boot/up", "link /etc /etc/again", "link /boot /boot/grub/back",
                  "symlink /boot/vmlinuz /boot/vmlinuz", "rm /etc/hostname",
                  "symlink /etc/hostname /etc/hostname")
    return disk


def huge_directory_fs(base: Path, entries: int = 10500) -> Path:
    """/boot holds `entries` files (more than inspection lists)."""
    root = root_tree(base, fstab="/dev/xvda / ext4 defaults 0 1\n")
    for number in range(entries):
        (root / "boot" / f"f{number:05d}").touch()
    return ext4(base / "fs.img", root, 64)


def truncated_fs(base: Path, keep: int = 64 * 1024) -> Path:
    """An ext4 image cut after `keep` bytes: its superblock is there, its tables are not."""
    disk = ext4(base / "fs.img", root_tree(base, fstab="/ / ext4 0 0\n"), 16)
    with open(disk, "r+b") as image:
        image.truncate(keep)
    return disk


def damaged_fs(base: Path) -> Path:
    """An ext4 image whose group descriptors (after the superblock, 1 KiB blocks) are 0xff."""
    disk = ext4(base / "fs.img", root_tree(base, fstab="/ / ext4 0 0\n"), 16)
    with open(disk, "r+b") as image:
        image.seek(2048)
        image.write(b"\xff" * 2048)
    return disk


def _extent_header(entries: int, maximum: int, depth: int) -> bytes:
    return struct.pack("<HHHHI", EXTENT_MAGIC, entries, maximum, depth, 0)


def spinning_root_fs(base: Path, depth: int = 4) -> Path:
    """The root directory's extent tree has `depth` levels of 4 KiB blocks whose every entry
    points at the next level's one block, and the leaf's every extent at one empty directory
    block: a lookup in / visits 340**depth blocks (no entry ever matches), which no reader
    finishes; only its CPU limit stops it. No metadata checksums, so the library follows
    the hand-written tree."""
    root = root_tree(base, fstab="/dev/sda1 / ext4 defaults 0 1\n")
    disk = ext4(base / "fs.img", root, 32, options=("-b", str(BLOCK), "-O", "^metadata_csum"))
    first = disk.stat().st_size // BLOCK - depth - 8  # free blocks near the end
    with open(disk, "r+b") as image:
        for level in range(depth):
            below = depth - 1 - level
            body = _extent_header(PER_BLOCK, PER_BLOCK, below)
            for index in range(PER_BLOCK):
                if below:  # an index entry: first logical block, child block (lo, hi)
                    body += struct.pack("<IIHH", index, first + level + 1, 0, 0)
                else:  # an extent: first logical block, length, start (hi, lo)
                    body += struct.pack("<IHHI", index, 1, 0, first + depth)
            image.seek((first + level) * BLOCK)
            image.write(body)
        image.seek((first + depth) * BLOCK)  # one empty entry spanning the block
        image.write(struct.pack("<IHBB", 0, BLOCK, 0, 0).ljust(BLOCK, b"\0"))
    in_inode = _extent_header(1, 4, depth) + struct.pack("<IIHH", 0, first, 0, 0)
    words = struct.unpack("<6I", in_inode)
    debugfs_write(disk, *(f"sif <2> block[{index}] 0x{word:x}"
                          for index, word in enumerate(words)))
    return disk


def giant_geometry_fs(base: Path, size: int = 4 * 1024**3) -> Path:
    """A sparse ext4 image of `size` bytes whose superblock says so, with groups of 8 1 KiB
    blocks and descriptors of 1 KiB (both legal): opening it means reading one descriptor
    per 8 KiB of file system, 512 MiB of them by default. Only the first MiBs are written."""
    root = root_tree(base, fstab="/dev/sda1 / ext4 defaults 0 1\n")
    disk = ext4(base / "fs.img", root, 32,
                options=("-b", "1024", "-O", "64bit,^metadata_csum,^resize_inode,^flex_bg"))
    blocks, per_group, inodes_per_group = size // 1024, 8, 8
    groups = -(-(blocks - 1) // per_group)
    with open(disk, "r+b") as image:
        image.seek(1024)
        superblock = bytearray(image.read(1024))
        struct.pack_into("<II", superblock, 0, groups * inodes_per_group, blocks & 0xFFFFFFFF)
        struct.pack_into("<III", superblock, 32, per_group, per_group, inodes_per_group)
        struct.pack_into("<I", superblock, 0x150, blocks >> 32)
        struct.pack_into("<H", superblock, 0xFE, 1024)  # descriptor size
        image.seek(1024)
        image.write(superblock)
        image.truncate(size)
    return disk


def in_mbr_disk(base: Path, fs: Path, *, name: str = "disk.img") -> Path:
    """A disk with one MBR partition (at 1 MiB) holding the file system image `fs`, its
    size rounded up to a MiB."""
    sectors = -(-fs.stat().st_size // MIB) * MIB // SECTOR
    return write_disk(base / name, MIB + sectors * SECTOR, [Part(2048, sectors, 0x83,
                                                                  image=fs)])


def looping_extended_disk(base: Path) -> Path:
    """An MBR whose extended partition's chain of boot records links back to itself."""
    path = base / "disk.img"
    with open(path, "wb") as disk:
        disk.truncate(16 * MIB)
        disk.write(mbr_sector([(0, 0x05, 2048, 16384)]))
        disk.seek(2048 * SECTOR)  # a logical partition, then a link back to itself
        disk.write(mbr_sector([(0, 0x83, 2048, 2048), (0, 0x05, 4096, 4096)], disk_id=0))
        disk.seek(6144 * SECTOR)
        disk.write(mbr_sector([(0, 0x83, 2048, 1024), (0, 0x05, 4096, 4096)], disk_id=0))
    return path
