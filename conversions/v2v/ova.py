"""OVA (a tar of an OVF, its manifest and disks) and OVF directories.

The tar is never extracted: its headers are read one by one and every member must be a
regular file with a plain, unique name (absolute paths, `..`, sub-directories, links and
devices are refused). The OVF and the manifest are read from the archive in memory;
disks are read by qemu-img in place (a raw window of the archive at the member's
offset), or, gzip-compressed (``ovf:compression="gzip"``), unpacked into the import's
scratch space when the import runs. The `.mf` digests (SHA-1 / SHA-256) are verified for
every file it lists (of the files as packed).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from conversions.v2v import qemu, vmdk
from conversions.v2v.archives import ArchiveRefused, BoundedTarInfo, member_kind
from conversions.v2v.ovf import MAX_OVF_BYTES, Envelope, parse_ovf
from conversions.v2v.proposal import ImportRefused, Proposal, ProposedDisk
from conversions.v2v.sources import sibling

MANIFEST_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$")
CHUNK = 1024 * 1024
MAX_MEMBERS = 1000


def _clean_name(name: str) -> str:
    if name.startswith("./"):
        name = name[2:]
    if (not name or name.startswith("/") or "/" in name or "\\" in name
            or name in (".", "..") or "\x00" in name or len(name) > 255):
        raise ImportRefused(f"The archive holds the member '{name}': absolute paths, '..' "
                            "and sub-directories are refused.")
    return name


def scan_tar(path: Path) -> dict[str, tarfile.TarInfo]:
    """Every member's header, checked; nothing is extracted."""
    members: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, mode="r:", tarinfo=BoundedTarInfo) as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise ImportRefused("The archive holds too many members.")
                name = _clean_name(member.name)
                kind = member_kind(member)
                if kind:
                    raise ImportRefused(f"The archive member '{name}' is a {kind}: only "
                                        "regular files are accepted.")
                if name in members:
                    raise ImportRefused(f"The archive holds '{name}' twice.")
                if member.offset_data + member.size > path.stat().st_size:
                    raise ImportRefused(f"The archive is truncated inside '{name}'.")
                members[name] = member
    except ArchiveRefused as exc:
        raise ImportRefused(f"The archive holds {exc}: refused.") from exc
    except tarfile.TarError as exc:
        raise ImportRefused(f"The file is not a readable (uncompressed) tar archive: {exc}") \
            from exc
    return members


def _read_member(handle: BinaryIO, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise ImportRefused(f"'{member.name}' is larger than {limit} bytes: refused.")
    handle.seek(member.offset_data)
    return handle.read(member.size)


def parse_manifest(text: str) -> dict[str, tuple[str, str]]:
    """{file name: (algorithm, hex digest)} from a `.mf`."""
    digests: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = MANIFEST_LINE.match(line.strip())
        if not match:
            raise ImportRefused(f"The manifest has a line it cannot read: {line[:80]!r}")
        algorithm, name, digest = match.groups()
        digests[name.strip()] = (algorithm.lower(), digest.lower())
    return digests


def _digest(handle: BinaryIO, offset: int, size: int, algorithm: str,
            on_bytes: Callable[[int], None] | None = None) -> str:
    hasher = hashlib.new(algorithm)
    handle.seek(offset)
    left = size
    while left:
        chunk = handle.read(min(CHUNK, left))
        if not chunk:
            raise ImportRefused("The archive ended early while its checksums were verified.")
        hasher.update(chunk)
        left -= len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return hasher.hexdigest()


def inspect_ova(path: Path, source: str) -> Proposal:
    members = scan_tar(path)
    ovfs = [name for name in members if name.lower().endswith(".ovf")]
    if len(ovfs) != 1:
        raise ImportRefused(f"An OVA holds exactly one .ovf descriptor; this one holds "
                            f"{len(ovfs)}.")
    with open(path, "rb") as handle:
        envelope = parse_ovf(_read_member(handle, members[ovfs[0]], MAX_OVF_BYTES),
                             source=source)
        manifests = [n for n in members if n.lower().endswith(".mf")]
        digests = parse_manifest(_read_member(handle, members[manifests[0]], 1024 * 1024)
                                 .decode("utf-8", "replace")) if manifests else {}
        proposal = envelope.proposal
        proposal.kind = "ova"
        if not manifests:
            proposal.warnings.append("The OVA has no manifest: its files are not verified.")
        elif ovfs[0] in digests:
            algorithm, expected = digests[ovfs[0]]
            member = members[ovfs[0]]
            if _digest(handle, member.offset_data, member.size, algorithm) != expected:
                raise ImportRefused(f"The manifest's {algorithm.upper()} of '{ovfs[0]}' does "
                                    "not match: the OVA is damaged or was altered.")
        for name in digests:
            if name not in members:
                raise ImportRefused(f"The manifest lists '{name}', which the OVA lacks.")
        placed: dict[str, dict[str, int]] = {}
        for disk in proposal.images:
            member = members.get(disk.source)
            if member is None:
                raise ImportRefused(f"The OVF names the disk file '{disk.source}', which the "
                                    "OVA lacks.")
            _check_declared_size(envelope, disk.source, member.size)
            if disk.compression == "gzip":
                # Checked in full once unpacked, when the import runs (unpack_member).
                _check_gzip_start(handle, member, disk)
                proposal.warnings.append(f"'{disk.source}' is gzip-compressed: the import "
                                         "unpacks it first, then checks and converts it.")
            else:
                _check_image(qemu.Image(str(path), disk.format, offset=member.offset_data,
                                        size=member.size), handle, member.offset_data, disk)
            disk.member = disk.source
            placed[disk.source] = {"offset": member.offset_data, "size": member.size}
    proposal.extra["members"] = placed
    proposal.extra["digests"] = {n: list(d) for n, d in digests.items()}
    return proposal


def _check_image(image: qemu.Image, handle: BinaryIO, base: int, disk: ProposedDisk) -> None:
    """A disk image as the OVF declares it: its format, self-contained, its size."""
    if disk.format == "vmdk":
        vmdk.embedded_descriptor(handle, base, disk.source)
    found = qemu.info(image)
    qemu.check_self_contained(image, found)
    if found.virtual_size != disk.virtual_size:
        raise ImportRefused(f"The OVF declares {disk.virtual_size} bytes for "
                            f"'{disk.source}' but the disk holds {found.virtual_size}.")


def _gunzipped(handle: BinaryIO, offset: int, size: int) -> Iterator[bytes]:
    """The gzip member at `offset` (`size` bytes in the archive), unpacked piece by piece."""
    unpacker = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    handle.seek(offset)
    left = size
    try:
        while left > 0:
            packed = handle.read(min(CHUNK, left))
            if not packed:
                raise ImportRefused("The OVA is truncated inside a compressed disk.")
            left -= len(packed)
            while packed:
                yield unpacker.decompress(packed, CHUNK)
                packed = unpacker.unconsumed_tail
            if unpacker.eof:
                break
        tail = unpacker.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise ImportRefused(f"A compressed disk of the OVA is damaged: {exc}.") from None
    if not unpacker.eof:
        raise ImportRefused("A compressed disk of the OVA ends before its gzip stream does.")


def _check_gzip_start(handle: BinaryIO, member: tarfile.TarInfo, disk: ProposedDisk) -> None:
    if disk.format != "vmdk":
        return
    head = next(_gunzipped(handle, member.offset_data, member.size), b"")
    if head[:4] != vmdk.SPARSE_MAGIC:
        raise ImportRefused(f"'{disk.source}' is not a gzip-compressed sparse VMDK.")


def unpack_member(path: Path, place: dict[str, int], disk: ProposedDisk, target: Path,
                  on_progress: Callable[[float], None]) -> None:
    """Unpack a gzip-compressed disk of the OVA to `target` (sparse), then check it as an
    uncompressed one is checked at inspection. An image that unpacks to more than its
    format can hold for the declared size is refused (a gzip bomb)."""
    limit = disk.virtual_size * 2 + 64 * 1024 * 1024
    written = 0
    with open(path, "rb") as handle, open(target, "wb") as out:
        for piece in _gunzipped(handle, place["offset"], place["size"]):
            written += len(piece)
            if written > limit:
                raise ImportRefused(f"'{disk.source}' unpacks to more than {limit} bytes for "
                                    f"a {disk.virtual_size}-byte disk: refused.")
            if piece.count(0) == len(piece):
                out.seek(len(piece), os.SEEK_CUR)
            else:
                out.write(piece)
            on_progress(min(handle.tell() - place["offset"], place["size"]) / place["size"])
        out.truncate(written)
    with open(target, "rb") as handle:
        _check_image(qemu.Image(str(target), disk.format), handle, 0, disk)


def _check_declared_size(envelope: Envelope, href: str, size: int) -> None:
    for item in envelope.files.values():
        if item.href == href and item.size is not None and item.size != size:
            raise ImportRefused(f"The OVF declares {item.size} bytes for '{href}' but the "
                                f"archive holds {size}.")


def verify_digests(path: Path, proposal: Proposal,
                   on_bytes: Callable[[int], None] | None = None) -> None:
    """Check the manifest's digest of every member the import reads (before converting)."""
    digests = proposal.extra.get("digests") or {}
    members = proposal.extra.get("members") or {}
    with open(path, "rb") as handle:
        for name, place in members.items():
            if name not in digests:
                continue
            algorithm, expected = digests[name]
            if _digest(handle, place["offset"], place["size"], algorithm,
                       on_bytes) != expected:
                raise ImportRefused(f"The manifest's {algorithm.upper()} of '{name}' does not "
                                    "match: the OVA is damaged or was altered.")


def inspect_ovf(path: Path, source: str) -> Proposal:
    """An OVF descriptor with its disks beside it (an unpacked OVA)."""
    data = path.read_bytes() if path.stat().st_size <= MAX_OVF_BYTES else b"x" * (
        MAX_OVF_BYTES + 1)
    envelope = parse_ovf(data, source=source)
    proposal = envelope.proposal
    proposal.kind = "ovf"
    from conversions.v2v.inspect import relative

    manifest = path.with_suffix(".mf")
    digests = parse_manifest(manifest.read_text("utf-8", "replace")) \
        if manifest.is_file() else {}
    if not digests:
        proposal.warnings.append("No manifest beside the OVF: its files are not verified.")
    for name, (algorithm, expected) in digests.items():
        file = sibling(path.parent, name, what="manifest entry")
        with open(file, "rb") as handle:
            if _digest(handle, 0, file.stat().st_size, algorithm) != expected:
                raise ImportRefused(f"The manifest's {algorithm.upper()} of '{name}' does "
                                    "not match.")
    for disk in proposal.images:
        if disk.compression:
            raise ImportRefused(f"'{disk.source}' is gzip-compressed: import the OVA that "
                                "holds it, or unpack it beside the OVF first.")
        file = sibling(path.parent, disk.source, what="disk file")
        _check_declared_size(envelope, disk.source, file.stat().st_size)
        if disk.format != "vmdk":
            raise ImportRefused(f"'{disk.source}' is {disk.format}: OVF disks are imported "
                                "from VMDK.")
        facts = vmdk.check_vmdk(file)
        if facts.virtual_size != disk.virtual_size:
            raise ImportRefused(f"The OVF declares {disk.virtual_size} bytes for "
                                f"'{disk.source}' but the disk holds {facts.virtual_size}.")
        disk.path = relative(file)
    return proposal
