"""Writes XVA files for the tests, from the format's rules (not from the app's code):
ova.xml first (XML-RPC struct with version and objects), then per VDI 1 MiB chunks
`Ref:N/%08d` each followed by its `.xxhash` (or `.checksum`), zero chunks omitted
except the first and last, optionally a zero-length keep-alive chunk in a gap."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from xml.etree import ElementTree as ET

import xxhash
import zstandard

CHUNK = 1024 * 1024


def _value(parent: ET.Element, value: object) -> None:
    element = ET.SubElement(parent, "value")
    if isinstance(value, dict):
        struct = ET.SubElement(element, "struct")
        for key, item in value.items():
            member = ET.SubElement(struct, "member")
            ET.SubElement(member, "name").text = key
            _value(member, item)
    elif isinstance(value, list):
        data = ET.SubElement(ET.SubElement(element, "array"), "data")
        for item in value:
            _value(data, item)
    elif isinstance(value, bool):
        ET.SubElement(element, "boolean").text = "1" if value else "0"
    else:
        element.text = str(value)


def ova_xml(name: str, sizes: list[int], *, vcpus: int = 2, memory_mib: int = 512,
            hvm: bool = True, mac: str = "02:00:00:aa:bb:cc") -> bytes:
    objects = [{"class": "VM", "id": "Ref:0", "snapshot": {
        "uuid": "6a5d5e2a-0000-4000-8000-000000000001", "name_label": name,
        "name_description": "from XCP-ng", "is_a_template": False,
        "memory_static_max": str(memory_mib * 1024 * 1024),
        "VCPUs_max": str(vcpus), "VCPUs_at_startup": str(vcpus),
        "HVM_boot_policy": "BIOS order" if hvm else "", "HVM_boot_params": {"order": "cd"},
        "PV_bootloader": "" if hvm else "pygrub", "PV_args": "",
        "VBDs": [f"Ref:{10 + i}" for i in range(len(sizes))] + ["Ref:99"],
        "VIFs": ["Ref:50"]}}]
    for i, size in enumerate(sizes):
        objects.append({"class": "VBD", "id": f"Ref:{10 + i}", "snapshot": {
            "VM": "Ref:0", "VDI": f"Ref:{20 + i}", "userdevice": str(i), "type": "Disk",
            "bootable": i == 0, "mode": "RW"}})
        objects.append({"class": "VDI", "id": f"Ref:{20 + i}", "snapshot": {
            "name_label": f"disk{i}", "virtual_size": str(size), "type": "system",
            "SR": "Ref:40"}})
    objects.append({"class": "VBD", "id": "Ref:99", "snapshot": {
        "VM": "Ref:0", "VDI": "OpaqueRef:NULL", "userdevice": "3", "type": "CD",
        "empty": True}})
    objects.append({"class": "VIF", "id": "Ref:50", "snapshot": {
        "MAC": mac, "device": "0", "network": "Ref:60", "VM": "Ref:0"}})
    root = ET.Element("root")
    _value(root, {"version": {"hostname": "xcp", "export_vsn": "2", "xapi_major": "1",
                              "xapi_minor": "20", "product_brand": "XCP-ng",
                              "product_version": "8.2.1", "build_number": "release",
                              "date": "2026-01-01"}, "objects": objects})
    return ET.tostring(root[0])


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_xva(target: Path, name: str, disks: list[Path], *, compress: str = "",
              checksum: str = ".xxhash", keep_alive: bool = True, xml: bytes | None = None,
              bad_chunk: int | None = None, hook: object = None, **vm: object) -> Path:
    """`hook(tar)` may add members after the disks (hostile tests)."""
    sizes = [d.stat().st_size for d in disks]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, "ova.xml", xml if xml is not None else ova_xml(name, sizes, **vm))
        for i, disk in enumerate(disks):
            ref, count = f"Ref:{20 + i}", (sizes[i] + CHUNK - 1) // CHUNK
            with open(disk, "rb") as handle:
                skipped = False
                for index in range(count):
                    data = handle.read(CHUNK)
                    if data == bytes(len(data)) and 0 < index < count - 1:
                        if keep_alive and not skipped:
                            add(tar, f"{ref}/{index:08d}", b"")
                            add(tar, f"{ref}/{index:08d}{checksum}", _sum(b"", checksum))
                        skipped = True
                        continue
                    add(tar, f"{ref}/{index:08d}", data)
                    digest = _sum(data, checksum)
                    if bad_chunk == index:
                        digest = _sum(data + b"!", checksum)
                    add(tar, f"{ref}/{index:08d}{checksum}", digest)
        if callable(hook):
            hook(tar)
    raw = buffer.getvalue()
    if compress == "gz":
        raw = gzip.compress(raw)
    elif compress == "zst":
        raw = zstandard.ZstdCompressor().compress(raw)
    target.write_bytes(raw)
    return target


def _sum(data: bytes, checksum: str) -> bytes:
    if checksum == ".xxhash":
        return xxhash.xxh64(data).hexdigest().encode()
    return hashlib.sha1(data).hexdigest().encode()  # noqa: S324 - the format says SHA-1
