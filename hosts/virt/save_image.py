"""Reading the domain XML out of a save image ourselves, without libvirt.

libvirt's own reader, virConnectSaveImageGetXMLDesc, is no use on an image the app has not
checked: QEMU's driver parses the XML with the host's capabilities and, to get them, runs
the ``<emulator>`` the untrusted XML names, as root ("Failed to start QEMU binary /bin/sh
for probing"). The libxl driver has no such call at all. So the app reads the header of
each of libvirt's save formats itself, as libvirt does (a fixed header, then the XML as a
NUL-terminated string), and only hands an image to libvirt once that XML is the guest's
own (hosts.virt.save_xml).

Formats (libvirt 9): QEMU ``src/qemu/qemu_saveimage.h`` (92-byte header: magic, version,
data_len, was_running, compressed, cookieOffset, 14 unused words; then data_len bytes: the
XML, NUL, the migration cookie, padding); libxl ``src/libxl/libxl_domain.h`` (64-byte
header: magic, version, xmlLen, 10 unused words; then xmlLen bytes); the test driver
(15-byte magic, an int length up to 8192, the XML).
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable

from .host_uri import parse_uri
from .target import VirtTarget
from .volumes import read_head

QEMU_MAGIC = b"LibvirtQemudSave"
QEMU_PARTIAL = b"LibvirtQemudPart"
QEMU_HEADER = 92
LIBXL_MAGIC = b"libvirt-xml\n \0 \r"
LIBXL_HEADER = 64
TEST_MAGIC = b"TestGuestMagic\0"
TEST_MAX = 8192
# A domain XML is a few KiB; QEMU pads its header to 64 KiB beyond it.
MAX_HEADER = 4 * 1024 * 1024
FIRST_READ = 4096


class SaveImageFormatError(ValueError):
    """Not one of libvirt's save images, or a damaged one."""


def _u32(head: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", head, offset)[0])


def _xml(data: bytes) -> str:
    """The C string libvirt parses: up to the first NUL, which must exist."""
    end = data.find(b"\0")
    if end < 0:
        raise SaveImageFormatError("its domain XML is not terminated")
    try:
        xml = data[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaveImageFormatError("its domain XML is not UTF-8 text") from exc
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise SaveImageFormatError("its domain XML carries a document type (libvirt "
                                   "writes none)")
    return xml


def xml_span(head: bytes) -> tuple[int, int]:
    """(offset, length) of the XML area, from the image's first bytes."""
    if head.startswith(QEMU_PARTIAL):
        raise SaveImageFormatError("it is an incomplete save (the save broke off)")
    if head.startswith(QEMU_MAGIC):
        if len(head) < QEMU_HEADER:
            raise SaveImageFormatError("its header is cut short")
        version, data_len = _u32(head, 16), _u32(head, 20)
        cookie = _u32(head, 32)
        if version not in (1, 2) or not 0 < data_len <= MAX_HEADER or cookie >= data_len:
            raise SaveImageFormatError("its QEMU save header is not one libvirt wrote")
        return QEMU_HEADER, data_len
    if head.startswith(LIBXL_MAGIC):
        if len(head) < LIBXL_HEADER:
            raise SaveImageFormatError("its header is cut short")
        version, xml_len = _u32(head, 16), _u32(head, 20)
        if version not in (1, 2) or not 0 < xml_len <= MAX_HEADER:
            raise SaveImageFormatError("its libxl save header is not one libvirt wrote")
        return LIBXL_HEADER, xml_len
    if head.startswith(TEST_MAGIC):
        if len(head) < len(TEST_MAGIC) + 4:
            raise SaveImageFormatError("its header is cut short")
        (length,) = struct.unpack_from("<i", head, len(TEST_MAGIC))
        if not 0 < length <= TEST_MAX:
            raise SaveImageFormatError("its header is not one libvirt wrote")
        return len(TEST_MAGIC) + 4, length
    raise SaveImageFormatError("it does not start like a libvirt save image")


def parse(read: Callable[[int], bytes]) -> str:
    """The domain XML of the image whose first `n` bytes `read(n)` returns."""
    head = read(FIRST_READ)
    offset, length = xml_span(head)
    data = head if offset + length <= len(head) else read(offset + length)
    if len(data) < offset + length:
        raise SaveImageFormatError("it ends inside its header")
    area = data[offset:offset + length]
    if head.startswith(TEST_MAGIC):
        area += b"\0"  # the test driver writes the length without a NUL and adds one
    return _xml(area)


def read_local(path: str) -> Callable[[int], bytes]:
    """Reading a save file on this machine (the test driver's): a regular file only, never
    through a symlink, a device or a FIFO."""

    def read(count: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise SaveImageFormatError(f"it cannot be opened ({exc.strerror})") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SaveImageFormatError("it is not a regular file")
            return os.pread(fd, count, 0)
        finally:
            os.close(fd)

    return read


def read_xml(target: VirtTarget, path: str) -> str:
    """The domain XML in the save image at `path` on the host (the test driver's host is
    this process: its files are read here). SaveImageFormatError when it is none."""
    if parse_uri(target.uri).driver == "test":
        return parse(read_local(path))
    return parse(lambda count: read_head(target, path, count))
