"""A Linux kernel image: its version, architecture and whether it runs as a Xen PV guest.

The answer is read, never guessed: an x86 bzImage's setup header gives the compressed
payload (payload_offset/payload_length), which is decompressed with a cap into a temporary
file; the ELF inside carries the Xen ELF notes (name "Xen"). A kernel built with
CONFIG_XEN_PV has XEN_ELFNOTE_ENTRY (the PV entry point, arch/x86/xen/xen-head.S); one built
with CONFIG_PVH has XEN_ELFNOTE_PHYS32_ENTRY (the PVH entry).
"""

from __future__ import annotations

import bz2
import lzma
import mmap
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from conversions.inspection.errors import InspectionError
from conversions.inspection.run import ReaderFailed, run_to_file

MAX_KERNEL_IMAGE = 128 * 1024**2
MAX_VMLINUX = 256 * 1024**2
MAX_PHDRS = 256
MAX_SHDRS = 4096
MAX_NOTES_BYTES = 1024**2
MAX_NOTES = 1024
CHUNK = 1024**2

XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_PHYS32_ENTRY = 18
MACHINES = {3: "i686", 62: "x86_64", 183: "aarch64", 40: "armv7l", 8: "mips", 20: "ppc",
            21: "ppc64", 22: "s390x", 243: "riscv64"}
MAGICS = (
    (b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x02\x21\x4c\x18", "lz4"), (b"\x89LZO", "lzo"),
    (b"\x5d\x00\x00", "lzma"),
)


@dataclass(frozen=True)
class ElfFacts:
    arch: str
    bits: int
    xen_notes: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelFacts:
    version: str  # from the image's header, when it has one
    arch: str
    compression: str
    xen_pv: bool | None  # None: could not be read (the reason in `evidence`)
    xen_pvh: bool | None
    evidence: str


class _Decompressor(Protocol):
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


def compression_of(data: bytes) -> str:
    return next((name for magic, name in MAGICS if data.startswith(magic)), "")


def decompress_to(data: bytes, kind: str, out_path: str, max_bytes: int,
                  enough: Callable[[bytes], int | None] | None = None) -> None:
    """Decompress the stream `data` of `kind` into `out_path`, at most `max_bytes`; what
    follows the stream is ignored. `enough(first chunk)` may say how many bytes are needed:
    decompression stops there. InspectionError if damaged, too large or unreadable."""
    if kind in ("zstd", "lz4"):
        _external(data, kind, out_path, max_bytes)
        return
    decompressor: _Decompressor
    if kind == "gzip":
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif kind == "xz":
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    elif kind == "lzma":
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    elif kind == "bzip2":
        decompressor = bz2.BZ2Decompressor()
    else:
        raise InspectionError(f"{kind or 'unknown'}-compressed: no reader here")
    written = 0
    pending = data
    needed: int | None = None
    try:
        with open(out_path, "wb") as out:
            while True:
                chunk = decompressor.decompress(pending, CHUNK)
                pending = getattr(decompressor, "unconsumed_tail", b"")
                written += len(chunk)
                if written > max_bytes:
                    raise InspectionError(f"decompresses to more than {max_bytes} bytes")
                out.write(chunk)
                if enough is not None and needed is None and written:
                    needed = enough(chunk) or max_bytes + 1
                if getattr(decompressor, "eof", False) or (needed and written >= needed):
                    break
                if not chunk and not pending and getattr(decompressor, "needs_input", True):
                    break  # the input ended early: keep what was read
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise InspectionError(f"the {kind} stream is damaged ({exc})") from exc


def _external(data: bytes, kind: str, out_path: str, max_bytes: int) -> None:
    tool = shutil.which(kind)
    if tool is None:
        raise InspectionError(f"{kind}-compressed: no reader ({kind} is not installed)")
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(out_path), suffix=f".{kind}") as src:
        src.write(data)
        src.flush()
        try:
            code = run_to_file([tool, "-q", "-d", "-c", src.name], out_path,
                               max_bytes=max_bytes)
        except ReaderFailed as exc:
            raise InspectionError(f"{kind} failed: {exc}") from exc
    if code == -25:  # SIGXFSZ
        raise InspectionError(f"decompresses to more than {max_bytes} bytes")
    if code != 0 and os.path.getsize(out_path) == 0:
        raise InspectionError(f"the {kind} stream is damaged")


def read_elf(view: bytes | mmap.mmap) -> ElfFacts:
    """The machine and the Xen notes of an ELF image (PT_NOTE segments, else SHT_NOTE)."""
    if len(view) < 64 or view[:4] != b"\x7fELF":
        raise InspectionError("not an ELF image")
    bits = {1: 32, 2: 64}.get(view[4])
    endian = {1: "<", 2: ">"}.get(view[5])
    if bits is None or endian is None:
        raise InspectionError("an ELF image of unknown class")
    machine = struct.unpack_from(f"{endian}H", view, 18)[0]
    if bits == 64:
        phoff, shoff = struct.unpack_from(f"{endian}QQ", view, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(f"{endian}HHHH", view, 54)
    else:
        phoff, shoff = struct.unpack_from(f"{endian}II", view, 28)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(f"{endian}HHHH", view, 42)
    ranges = _note_ranges(view, endian, bits, phoff, phentsize, phnum, program=True)
    if not ranges:
        ranges = _note_ranges(view, endian, bits, shoff, shentsize, shnum, program=False)
    notes: dict[int, bytes] = {}
    count = 0
    for start, size in ranges:
        for name, kind, desc in _notes(view, endian, start, size):
            count += 1
            if count > MAX_NOTES:
                raise InspectionError("the ELF image holds too many notes")
            if name == b"Xen":
                notes.setdefault(kind, desc)
    return ElfFacts(MACHINES.get(machine, f"machine {machine}"), bits, notes)


def _note_ranges(view: bytes | mmap.mmap, endian: str, bits: int, offset: int, entsize: int,
                 count: int, *, program: bool) -> list[tuple[int, int]]:
    if not offset or not count:
        return []
    if count > (MAX_PHDRS if program else MAX_SHDRS):
        raise InspectionError("the ELF image has an absurd number of headers")
    minimum = (56 if bits == 64 else 32) if program else (64 if bits == 64 else 40)
    if entsize < minimum or offset + entsize * count > len(view):
        raise InspectionError("the ELF image's headers lie outside it")
    found = []
    for index in range(count):
        at = offset + index * entsize
        if program:
            kind = struct.unpack_from(f"{endian}I", view, at)[0]
            if bits == 64:
                start, size = struct.unpack_from(f"{endian}Q16xQ", view, at + 8)
            else:
                start, size = struct.unpack_from(f"{endian}I8xI", view, at + 4)
            wanted = kind == 4  # PT_NOTE
        else:
            kind = struct.unpack_from(f"{endian}I", view, at + 4)[0]
            if bits == 64:
                start, size = struct.unpack_from(f"{endian}QQ", view, at + 24)
            else:
                start, size = struct.unpack_from(f"{endian}II", view, at + 16)
            wanted = kind == 7  # SHT_NOTE
        if wanted:
            if size > MAX_NOTES_BYTES or start + size > len(view):
                raise InspectionError("an ELF note lies outside the image or is too large")
            found.append((start, size))
    return found


def _notes(view: bytes | mmap.mmap, endian: str, start: int,
           size: int) -> list[tuple[bytes, int, bytes]]:
    found = []
    at, end = start, start + size
    while at + 12 <= end:
        namesz, descsz, kind = struct.unpack_from(f"{endian}III", view, at)
        name_at = at + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        after = desc_at + (descsz + 3) // 4 * 4
        if after > end:
            raise InspectionError("an ELF note runs past its segment")
        found.append((bytes(view[name_at:name_at + namesz]).rstrip(b"\0"), kind,
                      bytes(view[desc_at:desc_at + descsz])))
        at = after
    return found


def bzimage_header(data: bytes) -> tuple[str, bytes] | None:
    """(version string, compressed payload) of an x86 bzImage, None if it is not one."""
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    protocol = struct.unpack_from("<H", data, 0x206)[0]
    setup_sects = data[0x1F1] or 4
    version = ""
    pointer = struct.unpack_from("<H", data, 0x20E)[0]
    if pointer and 0x200 + pointer < len(data):
        raw = data[0x200 + pointer:0x200 + pointer + 256].split(b"\0", 1)[0]
        version = raw.decode("ascii", "replace").split(" ", 1)[0]
    if protocol < 0x208:
        raise InspectionError(f"a bzImage of boot protocol {protocol >> 8}.{protocol & 0xff}: "
                              "too old to say where its payload lies")
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if not length or start + length > len(data):
        raise InspectionError("the bzImage's payload lies outside the file (truncated?)")
    return version, data[start:start + length]


def inspect_kernel(data: bytes) -> KernelFacts:
    """Facts of the kernel image `data` (a bzImage, or a possibly compressed ELF vmlinux);
    what cannot be read is None with the reason in `evidence`."""
    try:
        header = bzimage_header(data)
    except InspectionError as exc:
        return KernelFacts("", "", "", None, None, f"kernel image: {exc}")
    version, payload = header if header else ("", data)
    if payload[:4] == b"\x7fELF":
        compression = "none"
        return _from_elf(payload, version, compression)
    compression = compression_of(payload)
    if not compression:
        arch = "aarch64" if data[0x38:0x3C] == b"ARM\x64" else ""
        return KernelFacts(version, arch, "", None, None,
                           "kernel image: not a bzImage or ELF kernel this reads")
    with tempfile.TemporaryDirectory(prefix="xenweb-kernel-") as tmp:
        out = os.path.join(tmp, "vmlinux")
        try:
            decompress_to(payload, compression, out, MAX_VMLINUX, enough=_notes_end)
        except InspectionError as exc:
            return KernelFacts(version, "", compression, None, None,
                               f"kernel image: unknown ({compression}: {exc})")
        if os.path.getsize(out) < 64:
            return KernelFacts(version, "", compression, None, None,
                               "kernel image: the payload is empty")
        with open(out, "rb") as vmlinux, \
                mmap.mmap(vmlinux.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return _from_elf(view, version, compression)


def _notes_end(head: bytes) -> int | None:
    """Where the ELF's last PT_NOTE segment ends, when its program headers are in `head`
    (the notes follow the kernel's text: the data after them need not be decompressed)."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    phoff = struct.unpack_from("<Q", head, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    if phentsize < 56 or not 0 < phnum <= MAX_PHDRS or phoff + phentsize * phnum > len(head):
        return None
    ends = []
    for index in range(phnum):
        at = phoff + index * phentsize
        if struct.unpack_from("<I", head, at)[0] == 4:
            start, size = struct.unpack_from("<Q16xQ", head, at + 8)
            ends.append(start + size)
    return max(ends) if ends else None


def _from_elf(view: bytes | mmap.mmap, version: str, compression: str) -> KernelFacts:
    try:
        elf = read_elf(view)
    except InspectionError as exc:
        return KernelFacts(version, "", compression, None, None, f"kernel image: {exc}")
    pv = XEN_ELFNOTE_ENTRY in elf.xen_notes
    pvh = XEN_ELFNOTE_PHYS32_ENTRY in elf.xen_notes
    if elf.xen_notes:
        evidence = (f"kernel image: Xen ELF notes ({'with' if pv else 'without'} the PV entry "
                    f"point, {'with' if pvh else 'without'} the PVH entry point)")
    else:
        evidence = "kernel image: no Xen ELF notes"
    return KernelFacts(version, elf.arch, compression, pv, pvh, evidence)
