"""Does a file's beginning look like a kernel or an initrd? (The first few KiB decide.)

A second line of defence behind choosing boot files by volume or name: a file that is not
a boot image (a text file, a key, an empty /proc file behind a link libvirt cannot tell
from a file) is never handed to the hypervisor as a kernel or an initrd.
"""

from __future__ import annotations

# Compressed payloads Linux and Xen unpack (kernels: Xen's PV loader; initrds: the kernel).
COMPRESSED = (
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x5d\x00\x00",  # lzma
    b"\x89LZO",  # lzop
    b"\x02\x21\x4c\x18",  # lz4 (legacy, what the kernel uses)
    b"\x04\x22\x4d\x18",  # lz4 frame
    b"\x28\xb5\x2f\xfd",  # zstd
)
CPIO = (b"070701", b"070702", b"070707", b"\xc7\x71", b"\x71\xc7")


def looks_like_kernel(head: bytes) -> bool:
    """An x86 bzImage, an ELF image (vmlinux, PVH, multiboot), an arm64 Image, or a
    compressed one."""
    return (head[0x202:0x206] == b"HdrS" or head.startswith(b"\x7fELF")
            or head[0x38:0x3c] == b"ARM\x64" or head.startswith(COMPRESSED))


def looks_like_initrd(head: bytes) -> bool:
    """A cpio archive (early microcode first, as Debian's), compressed or not."""
    return head.startswith(CPIO) or head.startswith(COMPRESSED)
