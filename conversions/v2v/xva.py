"""XVA (XenServer/XCP-ng export): `ova.xml` and disks rebuilt from `Ref:N/` chunks.

The archive (plain, gzip or zstd) is read as a stream, never extracted: `ova.xml` comes
first; then, per VDI, 1 MiB chunks named `Ref:N/%08d` (the chunk's index; chunks of
zeros are omitted, so gaps read as zeros; zero-length chunks are keep-alives), each
followed by its `.xxhash` (XXH64) or `.checksum` (SHA-1) which is verified. Anything
else in the archive (links, devices, other names, duplicates) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import xxhash
import zstandard
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from conversions.v2v.archives import ArchiveRefused, BoundedTarInfo, member_kind
from conversions.v2v.proposal import (
    MAX_DISK_BYTES,
    MAX_MEMORY_MIB,
    ImportRefused,
    Proposal,
    ProposedDisk,
    ProposedNic,
    whole_number,
)
from conversions.v2v.vmx import MAC

CHUNK = 1024 * 1024
MAX_OVA_XML = 16 * 1024 * 1024
MAX_CHECKSUM = 1024  # a hex digest (XXH64: 16, SHA-1: 40 characters) and some blanks
MAX_USERDEVICE = 25  # xvda … xvdz
MEMBER = re.compile(r"^(Ref:[0-9A-Za-z-]+)/(\d{8})(\.xxhash|\.checksum)?$")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextlib.contextmanager
def open_stream(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive as a forward-only tar stream, decompressed on the fly."""
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        try:
            if magic.startswith(GZIP_MAGIC):
                with tarfile.open(fileobj=raw, mode="r|gz", tarinfo=BoundedTarInfo) as tar:
                    yield tar
            elif magic == ZSTD_MAGIC:
                reader = zstandard.ZstdDecompressor().stream_reader(raw)
                with reader, tarfile.open(fileobj=reader, mode="r|",
                                          tarinfo=BoundedTarInfo) as tar:
                    yield tar
            else:
                with tarfile.open(fileobj=raw, mode="r|", tarinfo=BoundedTarInfo) as tar:
                    yield tar
        except ArchiveRefused as exc:
            raise ImportRefused(f"The XVA holds {exc}: refused.") from exc
        except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
            raise ImportRefused(f"The XVA is truncated or not a (gzip/zstd) tar archive: "
                                f"{exc or exc.__class__.__name__}") from exc


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    """A member's bytes, refused unread when it is larger than `limit`."""
    if member.size > limit:
        raise ImportRefused(f"The XVA member '{member.name}' has {member.size} bytes; at most "
                            f"{limit} are expected there: refused.")
    handle = tar.extractfile(member)
    if handle is None:
        raise ImportRefused(f"'{member.name}' cannot be read.")
    data = handle.read(limit)
    if len(data) != member.size:
        raise ImportRefused(f"The XVA is truncated inside '{member.name}'.")
    return data


# -- ova.xml (XML-RPC values) ----------------------------------------------------------


def _value(element: Element) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    typed = children[0]
    if typed.tag == "struct":
        return {(m.findtext("name") or ""): _value(m.find("value"))  # type: ignore[arg-type]
                for m in typed.findall("member") if m.find("value") is not None}
    if typed.tag == "array":
        data = typed.find("data")
        return [_value(v) for v in (data.findall("value") if data is not None else [])]
    if typed.tag in ("int", "i4", "i8"):
        return int(typed.text or 0)
    if typed.tag == "boolean":
        return (typed.text or "").strip() == "1"
    return typed.text or ""


def parse_ova_xml(data: bytes) -> dict[str, Any]:
    try:
        root = fromstring(data, forbid_dtd=True)
    except (DefusedXmlException, ParseError) as exc:
        raise ImportRefused(f"ova.xml is not safe, well-formed XML: {exc}") from exc
    parsed = _value(root) if root.tag == "value" else None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("objects"), list):
        raise ImportRefused("ova.xml has no version and objects records.")
    return parsed


def _number(record: dict[str, Any], key: str, what: str, high: int = MAX_DISK_BYTES,
            low: int = 0) -> int:
    """A number of ova.xml, bounded before any arithmetic uses it."""
    value = record.get(key, "0")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ImportRefused(f"ova.xml's {what} is not a number.")
    text = str(value).strip() or "0"
    try:
        return whole_number(text, f"ova.xml {what}", low=low, high=high)
    except ImportRefused as exc:
        raise ImportRefused(f"ova.xml's {what} \"{text[:40]}\" is not a number between {low} "
                            f"and {high}.") from exc


def _record(value: Any) -> dict[str, Any]:
    """A struct of ova.xml, or {} for anything else (a malformed file is refused later)."""
    return value if isinstance(value, dict) else {}


def _snapshot(objects: dict[str, Any], ref: Any) -> dict[str, Any]:
    if not isinstance(ref, str):
        return {}
    return _record(_record(objects.get(ref)).get("snapshot"))


def _refs(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def proposal_from(parsed: dict[str, Any], source: str) -> Proposal:
    objects = {str(o.get("id")): o for o in parsed["objects"] if isinstance(o, dict)}
    vms = [o for o in objects.values() if o.get("class") == "VM"
           and not _record(o.get("snapshot")).get("is_a_template")]
    vms = vms or [o for o in objects.values() if o.get("class") == "VM"]
    if len(vms) != 1:
        raise ImportRefused(f"ova.xml must describe one VM; it describes {len(vms)}.")
    vm = _record(vms[0].get("snapshot"))
    hvm = bool(vm.get("HVM_boot_policy"))
    boot_params = vm.get("HVM_boot_params") or {}
    proposal = Proposal(
        source=source, kind="xva", name=str(vm.get("name_label", "")),
        description=str(vm.get("name_description", "")), type="hvm" if hvm else "pv",
        firmware="efi" if isinstance(boot_params, dict) and boot_params.get("firmware")
        == "uefi" else "bios",
        vcpus=_number(vm, "VCPUs_at_startup", "VCPUs_at_startup") or _number(
            vm, "VCPUs_max", "VCPUs_max"),
        # Bounded here, judged by Proposal.check_limits.
        memory_mib=_number(vm, "memory_static_max", "memory_static_max",
                           MAX_MEMORY_MIB << 20, low=-MAX_DISK_BYTES) // (1024 * 1024),
        uuid=str(vm.get("uuid", "")))
    proposal.extra.update(pv_bootloader=vm.get("PV_bootloader", ""),
                          pv_args=vm.get("PV_args", ""))
    vbds = [_snapshot(objects, ref) for ref in _refs(vm.get("VBDs"))]
    for vbd in sorted(vbds, key=lambda v: _number(v, "userdevice", "VBD userdevice",
                                                  MAX_USERDEVICE)):
        unit = _number(vbd, "userdevice", "VBD userdevice", MAX_USERDEVICE)
        if str(vbd.get("type", "")).lower() == "cd":
            proposal.disks.append(ProposedDisk(device="cdrom", bus="xen", unit=unit,
                                               target=f"xvd{chr(ord('a') + unit)}"))
            continue
        vdi_ref = vbd.get("VDI", "")
        vdi = _snapshot(objects, vdi_ref)
        if not vdi:
            raise ImportRefused(f"A VBD names the VDI {vdi_ref}, which ova.xml lacks.")
        proposal.disks.append(ProposedDisk(
            device="disk", bus="xen", unit=unit, target=f"xvd{chr(ord('a') + unit)}",
            source=str(vdi.get("name_label", vdi_ref)), format="raw", ref=vdi_ref,
            virtual_size=_number(vdi, "virtual_size", "VDI virtual_size")))
    for ref in _refs(vm.get("VIFs")):
        vif = _snapshot(objects, ref)
        mac = str(vif.get("MAC", "")).lower()
        if mac and not MAC.match(mac):
            raise ImportRefused(f"A VIF has the invalid MAC address \"{mac}\".")
        proposal.nics.append(ProposedNic(mac=mac, mac_type="static" if mac else "generated",
                                         network=str(vif.get("network", ""))))
    if not hvm:
        proposal.warnings.append("A PV guest: it boots with pygrub on a Xen host; on other "
                                 "hosts import it as HVM.")
    return proposal


def inspect_xva(path: Path, source: str) -> Proposal:
    with open_stream(path) as tar:
        first = tar.next()
        if first is None or first.name != "ova.xml" or member_kind(first):
            raise ImportRefused("An XVA starts with ova.xml; this archive does not.")
        if first.size > MAX_OVA_XML:
            raise ImportRefused("ova.xml is larger than 16 MiB: refused.")
        proposal = proposal_from(parse_ova_xml(_read(tar, first, MAX_OVA_XML)), source)
    proposal.check_limits()
    return proposal


# -- disks ----------------------------------------------------------------------------


def _verify(kind: str, data: bytes, expected: bytes, name: str) -> None:
    digest = xxhash.xxh64(data).hexdigest() if kind == ".xxhash" else \
        hashlib.sha1(data).hexdigest()  # noqa: S324 - the format's own checksum
    if digest != expected.strip().decode("ascii", "replace").lower():
        raise ImportRefused(f"The checksum of chunk '{name}' does not match: the XVA is "
                            "damaged or was altered.")


def rebuild_disk(path: Path, disk: ProposedDisk, target: Path,
                 on_progress: Callable[[float], None]) -> None:
    """Write the VDI `disk.ref` as a raw image at `target` (sparse: gaps stay holes)."""
    size = disk.virtual_size
    last_index = -1
    pending: tuple[str, bytes] | None = None
    seen: set[str] = set()
    with open(target, "wb") as out, open_stream(path) as tar:
        out.truncate(size)
        for number, member in enumerate(tar):
            name = member.name
            if member_kind(member):
                raise ImportRefused(f"The XVA member '{name}' is not a regular file.")
            if name in seen:
                raise ImportRefused(f"The XVA holds '{name}' twice.")
            seen.add(name)
            if name == "ova.xml" and number == 0:
                continue
            match = MEMBER.match(name)
            if not match:
                raise ImportRefused(f"The XVA holds the unexpected member '{name}'.")
            ref, index_text, suffix = match.groups()
            if pending is not None:
                if not suffix or f"{ref}/{index_text}" != pending[0]:
                    raise ImportRefused(f"Chunk '{pending[0]}' has no checksum.")
                _verify(suffix, pending[1], _read(tar, member, MAX_CHECKSUM), pending[0])
                pending = None
                continue
            if suffix:
                raise ImportRefused(f"The checksum '{name}' follows no chunk.")
            if ref != disk.ref:
                if member.size > CHUNK:
                    raise ImportRefused(f"Chunk '{name}' is larger than 1 MiB.")
                pending = (name, _read(tar, member, CHUNK))
                continue
            index = int(index_text)
            if index <= last_index:
                raise ImportRefused(f"Chunk '{name}' comes out of order.")
            if member.size > CHUNK or index * CHUNK + member.size > size:
                raise ImportRefused(f"Chunk '{name}' lies beyond the disk's declared size "
                                    f"({size} bytes).")
            data = _read(tar, member, CHUNK)
            if data and data != bytes(len(data)):
                out.seek(index * CHUNK)
                out.write(data)
            last_index = index
            pending = (name, data)
            on_progress(min(1.0, (index * CHUNK + len(data)) / size) if size else 1.0)
    if pending is not None:
        raise ImportRefused(f"Chunk '{pending[0]}' has no checksum: the XVA is truncated.")
    if size and last_index < (size - 1) // CHUNK:
        raise ImportRefused(f"The XVA ends before the last chunk of {disk.ref}: it is "
                            "truncated.")


