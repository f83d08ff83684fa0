"""Reading an OVF envelope (untrusted XML, through defusedxml) into a Proposal.

References (files), DiskSection (capacities, formats), the first VirtualSystem and its
VirtualHardwareSection by rasd ResourceType: 3 CPU, 4 memory, 5/6/20 IDE/SCSI/SATA
controllers, 10 NIC, 14 floppy, 15/16 CD/DVD, 17 disk; firmware from `vmw:Config`.
Element names are matched by local name, so OVF 1.x and 2.x read alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from conversions.v2v.proposal import (
    MAX_DISK_BYTES,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    ImportRefused,
    Proposal,
    ProposedDisk,
    ProposedNic,
    whole_number,
)
from conversions.v2v.vmx import MAC, os_family

MAX_OVF_BYTES = 4 * 1024 * 1024
UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$", re.IGNORECASE)
NAMED_UNITS = {"bytes": 0, "kilobytes": 10, "megabytes": 20, "gigabytes": 30,
               "kb": 10, "mb": 20, "gb": 30}
CONTROLLERS = {"5": "ide", "6": "scsi", "20": "sata"}
MAX_UNIT_SHIFT = 40  # byte * 2^40 (TiB units): larger than any real OVF uses
MAX_ADDRESS = 255  # controller and unit addresses


@dataclass
class OvfFile:
    id: str
    href: str
    size: int | None
    compression: str = ""  # "" or gzip (ovf:compression): the file in the package is gzipped


@dataclass
class Envelope:
    proposal: Proposal
    files: dict[str, OvfFile] = field(default_factory=dict)  # by id
    disk_files: dict[str, str] = field(default_factory=dict)  # disk id → file id


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(element: Element, name: str) -> str:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _child_text(element: Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "").strip() if found else ""


def _find(root: Element, name: str) -> Element | None:
    return next((e for e in root.iter() if _local(e.tag) == name), None)


def _int(value: str, what: str, high: int = MAX_DISK_BYTES, low: int = 0) -> int:
    try:
        return whole_number(value, f"OVF {what}", low=low, high=high)
    except ImportRefused as exc:
        raise ImportRefused(f"The OVF's {what} \"{str(value)[:40]}\" is not a whole number "
                            f"between {low} and {high}.") from exc


def unit_shift(units: str, default: int) -> int:
    """The power of two of an OVF allocation unit ("byte * 2^20" → 20), at most 2^40."""
    if not units:
        return default
    if len(units) > 64:
        raise ImportRefused("The OVF unit is longer than any unit: refused.")
    match = UNITS.match(units)
    if match:
        base, power = match.groups()
        if base is None:
            return 0
        if base != "2":
            raise ImportRefused(f"The OVF unit \"{units}\" is not a power of two.")
        if len(power) > 3 or int(power) > MAX_UNIT_SHIFT:
            raise ImportRefused(f"The OVF unit \"{units}\" is larger than 2^{MAX_UNIT_SHIFT} "
                                "bytes: refused.")
        return int(power)
    named = NAMED_UNITS.get(units.strip().lower())
    if named is None:
        raise ImportRefused(f"The OVF unit \"{units}\" is unknown.")
    return named


def scaled(quantity: int, shift: int, what: str, high: int) -> int:
    """`quantity` units of 2^`shift` bytes, refused above `high` before it is computed."""
    if quantity > high >> shift:
        raise ImportRefused(f"The OVF's {what} ({quantity} * 2^{shift} bytes) is larger than "
                            f"{high} bytes: refused.")
    return quantity << shift


def _disk_format(url: str) -> str:
    lowered = url.lower()
    if "vmdk" in lowered:
        return "vmdk"
    if "qcow" in lowered:
        return "qcow2"
    if "raw" in lowered or not lowered:
        return "raw"
    raise ImportRefused(f"The OVF disk format \"{url}\" is not supported.")


def parse_ovf(data: bytes, *, source: str) -> Envelope:
    if len(data) > MAX_OVF_BYTES:
        raise ImportRefused("The OVF descriptor is larger than 4 MiB: refused.")
    try:
        root = fromstring(data, forbid_dtd=True)
    except (DefusedXmlException, ParseError) as exc:
        raise ImportRefused(f"The OVF descriptor is not safe, well-formed XML: {exc}") from exc
    if _local(root.tag) != "Envelope":
        raise ImportRefused("The OVF descriptor has no Envelope.")
    envelope = Envelope(proposal=Proposal(source=source, kind="ova"))
    references = _find(root, "References")
    for item in _children(references, "File") if references is not None else []:
        size, href = _attr(item, "size"), _attr(item, "href")
        compression = _attr(item, "compression").lower()
        if compression not in ("", "identity", "gzip"):
            raise ImportRefused(f"'{href}' is {compression}-compressed: OVF files can be "
                                "imported uncompressed or gzip-compressed.")
        if _attr(item, "chunkSize"):
            raise ImportRefused(f"'{href}' is split into chunks (ovf:chunkSize): join the "
                                "chunks into one file first.")
        envelope.files[_attr(item, "id")] = OvfFile(
            id=_attr(item, "id"), href=href, size=_int(size, "file size") if size else None,
            compression="gzip" if compression == "gzip" else "")
    capacities: dict[str, tuple[int, str]] = {}
    section = _find(root, "DiskSection")
    for disk in _children(section, "Disk") if section is not None else []:
        disk_id = _attr(disk, "diskId")
        shift = unit_shift(_attr(disk, "capacityAllocationUnits"), 0)
        capacity = scaled(_int(_attr(disk, "capacity"), "disk capacity"), shift,
                          "disk capacity", MAX_DISK_BYTES)
        capacities[disk_id] = (capacity, _disk_format(_attr(disk, "format")))
        envelope.disk_files[disk_id] = _attr(disk, "fileRef")
    system = _find(root, "VirtualSystem")
    if system is None:
        raise ImportRefused("The OVF describes no VirtualSystem (OVF collections are not "
                            "imported).")
    _system(envelope, system, capacities)
    return envelope


def _system(envelope: Envelope, system: Element,
            capacities: dict[str, tuple[int, str]]) -> None:
    proposal = envelope.proposal
    proposal.name = _child_text(system, "Name") or _attr(system, "id")
    annotation = _find(system, "AnnotationSection")
    if annotation is not None:
        proposal.description = _child_text(annotation, "Annotation")
    os_section = _find(system, "OperatingSystemSection")
    if os_section is not None:
        proposal.guest_os = _attr(os_section, "osType") or _child_text(os_section,
                                                                       "Description")
        proposal.os_family = os_family(proposal.guest_os)
    hardware = _find(system, "VirtualHardwareSection")
    if hardware is None:
        raise ImportRefused("The OVF's VirtualSystem has no VirtualHardwareSection.")
    items = [_item(e) for e in _children(hardware, "Item") + _children(hardware,
                                                                       "StorageItem")
             + _children(hardware, "EthernetPortItem")]
    for config in _children(hardware, "Config"):
        if _attr(config, "key") == "firmware":
            proposal.firmware = "efi" if _attr(config, "value").lower() == "efi" else "bios"
        if _attr(config, "key") == "uefi.secureBoot.enabled":
            proposal.secure_boot = _attr(config, "value").lower() == "true"
    controllers = {i["InstanceID"]: i for i in items if i.get("ResourceType") in CONTROLLERS}
    for item in items:
        kind = item.get("ResourceType", "")
        if kind == "3":
            # Bounded here, judged by Proposal.check_limits (MAX_VCPUS).
            proposal.vcpus = _int(item.get("VirtualQuantity", ""), "vCPU count", low=-MAX_VCPUS)
            cores = item.get("CoresPerSocket")
            if cores:
                proposal.cores_per_socket = _int(cores, "cores per socket", MAX_VCPUS)
        elif kind == "4":
            shift = unit_shift(item.get("AllocationUnits", ""), 20)
            quantity = _int(item.get("VirtualQuantity", ""), "memory", low=-MAX_DISK_BYTES)
            proposal.memory_mib = scaled(quantity, shift, "memory",
                                         MAX_MEMORY_MIB << 20) >> 20
        elif kind == "10":
            mac = item.get("Address", "").lower()
            if mac and not MAC.match(mac):
                raise ImportRefused(f"A NIC has the invalid MAC address \"{mac}\".")
            proposal.nics.append(ProposedNic(
                mac=mac, mac_type="static" if mac else "generated",
                model=item.get("ResourceSubType", "").lower(),
                network=item.get("Connection", "")))
        elif kind in ("14", "15", "16", "17"):
            proposal.disks.append(_disk(item, kind, controllers, capacities, envelope))
    order = {"scsi": 0, "ide": 1, "sata": 2, "nvme": 3, "fdc": 4}
    proposal.disks.sort(key=lambda d: (order.get(d.bus, 9), d.controller, d.unit))
    proposal.warnings.append("The guest comes from VMware: boot it as HVM with emulated "
                             "disks first and install the Xen PV drivers.")


def _item(element: Element) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for child in element:
        name = _local(child.tag)
        if name == "HostResource":
            values.setdefault("HostResource", (child.text or "").strip())
        else:
            values[name] = (child.text or "").strip()
    return values


def _disk(item: dict[str, Any], kind: str, controllers: dict[str, dict[str, Any]],
          capacities: dict[str, tuple[int, str]], envelope: Envelope) -> ProposedDisk:
    parent = controllers.get(item.get("Parent", ""))
    bus = CONTROLLERS[parent["ResourceType"]] if parent else ("fdc" if kind == "14"
                                                              else "ide")
    controller = _int(parent.get("Address") or "0", "controller address",
                      MAX_ADDRESS) if parent else 0
    unit = _int(item.get("AddressOnParent") or "0", "address on parent", MAX_ADDRESS)
    device = {"14": "floppy", "15": "cdrom", "16": "cdrom", "17": "disk"}[kind]
    disk = ProposedDisk(device=device, bus=bus, controller=controller, unit=unit,
                        format="raw")
    resource = item.get("HostResource", "")
    if device != "disk":
        disk.source = resource
        return disk
    disk_id = resource.rsplit("/", 1)[-1]
    if disk_id not in capacities:
        raise ImportRefused(f"A disk item names \"{resource}\", which the DiskSection does "
                            "not declare.")
    capacity, fmt = capacities[disk_id]
    ovf_file = envelope.files.get(envelope.disk_files.get(disk_id, ""))
    if ovf_file is None:
        raise ImportRefused(f"Disk {disk_id} names no file of the References section.")
    disk.source, disk.format, disk.virtual_size = ovf_file.href, fmt, capacity
    disk.ref, disk.compression = disk_id, ovf_file.compression
    return disk
