"""Writing an OVA: OVF 1.0 envelope (built with ElementTree), a SHA-256 manifest and
streamOptimized VMDKs, packed in that order into a tar as the OVF spec wants."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW = "http://www.vmware.com/schema/ovf"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
CHUNK = 1024 * 1024

for prefix, uri in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD), ("vmw", VMW)):
    ET.register_namespace(prefix, uri)


@dataclass
class OvaDisk:
    vmdk: Path  # a streamOptimized VMDK
    capacity: int


def _o(name: str) -> str:
    return f"{{{OVF}}}{name}"


def _item(section: ET.Element, instance: int, kind: int, name: str,
          **fields: str) -> None:
    item = ET.SubElement(section, f"{{{OVF}}}Item")
    values = {"ElementName": name, "InstanceID": str(instance), "ResourceType": str(kind),
              **fields}
    for key in sorted(values):  # rasd elements in alphabetical order, as the schema says
        ET.SubElement(item, f"{{{RASD}}}{key}").text = values[key]


def envelope(name: str, description: str, vcpus: int, memory_mib: int, disks: list[OvaDisk],
             macs: list[str], firmware: str = "bios") -> bytes:
    root = ET.Element(_o("Envelope"))
    references = ET.SubElement(root, _o("References"))
    disk_section = ET.SubElement(root, _o("DiskSection"))
    ET.SubElement(disk_section, _o("Info")).text = "Virtual disks"
    for index, disk in enumerate(disks):
        ET.SubElement(references, _o("File"), {
            _o("href"): disk.vmdk.name, _o("id"): f"file{index}",
            _o("size"): str(disk.vmdk.stat().st_size)})
        ET.SubElement(disk_section, _o("Disk"), {
            _o("capacity"): str(disk.capacity), _o("capacityAllocationUnits"): "byte",
            _o("diskId"): f"vmdisk{index}", _o("fileRef"): f"file{index}",
            _o("format"): STREAM_OPTIMIZED})
    networks = ET.SubElement(root, _o("NetworkSection"))
    ET.SubElement(networks, _o("Info")).text = "Networks"
    ET.SubElement(networks, _o("Network"), {_o("name"): "VM Network"})
    system = ET.SubElement(root, _o("VirtualSystem"), {_o("id"): name})
    ET.SubElement(system, _o("Info")).text = "A virtual machine exported by xenweb"
    ET.SubElement(system, _o("Name")).text = name
    if description:
        annotation = ET.SubElement(system, _o("AnnotationSection"))
        ET.SubElement(annotation, _o("Info")).text = "Description"
        ET.SubElement(annotation, _o("Annotation")).text = description
    hardware = ET.SubElement(system, _o("VirtualHardwareSection"))
    ET.SubElement(hardware, _o("Info")).text = "Virtual hardware"
    _item(hardware, 1, 3, f"{vcpus} virtual CPU(s)", VirtualQuantity=str(vcpus))
    _item(hardware, 2, 4, f"{memory_mib} MB of memory", AllocationUnits="byte * 2^20",
          VirtualQuantity=str(memory_mib))
    _item(hardware, 3, 6, "SCSI controller 0", Address="0", ResourceSubType="lsilogic")
    for index in range(len(disks)):
        _item(hardware, 10 + index, 17, f"Hard disk {index + 1}",
              AddressOnParent=str(index), HostResource=f"ovf:/disk/vmdisk{index}",
              Parent="3")
    for index, mac in enumerate(macs):
        _item(hardware, 30 + index, 10, f"Network adapter {index + 1}", Address=mac,
              AutomaticAllocation="true", Connection="VM Network",
              ResourceSubType="E1000")
    ET.SubElement(hardware, f"{{{VMW}}}Config", {_o("required"): "false",
                                                  f"{{{VMW}}}key": "firmware",
                                                  f"{{{VMW}}}value": firmware})
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def write_ova(target: Path, name: str, ovf: bytes, disks: list[OvaDisk],
              on_bytes: Callable[[int], None] | None = None) -> None:
    digests = [f"SHA256({name}.ovf)= {hashlib.sha256(ovf).hexdigest()}\n"]
    digests += [f"SHA256({d.vmdk.name})= {_sha256(d.vmdk)}\n" for d in disks]
    with tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as tar:
        _add_bytes(tar, f"{name}.ovf", ovf)
        _add_bytes(tar, f"{name}.mf", "".join(digests).encode())
        for disk in disks:
            tar.add(disk.vmdk, arcname=disk.vmdk.name, recursive=False)
            if on_bytes is not None:
                on_bytes(disk.vmdk.stat().st_size)
