"""Performance counters of a host and all its guests, read in bulk: one
``getAllDomainStats`` call per host (plus the host's own CPU and memory), as plain
dataclasses of raw counters; rates are computed from two samples by the caller.

Where a driver has no bulk call or no host CPU counters (libvirt's libxl driver for Xen),
each running domain is read with the calls it has (info, block and interface stats), and
the host's busy time is the sum of its domains' CPU time, Domain-0 included (as xentop
counts it), against the wall clock times the CPUs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import libvirt

from .connection import get_connection
from .domain_xml import parse_domain_xml
from .errors import translate
from .target import VirtTarget

GUEST_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
               | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_BLOCK
               | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_VCPU)


@dataclass(frozen=True)
class GuestCounters:
    uuid: str
    cpu_time_ns: int
    vcpus: int
    memory_kib: int  # balloon: what the guest has now
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int


@dataclass(frozen=True)
class HostCounters:
    cpu_busy_ns: int  # all CPUs: user + kernel (+ iowait counts as idle)
    cpu_total_ns: int
    cpus: int
    memory_total_kib: int
    memory_free_kib: int | None  # None where the driver cannot tell
    guests: tuple[GuestCounters, ...]


def _sum(values: dict[str, object], prefix: str, count_key: str, field: str) -> int:
    count = int(values.get(count_key, 0) or 0)
    return sum(int(values.get(f"{prefix}.{i}.{field}", 0) or 0) for i in range(count))


def _guest(dom: libvirt.virDomain, values: dict[str, object]) -> GuestCounters:
    return GuestCounters(
        uuid=dom.UUIDString(),
        cpu_time_ns=int(values.get("cpu.time", 0) or 0),
        vcpus=int(values.get("vcpu.current", 0) or 0),
        memory_kib=int(values.get("balloon.current", 0) or 0),
        disk_read_bytes=_sum(values, "block", "block.count", "rd.bytes"),
        disk_write_bytes=_sum(values, "block", "block.count", "wr.bytes"),
        net_rx_bytes=_sum(values, "net", "net.count", "rx.bytes"),
        net_tx_bytes=_sum(values, "net", "net.count", "tx.bytes"),
    )


def _unsupported(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT


def device_counters(read: Callable[[str], Sequence[int]], device: str) -> Sequence[int]:
    """One device's counters, zeros where the driver cannot count it (-1 means unknown)."""
    try:
        return [max(0, int(value)) for value in read(device)]
    except libvirt.libvirtError:
        return [0] * 8


def guest_one_by_one(dom: libvirt.virDomain) -> GuestCounters:
    """A running domain's counters from the calls every driver has."""
    _state, _max_kib, memory_kib, vcpus, cpu_time_ns = dom.info()
    layout = parse_domain_xml(dom.XMLDesc(0))
    disks = [device_counters(dom.blockStats, disk.target) for disk in layout.disks
             if disk.device == "disk" and disk.target]
    nics = [device_counters(dom.interfaceStats, nic.mac) for nic in layout.nics if nic.mac]
    return GuestCounters(
        uuid=dom.UUIDString(), cpu_time_ns=int(cpu_time_ns), vcpus=int(vcpus),
        memory_kib=int(memory_kib),
        disk_read_bytes=sum(d[1] for d in disks), disk_write_bytes=sum(d[3] for d in disks),
        net_rx_bytes=sum(n[0] for n in nics), net_tx_bytes=sum(n[4] for n in nics),
    )


def _guests(conn: libvirt.virConnect) -> tuple[GuestCounters, ...]:
    try:
        stats = conn.getAllDomainStats(GUEST_STATS, 0)
    except libvirt.libvirtError as exc:
        if not _unsupported(exc):
            raise
    else:
        return tuple(_guest(dom, values) for dom, values in stats)
    found = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            found.append(guest_one_by_one(dom))
        except libvirt.libvirtError:
            continue  # gone between the listing and the read
    return tuple(found)


def host_cpu(conn: libvirt.virConnect, guests: Sequence[GuestCounters],
             cpus: int) -> tuple[int, int]:
    """(busy, total) nanoseconds of all the host's CPUs."""
    try:
        cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
    except libvirt.libvirtError as exc:
        if not _unsupported(exc):
            raise
        return sum(g.cpu_time_ns for g in guests), time.time_ns() * cpus
    busy = int(cpu.get("user", 0)) + int(cpu.get("kernel", 0))
    return busy, busy + int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0))


def _free_memory_kib(conn: libvirt.virConnect) -> int | None:
    try:
        memory = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        return int(memory.get("free", 0)) + int(memory.get("cached", 0)) + int(
            memory.get("buffers", 0))
    except libvirt.libvirtError:
        pass
    try:
        return int(conn.getFreeMemory()) // 1024  # what the hypervisor has not given out
    except libvirt.libvirtError:
        return None


def host_counters(target: VirtTarget) -> HostCounters:
    conn = get_connection(target)
    try:
        info = conn.getInfo()
        guests = _guests(conn)
        busy, total = host_cpu(conn, guests, int(info[2]))
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="read performance counters") from exc
    return HostCounters(cpu_busy_ns=busy, cpu_total_ns=total, cpus=int(info[2]),
                        memory_total_kib=int(info[1]) * 1024,
                        memory_free_kib=_free_memory_kib(conn), guests=guests)
