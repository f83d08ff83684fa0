"""Hostile disk images and archives, built with the real qemu-img and tarfile."""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import tarfile
from pathlib import Path

MIB = 1024 * 1024
BACKING_AT = 0x180000  # 1.5 MiB: past the first MiB, inside a 2 MiB first cluster


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def qemu_img_encrypted(*args: str, tries: int = 40) -> None:
    """qemu-img create with LUKS: it times the key derivation by the thread's CPU time and
    gives up ("Unable to get accurate CPU usage") when it measures none, which a loaded
    machine does for a third of the tries and more (seen: 13 of 40 beside the Xen suite)."""
    for attempt in range(tries):
        try:
            return qemu_img(*args)
        except subprocess.CalledProcessError as exc:
            if b"accurate CPU usage" not in exc.stderr or attempt == tries - 1:
                raise


def qcow2_backing_past_first_mib(path: Path, backing: str) -> Path:
    """A qcow2 with 2 MiB clusters whose backing file name lies at 1.5 MiB (qemu reads the
    name anywhere inside the first cluster); no backing format, so it is probed."""
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(path), "1M")
    name = backing.encode()
    with open(path, "r+b") as image:
        image.seek(BACKING_AT)
        image.write(name)
        image.seek(8)
        image.write(struct.pack(">QI", BACKING_AT, len(name)))
    return path


def qcow2_with_data_file(path: Path, data_file: Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data_file}", str(path), "1M")
    return path


def qcow2_with_backing(path: Path, backing: str) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", "-u", str(path), "1M")
    return path


def qcow2_encrypted(path: Path) -> Path:
    qemu_img_encrypted("create", "-q", "--object", "secret,id=s0,data=secret", "-f", "qcow2",
                       "-o", "encrypt.format=luks,encrypt.key-secret=s0", str(path), "1M")
    return path


def luks(path: Path) -> Path:
    qemu_img_encrypted("create", "-q", "--object", "secret,id=s0,data=secret", "-f", "luks",
                       "-o", "key-secret=s0", str(path), "1M")
    return path


def qcow2_huge_l1(path: Path, entries: int) -> Path:
    """A qcow2 whose header claims an L1 table of `entries` entries (8 bytes each) and the
    virtual size such a table maps, its table left sparse (reads as zeros)."""
    qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    with open(path, "r+b") as image:
        image.seek(24)
        image.write(struct.pack(">Q", entries * (65536 // 8) * 65536))  # 64 KiB clusters
        image.seek(36)
        image.write(struct.pack(">IQ", entries, 1024 * 1024))
    with open(path, "r+b") as image:
        image.truncate(max(2 * MIB, 1024 * 1024 + entries * 8))
    return path


def vmdk_descriptor(extent_line: str) -> str:
    return ("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            'createType="monolithicFlat"\n\n# Extent description\n'
            f"{extent_line}\n")


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], *, fmt: int = tarfile.GNU_FORMAT,
              compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buffer.getvalue()
    return gzip.compress(raw, 9) if compress else raw


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, b""


def long_name_record(size: int) -> bytes:
    """A raw GNU long-name header ('L') claiming `size` bytes of name (zeros follow)."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, size
    return info.tobuf(tarfile.USTAR_FORMAT)
