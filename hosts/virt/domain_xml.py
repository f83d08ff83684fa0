"""Domain XML built with ElementTree from a small spec, and parsed back the same way.

One builder serves every driver: Xen (libxl: PV `xenpv`, HVM `xenfv`, PVH `xenpvh`),
QEMU/KVM (the lab) and the test driver. The output follows what libvirt's own Xen
driver emits (compare ../shared/testdata/xen-xml/).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from defusedxml import ElementTree as SafeET

PV, HVM, PVH = "xen", "hvm", "xenpvh"
# The guest types a request may name (the short names and libvirt's), as os types.
GUEST_TYPES = {"pv": PV, "hvm": HVM, "pvh": PVH, "xen": PV, "xenpvh": PVH}
XEN_MACHINES = {PV: "xenpv", HVM: "xenfv", PVH: "xenpvh"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


class SpecError(ValueError):
    """The spec cannot become a domain; the message says which field and why."""


@dataclass(frozen=True)
class DiskSpec:
    source: str  # file path or block device
    target: str  # xvda, vda, hda…
    bus: str = "virtio"  # xen, virtio, ide, sata, scsi
    device: str = "disk"  # disk or cdrom
    format: str = "raw"
    readonly: bool = False
    shareable: bool = False
    block: bool = False  # source is a block device


@dataclass(frozen=True)
class NicSpec:
    mac: str
    bridge: str = ""
    network: str = ""
    model: str = ""  # empty: the driver's default (netfront on Xen PV)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    domain_type: str  # xen, qemu, kvm, test
    os_type: str = HVM  # xen (PV), hvm, xenpvh
    memory_mib: int = 512
    max_memory_mib: int | None = None
    vcpus: int = 1
    max_vcpus: int | None = None
    arch: str = "x86_64"
    uuid: str | None = None
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    bootloader: str = ""  # pygrub for PV guests booting their own kernel
    firmware: str = "bios"  # bios or efi (HVM): libvirt picks the OVMF build the host has
    boot: tuple[str, ...] = ("hd",)
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    vnc: bool = False
    description: str = ""
    on_crash: str = "restart"
    extra_features: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class DiskLayout:
    """How a guest's disks are named and attached on one driver."""

    prefix: str  # xvd, hd, vd
    bus: str  # of its disks
    cdrom_bus: str

    def names(self) -> list[str]:
        """The disk names in order: xvda, xvdb … xvdz."""
        return [f"{self.prefix}{letter}" for letter in "abcdefghijklmnopqrstuvwxyz"]


def disk_layout(domain_type: str, os_type: str) -> DiskLayout:
    """The disk names and buses for the driver (domain type) and guest type."""
    if os_type != HVM:  # PV and PVH exist only on Xen (or the demo pretending to be)
        return DiskLayout("xvd", "xen", "xen")
    if domain_type == "xen":  # emulated disks: no PV drivers assumed in an HVM guest
        return DiskLayout("hd", "ide", "ide")
    return DiskLayout("vd", "virtio", "ide")


def validate(spec: DomainSpec) -> None:
    if not NAME_RE.match(spec.name):
        raise SpecError(
            "Guest names are 1 to 64 characters: letters, digits, and _ . + - "
            "(not first)."
        )
    if spec.os_type not in (PV, HVM, PVH):
        raise SpecError(f"Unknown guest type '{spec.os_type}': use xen (PV), hvm or xenpvh.")
    if spec.firmware not in ("bios", "efi"):
        raise SpecError(f"Unknown firmware '{spec.firmware}': use bios or efi.")
    if spec.firmware == "efi" and spec.os_type != HVM:
        raise SpecError("UEFI firmware needs an HVM guest: PV and PVH guests boot their "
                        "kernel directly or through pygrub.")
    if spec.os_type in (PV, PVH) and spec.domain_type not in ("xen", "test"):
        raise SpecError("PV and PVH guests need a Xen host.")
    if not 1 <= spec.vcpus <= (spec.max_vcpus or spec.vcpus) <= 512:
        raise SpecError("vCPUs must be between 1 and 512 and not above the maximum.")
    maximum = spec.max_memory_mib or spec.memory_mib
    if not 16 <= spec.memory_mib <= maximum <= 16 * 1024 * 1024:
        raise SpecError("Memory must be between 16 MiB and 16 TiB and not above the maximum.")
    if spec.os_type == PVH and not spec.kernel:
        raise SpecError("A PVH guest needs a kernel (direct kernel boot).")
    for nic in spec.nics:
        if not MAC_RE.match(nic.mac):
            raise SpecError(f"'{nic.mac}' is not a MAC address like 00:16:3e:12:34:56.")
        if bool(nic.bridge) == bool(nic.network):
            raise SpecError("Each network interface needs either a bridge or a network.")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _os(root: ET.Element, spec: DomainSpec) -> None:
    # libvirt's firmware auto-selection (QEMU and libxl drivers); the test driver has no
    # firmware to select.
    efi = spec.firmware == "efi" and spec.domain_type != "test"
    os_el = _sub(root, "os", **({"firmware": "efi"} if efi else {}))
    type_attrs = {"arch": spec.arch}
    if spec.domain_type == "xen":
        type_attrs["machine"] = XEN_MACHINES[spec.os_type]
    type_text = "linux" if spec.os_type == PV and spec.domain_type == "xen" else spec.os_type
    _sub(os_el, "type", type_text, **type_attrs)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    elif spec.os_type == HVM:
        for device in spec.boot:
            _sub(os_el, "boot", dev=device)


def device_xml(device: DiskSpec | NicSpec) -> str:
    """One <disk> or <interface> element, for hot-plugging."""
    holder = ET.Element("devices")
    if isinstance(device, DiskSpec):
        _disk(holder, device)
    else:
        if not MAC_RE.match(device.mac):
            raise SpecError(f"'{device.mac}' is not a MAC address like 00:16:3e:12:34:56.")
        _nic(holder, device)
    return ET.tostring(holder[0], encoding="unicode")


def _disk_driver(disk: DiskSpec) -> str:
    """Xen's blkback ("phy", a loop device for a file) serves raw disks of PV guests, as in
    libvirt's own Xen XML; "qemu" (qdisk) needs the qemu-system-xen package on the host,
    which a PV-only Debian dom0 may lack."""
    return "phy" if disk.bus == "xen" and disk.format == "raw" else "qemu"


def _disk(devices: ET.Element, disk: DiskSpec) -> None:
    kind = "block" if disk.block else "file"
    element = _sub(devices, "disk", type=kind, device=disk.device)
    _sub(element, "driver", name=_disk_driver(disk), type=disk.format)
    _sub(element, "source", **{("dev" if disk.block else "file"): disk.source})
    _sub(element, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly or disk.device == "cdrom":
        _sub(element, "readonly")
    if disk.shareable:
        _sub(element, "shareable")


def _nic(devices: ET.Element, nic: NicSpec) -> None:
    element = _sub(devices, "interface", type="bridge" if nic.bridge else "network")
    _sub(element, "mac", address=nic.mac)
    if nic.bridge:
        _sub(element, "source", bridge=nic.bridge)
    else:
        _sub(element, "source", network=nic.network)
    if nic.model:
        _sub(element, "model", type=nic.model)


def _console(devices: ET.Element, spec: DomainSpec) -> None:
    if spec.domain_type == "xen" and spec.os_type in (PV, PVH):
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="xen", port="0")
        return
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")


def build_domain_xml(spec: DomainSpec) -> str:
    validate(spec)
    root = ET.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    if spec.uuid:
        _sub(root, "uuid", spec.uuid)
    if spec.description:
        _sub(root, "description", spec.description)
    _sub(root, "memory", str((spec.max_memory_mib or spec.memory_mib) * 1024), unit="KiB")
    _sub(root, "currentMemory", str(spec.memory_mib * 1024), unit="KiB")
    vcpu_attrs = {"placement": "static"}
    if spec.max_vcpus and spec.max_vcpus > spec.vcpus:
        vcpu_attrs["current"] = str(spec.vcpus)
    _sub(root, "vcpu", str(spec.max_vcpus or spec.vcpus), **vcpu_attrs)
    if spec.bootloader and spec.os_type == PV:
        _sub(root, "bootloader", spec.bootloader)
    _os(root, spec)
    if spec.os_type == HVM:
        features = _sub(root, "features")
        for name in ("acpi", "apic", "pae", *spec.extra_features):
            _sub(features, name)
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", spec.on_crash)
    devices = _sub(root, "devices")
    for disk in spec.disks:
        _disk(devices, disk)
    for nic in spec.nics:
        _nic(devices, nic)
    _console(devices, spec)
    if spec.vnc:
        _sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    if spec.domain_type == "xen":
        _sub(devices, "memballoon", model="xen")
    return ET.tostring(root, encoding="unicode")


# --- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskInfo:
    target: str
    device: str
    source: str
    format: str
    bus: str
    readonly: bool
    shareable: bool


@dataclass(frozen=True)
class NicInfo:
    mac: str
    source: str  # bridge or network name
    kind: str  # bridge, network, …
    model: str


@dataclass(frozen=True)
class DomainXmlInfo:
    name: str
    uuid: str
    domain_type: str
    os_type: str  # xen (PV), hvm, xenpvh
    arch: str
    memory_mib: int
    max_memory_mib: int
    vcpus: int
    max_vcpus: int
    kernel: str
    disks: tuple[DiskInfo, ...]
    nics: tuple[NicInfo, ...]
    vnc_port: int | None
    description: str
    # Where the VNC server listens: None without VNC graphics; else the address ('' when
    # libvirt's default applies), or the socket's path (starting with '/') for a UNIX socket.
    vnc_listen: str | None = None


def _kib_to_mib(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    factor = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1024 * 1024, "G": 1024 * 1024}
    return int(element.text) * factor.get(element.get("unit", "KiB"), 1) // 1024


def _os_type(root: ET.Element) -> str:
    type_el = root.find("os/type")
    text = (type_el.text or "").strip() if type_el is not None else ""
    machine = type_el.get("machine", "") if type_el is not None else ""
    if text in ("linux", "xen") or machine == "xenpv":
        return PV  # libvirt reports Xen PV guests as os type 'linux'
    if text == "xenpvh" or machine == "xenpvh":
        return PVH
    return text or "unknown"


def parse_domain_xml(xml: str) -> DomainXmlInfo:
    root = SafeET.fromstring(xml)
    disks = tuple(
        DiskInfo(
            target=_attr(disk, "target", "dev"),
            device=disk.get("device", "disk"),
            source=_disk_source(disk),
            format=_attr(disk, "driver", "type"),
            bus=_attr(disk, "target", "bus"),
            readonly=disk.find("readonly") is not None,
            shareable=disk.find("shareable") is not None,
        )
        for disk in root.findall("devices/disk")
    )
    nics = tuple(
        NicInfo(
            mac=_attr(nic, "mac", "address"),
            source=_nic_source(nic),
            kind=nic.get("type", ""),
            model=_attr(nic, "model", "type"),
        )
        for nic in root.findall("devices/interface")
    )
    vcpu = root.find("vcpu")
    max_vcpus = int(vcpu.text) if vcpu is not None and vcpu.text else 1
    vcpus = int(vcpu.get("current", max_vcpus)) if vcpu is not None else 1
    graphics = root.find("devices/graphics[@type='vnc']")
    vnc_port = int(graphics.get("port", "-1")) if graphics is not None else None
    vnc_listen = _vnc_listen(graphics) if graphics is not None else None
    type_el = root.find("os/type")
    return DomainXmlInfo(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        domain_type=root.get("type", ""),
        os_type=_os_type(root),
        arch=type_el.get("arch", "") if type_el is not None else "",
        memory_mib=_kib_to_mib(root.find("currentMemory")) or _kib_to_mib(root.find("memory")),
        max_memory_mib=_kib_to_mib(root.find("memory")),
        vcpus=vcpus,
        max_vcpus=max_vcpus,
        kernel=root.findtext("os/kernel", ""),
        disks=disks,
        nics=nics,
        vnc_port=vnc_port if vnc_port is None or vnc_port > 0 else None,
        description=root.findtext("description", ""),
        vnc_listen=vnc_listen,
    )


def _vnc_listen(graphics: ET.Element) -> str:
    """The listen address of a <graphics> element: its `listen` attribute, else the first
    <listen> child (address/network: its address; socket: its path; none: '')."""
    if graphics.get("listen"):
        return graphics.get("listen", "")
    listen = graphics.find("listen")
    if listen is None:
        return graphics.get("socket", "")
    kind = listen.get("type", "address")
    if kind == "socket":
        return listen.get("socket", "")
    if kind in ("address", "network"):
        return listen.get("address", "")
    return ""


def _attr(parent: ET.Element, path: str, key: str) -> str:
    element = parent.find(path)
    return element.get(key, "") if element is not None else ""


def _disk_source(disk: ET.Element) -> str:
    source = disk.find("source")
    if source is None:
        return ""
    for key in ("file", "dev", "volume", "name"):
        if source.get(key):
            return source.get(key, "")
    return ""


def _nic_source(nic: ET.Element) -> str:
    source = nic.find("source")
    if source is None:
        return ""
    return source.get("bridge") or source.get("network") or source.get("dev") or ""
