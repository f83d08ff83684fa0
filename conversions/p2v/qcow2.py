"""The guest-visible bytes of a qcow2 volume, read through plain range reads of its file.

libvirt downloads a volume's file as it is: for a qcow2 volume that is the container, not
the disk the guest sees. To verify a qcow2 copy against the source's checksums, this
module maps the file back: header → L1 table → L2 tables → where each cluster's data lies
in the file, or that it reads as zeros; then it reads the data clusters in guest order,
merging neighbours into long reads. It needs only ``read(offset, length)``, so it runs
over libvirt streams for remote hosts and over a local file in the tests.

Only what ``qemu-img convert`` writes is accepted (qcow2 version 2 or 3 without a
backing file, encryption, compressed clusters, an external data file, extended L2
entries or any other incompatible feature); anything else is refused, never guessed.
See docs/interop/qcow2.txt in QEMU for the format.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

from conversions.p2v.ssh import P2VError

MAGIC = b"QFI\xfb"
HEADER = struct.Struct(">4sIQIIQIIQQIIQ")  # the version 2 header (72 bytes)
HEADER_V3 = struct.Struct(">QQQII")  # incompatible/compatible/autoclear, refcount order, length
OFFSET_MASK = 0x00FFFFFFFFFFFE00  # bits 9-55 of L1 and L2 entries
COMPRESSED = 1 << 62
ZERO_FLAG = 1  # L2 bit 0 (version 3): the cluster reads as zeros
MAX_L1_ENTRIES = 4 * 1024 * 1024  # QEMU's own limit (QCOW_MAX_L1_SIZE, 32 MiB, / 8)
ZEROS = bytes(1024 * 1024)

Read = Callable[[int, int], Iterable[bytes]]  # (file offset, length) -> chunks


class Qcow2Error(P2VError):
    """The volume is not a qcow2 image this module reads; the message says why."""


@dataclass(frozen=True)
class Layout:
    cluster_size: int
    size: int  # virtual size: what the guest sees
    l1_offset: int
    l1_entries: int


@dataclass
class Extent:
    """``length`` guest bytes from ``guest``: at ``host`` in the file, or zeros (None)."""

    guest: int
    length: int
    host: int | None


def read_exact(read: Read, offset: int, length: int) -> bytes:
    data = b"".join(read(offset, length))
    if len(data) != length:
        raise Qcow2Error(f"The qcow2 file ends before byte {offset + length}.")
    return data


def parse_header(data: bytes) -> Layout:
    """The layout of an image this module accepts, from its first 104 bytes."""
    (magic, version, backing_offset, _backing_size, cluster_bits, size, crypt, l1_entries,
     l1_offset, _refcount_offset, _refcount_clusters, _snapshots, _snapshot_offset) = \
        HEADER.unpack_from(data)
    if magic != MAGIC or version not in (2, 3):
        raise Qcow2Error("The volume is not a qcow2 image of version 2 or 3.")
    if version == 3:
        incompatible = HEADER_V3.unpack_from(data, HEADER.size)[0]
        if incompatible:
            raise Qcow2Error(f"The qcow2 image uses features this check does not read "
                             f"(incompatible feature bits {incompatible:#x}).")
    if backing_offset or crypt:
        raise Qcow2Error("The qcow2 image has a backing file or is encrypted.")
    if not 9 <= cluster_bits <= 21 or l1_entries > MAX_L1_ENTRIES or l1_offset % 512:
        raise Qcow2Error("The qcow2 header is not valid.")
    cluster_size = 1 << cluster_bits
    l2_span = cluster_size // 8 * cluster_size  # guest bytes one L2 table maps
    if l1_entries * l2_span < size:
        raise Qcow2Error("The qcow2 L1 table does not cover the image's size.")
    return Layout(cluster_size=cluster_size, size=size, l1_offset=l1_offset,
                  l1_entries=l1_entries)


def _cluster_host(entry: int, guest: int) -> int | None:
    """Where a cluster's data lies in the file, per its L2 entry, or None: zeros."""
    if entry & COMPRESSED:
        raise Qcow2Error(f"The qcow2 cluster at guest offset {guest} is compressed.")
    if entry & ZERO_FLAG:
        return None
    return (entry & OFFSET_MASK) or None  # unallocated (no backing file): zeros


def _append(extents: list[Extent], guest: int, length: int, host: int | None) -> None:
    last = extents[-1] if extents else None
    if last is not None and last.guest + last.length == guest and (
            (host is None and last.host is None)
            or (host is not None and last.host is not None
                and last.host + last.length == host)):
        last.length += length
    else:
        extents.append(Extent(guest, length, host))


def extents(read: Read, layout: Layout) -> list[Extent]:
    """The guest disk, in order, as runs of zeros and runs of contiguous file data."""
    found: list[Extent] = []
    entries_per_table = layout.cluster_size // 8
    l1 = struct.unpack(f">{layout.l1_entries}Q",
                       read_exact(read, layout.l1_offset, layout.l1_entries * 8))
    guest = 0
    for l1_entry in l1:
        if guest >= layout.size:
            break
        span = min(entries_per_table * layout.cluster_size, layout.size - guest)
        table_offset = l1_entry & OFFSET_MASK
        if not table_offset:
            _append(found, guest, span, None)
            guest += span
            continue
        table = read_exact(read, table_offset, layout.cluster_size)
        for (entry,) in struct.iter_unpack(">Q", table):
            if guest >= layout.size:
                break
            length = min(layout.cluster_size, layout.size - guest)
            _append(found, guest, length, _cluster_host(entry, guest))
            guest += length
    return found


def guest_chunks(read: Read, size: int) -> Generator[bytes, None, None]:
    """The first ``size`` guest-visible bytes of the qcow2 image, in order."""
    layout = parse_header(read_exact(read, 0, HEADER.size + HEADER_V3.size))
    if layout.size != size:
        raise Qcow2Error(f"The qcow2 image is {layout.size} bytes, not {size}.")
    for extent in extents(read, layout):
        if extent.host is None:
            left = extent.length
            while left:
                step = min(left, len(ZEROS))
                yield ZEROS[:step]
                left -= step
            continue
        received = 0
        for chunk in read(extent.host, extent.length):
            received += len(chunk)
            yield chunk
        if received != extent.length:
            raise Qcow2Error(f"The qcow2 file ends inside the data at guest offset "
                             f"{extent.guest}.")
