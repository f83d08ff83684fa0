"""Host capabilities: what guests a host can run (PV, HVM, PVH), on which arches and
domain types, and the host CPU, topology and memory model."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import translate
from .target import VirtTarget

HVM_UNAVAILABLE = (
    "HVM guest support is unavailable: is VT/AMD-V supported by your CPU and enabled "
    "in your BIOS?"
)


@dataclass(frozen=True)
class GuestCapability:
    os_type: str  # xen (PV), hvm, xenpvh
    arch: str
    wordsize: int
    domain_types: tuple[str, ...]  # xen, qemu, kvm, test
    machines: tuple[str, ...]
    pae: bool


@dataclass(frozen=True)
class HostCapabilities:
    arch: str
    cpu_model: str
    cpu_vendor: str
    cpu_features: tuple[str, ...]
    sockets: int
    cores: int
    threads: int
    numa_cells: int
    host_uuid: str
    guests: tuple[GuestCapability, ...]

    def guest_types(self) -> tuple[str, ...]:
        """The guest types offered (xen, hvm, xenpvh), in a stable order."""
        order = {"xen": 0, "xenpvh": 1, "hvm": 2}
        return tuple(sorted({g.os_type for g in self.guests}, key=lambda t: order.get(t, 9)))

    def supports(self, os_type: str, domain_type: str | None = None) -> bool:
        return any(
            g.os_type == os_type and (domain_type is None or domain_type in g.domain_types)
            for g in self.guests
        )

    @property
    def pae(self) -> bool:
        return any(g.pae for g in self.guests) or "pae" in self.cpu_features


def parse_capabilities(xml: str) -> HostCapabilities:
    root = SafeET.fromstring(xml)
    cpu = root.find("host/cpu")
    topology = cpu.find("topology") if cpu is not None else None
    guests = []
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is None:
            continue
        features = guest.find("features")
        guests.append(GuestCapability(
            os_type=(guest.findtext("os_type") or "").strip(),
            arch=arch.get("name", ""),
            wordsize=int(arch.findtext("wordsize") or 0),
            domain_types=tuple(d.get("type", "") for d in arch.findall("domain")),
            machines=tuple((m.text or "").strip() for m in arch.findall("machine")),
            pae=features is not None and features.find("pae") is not None,
        ))
    # Named <feature name='…'/> elements (libvirt ≥ 0.9) and the old <features><pae/>… form.
    feature_elements = [] if cpu is None else [*cpu.findall("feature"),
                                               *cpu.findall("features/*")]
    cpu_features = tuple(f.get("name") or f.tag for f in feature_elements)
    return HostCapabilities(
        arch=root.findtext("host/cpu/arch", ""),
        cpu_model=root.findtext("host/cpu/model", ""),
        cpu_vendor=root.findtext("host/cpu/vendor", ""),
        cpu_features=cpu_features,
        sockets=int(topology.get("sockets", 0)) if topology is not None else 0,
        cores=int(topology.get("cores", 0)) if topology is not None else 0,
        threads=int(topology.get("threads", 0)) if topology is not None else 0,
        numa_cells=len(root.findall("host/topology/cells/cell")),
        host_uuid=root.findtext("host/uuid", ""),
        guests=tuple(guests),
    )


def host_capabilities(target: VirtTarget) -> HostCapabilities:
    conn = get_connection(target)
    try:
        return parse_capabilities(conn.getCapabilities())
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="read the host's capabilities") from exc


@dataclass(frozen=True)
class HostResources:
    free_memory_mib: int
    max_vcpus: int  # per guest; 0 when the driver does not say


def host_resources(target: VirtTarget) -> HostResources:
    conn = get_connection(target)
    try:
        free = conn.getFreeMemory() // (1024 * 1024)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="read the host's free memory") from exc
    try:
        max_vcpus = conn.getMaxVcpus(None)
    except libvirt.libvirtError:
        max_vcpus = 0
    return HostResources(free_memory_mib=free, max_vcpus=max_vcpus)
