"""Checking uploaded disk images as a whole before anything uses them.

An image may point outside itself (a backing file or an external data file such as
``/etc/shadow`` or a host block device), be encrypted (a LUKS header nobody here holds
the key to), or pretend to be raw while being qcow2 (so that whoever later probes it,
libvirt's pool refresh for one, follows its backing chain). All of these are refused.

The checks, in order (`check_image`):

1. The image's start (`HEADER_BYTES`, kept while the bytes stream through) is read by
   this module first: magic numbers of every format that can name another file, and for
   qcow2 every header field, bounded before any arithmetic. qcow2 keeps its backing
   file name and all header extensions (data file, encryption) inside its first
   cluster, at most 2 MiB: the header copy holds all of it.
2. qemu-img reads that copy (under prlimit, storage.qemu_img): with the declared format
   for qcow2, probing only for a raw declaration once step 1 found no format that could
   make qemu-img open another file.
3. The stored volume as a whole: where this machine holds its file, ``qemu-img info -f
   <declared>`` on that file, under the same bounds; everywhere, libvirt's own report
   after a pool refresh (the volume's format and ``<backingStore>``).
"""

from __future__ import annotations

import re
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

from storage.errors import ImageRefused
from storage.qemu_img import QemuImgFailed, file_args, info_json

# qcow2's largest cluster (cluster_bits 21): its header, backing file name and header
# extensions all lie inside the first cluster.
HEADER_BYTES = 2 * 1024 * 1024
MAX_VIRTUAL_SIZE = 1 << 50  # 1 PiB
QCOW_MAGIC = b"QFI\xfb"
QCOW2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")  # version 2 fields (72 bytes)
QCOW2_HEADER_V3 = struct.Struct(">QQQII")  # feature bits, refcount order, header length
QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024  # QEMU's QCOW_MAX_L1_SIZE
QCOW2_MAX_REFTABLE_BYTES = 8 * 1024 * 1024  # QEMU's QCOW_MAX_REFTABLE_SIZE
QCOW2_MAX_SNAPSHOTS = 65536  # QEMU's QCOW_MAX_SNAPSHOTS
# Incompatible features: 0 dirty, 3 compression type, 4 extended L2 are self-contained;
# 1 corrupt and 2 external data file are refused, unknown bits too.
QCOW2_ACCEPTED_INCOMPATIBLE = (1 << 0) | (1 << 3) | (1 << 4)
EXT_END, EXT_BACKING_FORMAT, EXT_FEATURES = 0, 0xE2792ACA, 0x6803F857
EXT_ENCRYPTION, EXT_BITMAPS, EXT_DATA_FILE = 0x0537BE77, 0x23852875, 0x44415441
# Formats that can make qemu or libvirt open another file, by their magic number.
REFERRING_MAGIC = {b"QFI\xfb": "qcow2", b"QED\x00": "qed", b"KDMV": "vmdk",
                   b"COWD": "vmdk", b"LUKS\xba\xbe": "luks"}
PROBE_BYTES = 2048  # what qemu's format probes look at (BLOCK_PROBE_BUF_SIZE)
VMDK_TEXT = re.compile(rb"^[ \t]*(version|createType)[ \t]*=", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class ImageFacts:
    format: str
    virtual_size: int
    backing_file: str = ""
    data_file: str = ""
    encrypted: bool = False


def _facts(info: dict[str, Any]) -> ImageFacts:
    specific = (info.get("format-specific") or {}).get("data") or {}
    try:
        size = int(info.get("virtual-size", 0))
    except (TypeError, ValueError):
        size = -1
    return ImageFacts(
        format=str(info.get("format", "")), virtual_size=size,
        backing_file=str(info.get("backing-filename") or info.get("full-backing-filename")
                         or ""),
        data_file=str(specific.get("data-file") or ""),
        encrypted=bool(info.get("encrypted") or specific.get("encrypt")),
    )


def refuse_external(facts: ImageFacts) -> None:
    if facts.backing_file:
        raise ImageRefused(f"The image has a backing file ({facts.backing_file}): only "
                           "self-contained images can be uploaded.")
    if facts.data_file:
        raise ImageRefused(f"The image keeps its data in an external file ({facts.data_file}):"
                           " only self-contained images can be uploaded.")
    if facts.encrypted:
        raise ImageRefused("The image is encrypted: only unencrypted images can be uploaded.")
    if not 0 <= facts.virtual_size <= MAX_VIRTUAL_SIZE:
        raise ImageRefused(f"The image claims a virtual size of {facts.virtual_size} bytes: "
                           "refused.")


def referring_format(header: bytes) -> str:
    """The format that could make qemu-img or libvirt open another file, if the image's
    start carries one's signature ("" when none)."""
    for magic, name in REFERRING_MAGIC.items():
        if header.startswith(magic):
            return name
    if VMDK_TEXT.search(header[:PROBE_BYTES]):
        return "vmdk"
    return ""


def _qcow2_extensions(header: bytes, start: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = start
    for _ in range(1024):
        if offset + 8 > min(end, len(header)):
            return found
        kind, length = struct.unpack_from(">II", header, offset)
        if kind == EXT_END:
            return found
        data_end = offset + 8 + length
        if data_end > end:
            raise ImageRefused("The qcow2 header extension runs past the image's first "
                               "cluster: refused.")
        found[kind] = header[offset + 8:data_end]
        offset = data_end + (-length % 8)
    raise ImageRefused("The qcow2 header has too many extensions: refused.")


def check_qcow2_header(header: bytes, *, whole: bool) -> None:
    """Every qcow2 header field bounded before it is used; refuses backing files, data
    files, encryption and unknown incompatible features. `whole`: `header` is the
    complete image (shorter than HEADER_BYTES)."""
    if len(header) < QCOW2_HEADER.size:
        raise ImageRefused("The qcow2 image ends inside its header.")
    (magic, version, backing_offset, backing_size, cluster_bits, size, crypt, l1_entries,
     _l1_offset, _reftable_offset, reftable_clusters, snapshots, _snapshot_offset) = \
        QCOW2_HEADER.unpack_from(header)
    if magic != QCOW_MAGIC or version not in (2, 3):
        raise ImageRefused(f"The image is not a qcow2 image of version 2 or 3 (version "
                           f"{version}).")
    if backing_offset or backing_size:
        name = header[backing_offset:backing_offset + min(backing_size, 1023)] \
            if backing_offset < len(header) else b""
        shown = f" ({name.decode('utf-8', 'replace')})" if name else ""
        raise ImageRefused(f"The image has a backing file{shown}: only self-contained "
                           "images can be uploaded.")
    if crypt:
        raise ImageRefused("The image is encrypted: only unencrypted images can be uploaded.")
    if not 9 <= cluster_bits <= 21:
        raise ImageRefused(f"The qcow2 cluster size 2^{cluster_bits} is not valid.")
    cluster = 1 << cluster_bits
    if size > MAX_VIRTUAL_SIZE:
        raise ImageRefused(f"The qcow2 image claims {size} bytes: refused.")
    l2_span = (cluster // 8) * cluster
    needed = -(-size // l2_span)
    if l1_entries * 8 > QCOW2_MAX_L1_BYTES or l1_entries > max(needed, 1) * 2 + 64:
        raise ImageRefused(f"The qcow2 L1 table has {l1_entries} entries for a "
                           f"{size}-byte image: refused.")
    if reftable_clusters * cluster > QCOW2_MAX_REFTABLE_BYTES * 2:
        raise ImageRefused("The qcow2 refcount table is absurdly large: refused.")
    if snapshots > QCOW2_MAX_SNAPSHOTS:
        raise ImageRefused(f"The qcow2 image claims {snapshots} snapshots: refused.")
    if not whole and len(header) < cluster:
        raise ImageRefused("The qcow2 header could not be read whole.")
    start = QCOW2_HEADER.size
    if version == 3:
        if len(header) < QCOW2_HEADER.size + QCOW2_HEADER_V3.size:
            raise ImageRefused("The qcow2 image ends inside its header.")
        incompatible, _compatible, _autoclear, _refcount_order, start = \
            QCOW2_HEADER_V3.unpack_from(header, QCOW2_HEADER.size)
        if incompatible & (1 << 2):
            raise ImageRefused("The image keeps its data in an external data file: only "
                               "self-contained images can be uploaded.")
        if incompatible & ~QCOW2_ACCEPTED_INCOMPATIBLE:
            raise ImageRefused(f"The qcow2 image uses incompatible features "
                               f"{incompatible:#x} (corrupt, or unknown here): refused.")
        if not QCOW2_HEADER.size <= start <= cluster:
            raise ImageRefused("The qcow2 header length is not valid.")
    extensions = _qcow2_extensions(header, start, cluster)
    if EXT_DATA_FILE in extensions:
        raise ImageRefused("The image names an external data file: only self-contained "
                           "images can be uploaded.")
    if EXT_ENCRYPTION in extensions:
        raise ImageRefused("The image is encrypted: only unencrypted images can be uploaded.")


def _probe_copy(header: bytes, fmt: str | None) -> ImageFacts:
    """qemu-img (bounded) on a copy of the image's start: with `fmt`, or probing."""
    with tempfile.NamedTemporaryFile(prefix="xenweb-header-", suffix=".img") as copy:
        copy.write(header[:HEADER_BYTES])
        copy.flush()
        args = file_args(copy.name, fmt) if fmt else [copy.name]
        try:
            return _facts(info_json(args))
        except QemuImgFailed as exc:
            raise ImageRefused(f"The image is not a valid {fmt or 'disk'} image: {exc}") \
                from exc


def detect_format(header: bytes, declared: str) -> ImageFacts:
    """What the image's start really is, refusing anything but a self-contained image of
    the `declared` format (raw or qcow2)."""
    whole = len(header) < HEADER_BYTES
    found = referring_format(header)
    if declared == "qcow2":
        if found != "qcow2":
            raise ImageRefused(f"The image was declared qcow2 but is "
                               f"{found or 'not a qcow2 image'}: upload it into a volume "
                               "of its format.")
        check_qcow2_header(header, whole=whole)
        facts = _probe_copy(header, "qcow2")
    elif declared == "raw":
        if found:
            raise ImageRefused(f"The image was declared raw but is {found}: upload it into "
                               "a volume of that format (a raw volume never holds another "
                               "format's image).")
        facts = _probe_copy(header, None)
    else:
        raise ImageRefused(f"Images are uploaded as raw or qcow2, not '{declared}'.")
    if facts.format != declared:
        raise ImageRefused(f"The image was declared {declared} but is {facts.format}: "
                           "upload it into a volume of that format.")
    refuse_external(facts)
    return facts


def check_file(path: str, declared: str) -> ImageFacts:
    """The stored image as a whole, opened with its declared format only (bounded)."""
    try:
        facts = _facts(info_json(file_args(path, declared)))
    except QemuImgFailed as exc:
        raise ImageRefused(f"The image is not a valid {declared} image: {exc}") from exc
    if facts.format != declared:
        raise ImageRefused(f"The image was declared {declared} but is {facts.format}.")
    refuse_external(facts)
    return facts


def check_libvirt_report(declared: str, reported_format: str, backing: str) -> None:
    """What libvirt itself makes of the stored volume after a pool refresh."""
    if backing:
        raise ImageRefused(f"libvirt reads a backing file ({backing}) in the image: only "
                           "self-contained images can be uploaded.")
    if reported_format and reported_format != declared:
        raise ImageRefused(f"The image was declared {declared} but libvirt reads it as "
                           f"{reported_format}.")


def check_image(header: bytes, declared: str, written_path: str | None = None) -> ImageFacts:
    """Refuse (ImageRefused) an image that is not self-contained or not `declared`.

    `header` is the image's start (HEADER_BYTES, or all of a shorter image);
    `written_path`, when the app can read the written volume (local hosts,
    ``Host.files_local`` hosts), is checked as a whole, opened with the declared format only.
    """
    probed = detect_format(header, declared)
    if written_path is None:
        return probed
    return check_file(written_path, declared)
