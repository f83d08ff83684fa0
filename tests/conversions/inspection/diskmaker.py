"""Disks for the inspection tests, built in user space: MBR and GPT written in Python,
ext4 with `mkfs.ext4 -d`, FAT with `mkfs.vfat` and `mcopy`, initramfs cpio archives."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MIB = 1024**2
SECTOR = 512
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
GRUB_LIKE_CODE = b"\xeb\x63\x90" + b"\0" * 0x17A + b"GRUB \0Geom\0Hard Disk\0Read\0 Error\r\n\0"


@dataclass
class Part:
    start: int  # sector
    sectors: int
    kind: int | str = 0x83  # MBR type or GPT type GUID
    bootable: bool = False
    image: Path | None = None  # written at the partition's start


def mbr_sector(entries: Iterable[tuple[int, int, int, int]], code: bytes = b"",
               disk_id: int = 0x1234ABCD) -> bytes:
    """(status, type, first LBA, sectors) entries, up to four."""
    sector = bytearray(SECTOR)
    sector[:len(code[:440])] = code[:440]
    struct.pack_into("<I", sector, 440, disk_id)
    for index, (status, kind, first, count) in enumerate(entries):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * index, status, b"\0\0\0", kind,
                         b"\0\0\0", first, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def write_disk(path: Path, size: int, parts: list[Part], *, scheme: str = "mbr",
               code: bytes = b"", logical: list[Part] | None = None) -> Path:
    """A sparse disk image of `size` bytes with `parts` (and, for MBR, `logical` partitions
    inside an extended partition that is the last of `parts`)."""
    with open(path, "wb") as disk:
        disk.truncate(size)
        if scheme == "mbr":
            entries = [(0x80 if p.bootable else 0, int(p.kind), p.start, p.sectors)
                       for p in parts]
            disk.write(mbr_sector(entries, code))
            if logical:
                _write_ebrs(disk, parts[-1], logical)
        else:
            _write_gpt(disk, size, parts, code)
        for part in list(parts) + list(logical or []):
            if part.image is not None:
                disk.seek(part.start * SECTOR)
                with open(part.image, "rb") as image:
                    while chunk := image.read(MIB):
                        if chunk.count(0) == len(chunk):  # keep a sparse image's holes
                            disk.seek(len(chunk), os.SEEK_CUR)
                        else:
                            disk.write(chunk)
    return path


def _write_ebrs(disk: object, extended: Part, logical: list[Part]) -> None:
    for index, part in enumerate(logical):
        ebr_lba = part.start - 2048
        entries = [(0, int(part.kind), part.start - ebr_lba, part.sectors)]
        if index + 1 < len(logical):
            nxt = logical[index + 1]
            entries.append((0, 0x05, nxt.start - 2048 - extended.start, nxt.sectors + 2048))
        disk.seek(ebr_lba * SECTOR)  # type: ignore[attr-defined]
        disk.write(mbr_sector(entries, disk_id=0))  # type: ignore[attr-defined]


def gpt_structures(size: int, parts: list[Part], *, entries: int = 128) -> tuple[bytes, bytes]:
    """(header sector, entry array) of a primary GPT for a disk of `size` bytes."""
    sectors = size // SECTOR
    array = bytearray(entries * 128)
    for index, part in enumerate(parts):
        struct.pack_into("<16s16sQQQ", array, index * 128, uuid.UUID(str(part.kind)).bytes_le,
                         uuid.uuid4().bytes_le, part.start, part.start + part.sectors - 1, 0)
        array[index * 128 + 56:index * 128 + 56 + 8] = "test".encode("utf-16-le")
    header = bytearray(SECTOR)
    struct.pack_into("<8sIIIIQQQQ16sQIII", header, 0, b"EFI PART", 0x10000, 92, 0, 0, 1,
                     sectors - 1, 34, sectors - 34, uuid.uuid4().bytes_le, 2, entries, 128,
                     zlib.crc32(array))
    struct.pack_into("<I", header, 16, zlib.crc32(header[:92]))
    return bytes(header), bytes(array)


def _write_gpt(disk: object, size: int, parts: list[Part], code: bytes) -> None:
    protective = mbr_sector([(0, 0xEE, 1, min(size // SECTOR - 1, 0xFFFFFFFF))], code)
    header, array = gpt_structures(size, parts)
    disk.write(protective + header + array)  # type: ignore[attr-defined]


def ext4(path: Path, root: Path, mib: int, *, label: str = "", fs_uuid: str = "",
         options: tuple[str, ...] = ()) -> Path:
    """An ext4 image of `mib` MiB holding the tree `root`; `options` go to mkfs.ext4."""
    argv = ["mkfs.ext4", "-q", "-F", *options, "-d", str(root)]
    argv += ["-L", label] if label else []
    argv += ["-U", fs_uuid] if fs_uuid else []
    with open(path, "wb") as image:
        image.truncate(mib * MIB)
    subprocess.run([*argv, str(path)], check=True, capture_output=True)
    return path


def fat(path: Path, files: dict[str, bytes | Path], mib: int, *, label: str = "BOOT",
        volume_id: str = "") -> Path:
    with open(path, "wb") as image:
        image.truncate(mib * MIB)
    argv = ["mkfs.vfat", "-n", label] + (["-i", volume_id] if volume_id else [])
    subprocess.run([*argv, str(path)], check=True, capture_output=True)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    made: set[str] = set()
    for name, content in files.items():
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                subprocess.run(["mmd", "-i", str(path), f"::/{directory}"], check=True,
                               capture_output=True, env=env)
                made.add(directory)
        source = content if isinstance(content, Path) else path.with_suffix(".tmpfile")
        if not isinstance(content, Path):
            source.write_bytes(content)
        subprocess.run(["mcopy", "-i", str(path), str(source), f"::/{name.strip('/')}"],
                       check=True, capture_output=True, env=env)
    path.with_suffix(".tmpfile").unlink(missing_ok=True)
    return path


def cpio(files: dict[str, bytes], *, trailer: bool = True) -> bytes:
    """A newc cpio archive of regular files (their directories implied)."""
    out = bytearray()

    def entry(name: str, mode: int, data: bytes, ino: int) -> None:
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, data) in enumerate(files.items(), start=1):
        entry(name, 0o100644, data, ino)
    if trailer:
        entry("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def initramfs(modules: list[str], version: str = "6.1.0-57-amd64") -> bytes:
    """An early uncompressed cpio (microcode) followed by a gzip main cpio with modules."""
    early = cpio({"kernel/x86/microcode/GenuineIntel.bin": b"\0" * 100})
    files = {"init": b"#!/bin/sh\n", "bin/busybox": b"\x7fELF"}
    for module in modules:
        files[f"usr/lib/modules/{version}/kernel/drivers/{module}.ko"] = b"\0" * 64
    return early + gzip.compress(cpio(files))


def elf(notes: list[tuple[bytes, int, bytes]], machine: int = 62) -> bytes:
    """A 64-bit little-endian ELF with one PT_NOTE segment holding `notes`."""
    body = bytearray()
    for name, kind, desc in notes:
        named = name + b"\0"
        body += struct.pack("<III", len(named), len(desc), kind)
        body += named + b"\0" * (-len(named) % 4) + desc + b"\0" * (-len(desc) % 4)
    header = bytearray(64)
    header[:16] = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    struct.pack_into("<HHIQQQIHHHHHH", header, 16, 2, machine, 1, 0, 64, 0, 0, 64, 56, 1,
                     64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, 120, 0, 0, len(body), len(body), 4)
    return bytes(header) + phdr + bytes(body)


def bzimage(payload: bytes, version: str = "6.1.0-99-amd64", *, length: int | None = None,
            protocol: int = 0x20F) -> bytes:
    """An x86 bzImage: a setup header naming `payload` (already compressed)."""
    setup_sects = 4
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    text = f"{version} (test@example) #1 SMP".encode() + b"\0"
    setup[0x400:0x400 + len(text)] = text
    struct.pack_into("<H", setup, 0x20E, 0x400 - 0x200)
    struct.pack_into("<II", setup, 0x248, 0x100, len(payload) if length is None else length)
    return bytes(setup) + b"\0" * 0x100 + payload + struct.pack("<I", 12345)


VERSION = "6.1.0-57-amd64"
ROOT_UUID = "4b8c3c53-7f7e-4d8e-9b1e-0a1b2c3d4e5f"
CONFIG = (b"CONFIG_XEN=y\nCONFIG_XEN_PV=y\nCONFIG_PVH=y\nCONFIG_XEN_BLKDEV_FRONTEND=m\n"
          b"CONFIG_XEN_NETDEV_FRONTEND=m\nCONFIG_SATA_AHCI=y\nCONFIG_E1000=y\n")
MODULES = ["ata/ata_piix", "scsi/sd_mod", "block/xen-blkfront", "block/virtio_blk",
           "net/xen-netfront", "net/ethernet/intel/e1000e"]


def root_tree(base: Path, *, fstab: str, boot: dict[str, bytes | Path] | None = None,
              os_release: str = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                                'VERSION_ID="12"\n') -> Path:
    root = base / "root"
    for directory in ("etc", "bin", "boot", "usr/lib", "var/lib/dpkg"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/fstab").write_text(fstab)
    (root / "usr/lib/os-release").write_text(os_release)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/hostname").write_text("web1\n")
    (root / "var/lib/dpkg/status").write_text("")  # virt-inspector (bench) lists packages
    shutil.copy("/bin/dash", root / "bin/sh")
    for name, content in (boot or {}).items():
        target = root / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, target)
        else:
            target.write_bytes(content)
    return root


def syslinux_disk(base: Path, kernel: Path | bytes, *, fmt: str = "raw") -> Path:
    """The shape lab/bootdisk.py builds: MBR + SYSLINUX, FAT /boot, ext4 root."""
    fstab = f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\nUUID=ABCD-1234 /boot vfat " \
            "defaults 0 2\n"
    rootfs = ext4(base / "root.img", root_tree(base, fstab=fstab), 24, fs_uuid=ROOT_UUID)
    config = (b"UI menu.c32\nDEFAULT xen\nLABEL rescue\n  KERNEL /other\nLABEL xen\n"
              b"  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND root=UUID=" +
              ROOT_UUID.encode() + b" ro console=hvc0\n")
    bootfs = fat(base / "boot.img", {"syslinux.cfg": config, "vmlinuz": kernel,
                                     "initrd.img": initramfs(MODULES),
                                     f"config-{VERSION}": CONFIG}, 24, volume_id="ABCD1234")
    disk = write_disk(base / "disk.img", 52 * MIB, [Part(2048, 24 * 2048, 0x0C, True, bootfs),
                                                    Part(2048 + 24 * 2048, 24 * 2048, 0x83,
                                                         False, rootfs)],
                      code=SYSLINUX_MBR.read_bytes() if SYSLINUX_MBR.exists() else b"")
    if fmt == "raw":
        return disk
    out = base / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(disk), str(out)],
                   check=True)
    return out
