"""Performance counters of a host and all its guests, read in bulk: one
``getAllDomainStats`` call per host (plus the host's own CPU and memory), as plain
dataclasses of raw counters; rates are computed from two samples by the caller."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from .connection import get_connection
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


def host_counters(target: VirtTarget) -> HostCounters:
    conn = get_connection(target)
    try:
        stats = conn.getAllDomainStats(GUEST_STATS, 0)
        info = conn.getInfo()
        cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="read performance counters") from exc
    try:
        memory = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        free: int | None = int(memory.get("free", 0)) + int(memory.get("cached", 0)) + int(
            memory.get("buffers", 0))
    except libvirt.libvirtError:
        free = None
    busy = int(cpu.get("user", 0)) + int(cpu.get("kernel", 0))
    total = busy + int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0))
    return HostCounters(cpu_busy_ns=busy, cpu_total_ns=total, cpus=int(info[2]),
                        memory_total_kib=int(info[1]) * 1024, memory_free_kib=free,
                        guests=tuple(_guest(dom, values) for dom, values in stats))
