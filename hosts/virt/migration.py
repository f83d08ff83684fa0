"""Live and cold migration of a domain between hosts (peer-to-peer), its job statistics,
the knobs that can be turned while it runs, and CPU comparison for the preflight.

Drivers differ: QEMU reports data counters and can abort; Xen's libxl driver knows only
LIVE, PEER2PEER, TUNNELLED, PERSIST_DEST, UNDEFINE_SOURCE and PAUSED, reports elapsed
time only and cannot abort (``features_for`` says which is which).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .domains import _act, _lookup
from .errors import VirtError, translate
from .target import VirtTarget


@dataclass(frozen=True)
class MigrationFeatures:
    """What a driver can do during a migration (the dialog hides the rest)."""

    supported: bool
    max_downtime: bool
    bandwidth: bool
    auto_converge: bool
    postcopy: bool
    block_copy: bool
    abort: bool
    data_counters: bool
    offline: bool


_QEMU = MigrationFeatures(supported=True, max_downtime=True, bandwidth=True, auto_converge=True,
                          postcopy=True, block_copy=True, abort=True, data_counters=True,
                          offline=True)
_XEN = MigrationFeatures(supported=True, max_downtime=False, bandwidth=False, auto_converge=False,
                         postcopy=False, block_copy=False, abort=False, data_counters=False,
                         offline=False)
_NONE = MigrationFeatures(supported=False, max_downtime=False, bandwidth=False, auto_converge=False,
                          postcopy=False, block_copy=False, abort=False, data_counters=False,
                          offline=False)


def features_for(hypervisor_type: str) -> MigrationFeatures:
    """By the driver name libvirt reports (``getType()``: QEMU, Xen, Test…)."""
    return {"QEMU": _QEMU, "Xen": _XEN}.get(hypervisor_type, _NONE)


@dataclass(frozen=True)
class MigrationRequest:
    target_uri: str  # as the *source* libvirtd reaches the target (peer-to-peer)
    live: bool = True
    bandwidth_mib: int | None = None  # MiB/s
    auto_converge: bool = False
    postcopy: bool = False
    block_copy: bool = False  # copy non-shared disks (whole disks)
    offline: bool = False  # move the definition of a shut-off guest
    # Skip libvirt's own shared-storage test: only where the app verified the storage and
    # libvirt cannot see it (the lab's shared directory stands in for NFS).
    unsafe: bool = False


def migration_flags(request: MigrationRequest) -> int:
    flags = (libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    if request.unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if request.offline:
        return flags | libvirt.VIR_MIGRATE_OFFLINE
    if request.live:
        flags |= libvirt.VIR_MIGRATE_LIVE
    if request.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if request.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if request.block_copy:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    return flags


def migrate(target: VirtTarget, uuid: str, request: MigrationRequest) -> None:
    """Migrate and wait until it finished (run it in a thread to watch its progress)."""
    params: dict[str, Any] = {}
    if request.bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(request.bandwidth_mib)
    flags = migration_flags(request)
    _act(target, uuid, "migrate",
         lambda dom: dom.migrateToURI3(request.target_uri, params, flags))


@dataclass(frozen=True)
class JobStats:
    active: bool
    elapsed_ms: int
    data_total: int | None
    data_processed: int | None
    data_remaining: int | None
    dirty_rate_pages: int | None  # pages per second
    page_size: int | None
    iteration: int | None
    memory_bps: int | None
    downtime_ms: int | None

    @property
    def dirty_rate_bps(self) -> int | None:
        if self.dirty_rate_pages is None:
            return None
        return self.dirty_rate_pages * (self.page_size or 4096)


def _stats(raw: dict[str, Any]) -> JobStats:
    def get(key: str) -> int | None:
        value = raw.get(key)
        return int(value) if value is not None else None

    job_type = raw.get("type", libvirt.VIR_DOMAIN_JOB_NONE)
    return JobStats(
        active=job_type in (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED),
        elapsed_ms=get(libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED) or 0,
        data_total=get(libvirt.VIR_DOMAIN_JOB_DATA_TOTAL),
        data_processed=get(libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED),
        data_remaining=get(libvirt.VIR_DOMAIN_JOB_DATA_REMAINING),
        dirty_rate_pages=get(libvirt.VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE),
        page_size=get(libvirt.VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE),
        iteration=get(libvirt.VIR_DOMAIN_JOB_MEMORY_ITERATION),
        memory_bps=get(libvirt.VIR_DOMAIN_JOB_MEMORY_BPS),
        downtime_ms=get(libvirt.VIR_DOMAIN_JOB_DOWNTIME),
    )


def job_stats(target: VirtTarget, uuid: str, *, completed: bool = False) -> JobStats | None:
    """The running job's counters, or (``completed``) the last finished job's.

    None where the driver keeps no statistics or the domain is gone.
    """
    try:
        dom = _lookup(target, uuid)
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0
        return _stats(dom.jobStats(flags))
    except (libvirt.libvirtError, VirtError):  # no statistics, or the domain left the host
        return None


def set_max_downtime(target: VirtTarget, uuid: str, milliseconds: int) -> None:
    _act(target, uuid, "set the migration downtime of",
         lambda dom: dom.migrateSetMaxDowntime(int(milliseconds), 0))


def max_downtime(target: VirtTarget, uuid: str) -> int:
    """The domain's migration downtime limit in milliseconds (also outside a migration)."""
    return int(_act(target, uuid, "read the migration downtime of",
                    lambda dom: dom.migrateGetMaxDowntime(0)))


def abort(target: VirtTarget, uuid: str) -> None:
    _act(target, uuid, "abort the migration of", lambda dom: dom.abortJob())


# --- offline migration: the definition travels separately from the saved memory ---------


def export_definition(target: VirtTarget, uuid: str) -> str:
    """The guest's persistent definition in the form meant for another host."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE | \
        libvirt.VIR_DOMAIN_XML_MIGRATABLE
    return _act(target, uuid, "export the definition of", lambda dom: dom.XMLDesc(flags))


def define_from_xml(target: VirtTarget, xml: str) -> None:
    conn = get_connection(target)
    try:
        conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="define the migrated guest") from exc


# --- CPU comparison for the preflight -----------------------------------------------------

CPU_IDENTICAL_OR_SUPERSET = (libvirt.VIR_CPU_COMPARE_IDENTICAL, libvirt.VIR_CPU_COMPARE_SUPERSET)


@dataclass(frozen=True)
class GuestCpu:
    xml: str  # the <cpu> element
    arch: str
    machine: str
    virt_type: str  # qemu, kvm, xen


def guest_cpu(target: VirtTarget, uuid: str) -> GuestCpu | None:
    """The guest's CPU definition to compare against a target (see below)."""
    xml = _act(target, uuid, "read the CPU of", lambda dom: dom.XMLDesc(0))
    return guest_cpu_of(xml)


def guest_cpu_of(domain_xml: str) -> GuestCpu | None:
    """The guest's ``<cpu>`` when it names a model (custom/host-model), else None: a guest
    without a CPU model runs the hypervisor's default and needs no comparison."""
    root = SafeET.fromstring(domain_xml)
    cpu = root.find("cpu")
    if cpu is None or cpu.find("model") is None or cpu.get("mode") == "host-passthrough":
        return None
    for numa in cpu.findall("numa"):  # topology, not a CPU feature: the comparison rejects it
        cpu.remove(numa)
    os_type = root.find("os/type")
    return GuestCpu(
        xml=ET.tostring(cpu, encoding="unicode"),
        arch=os_type.get("arch", "") if os_type is not None else "",
        machine=os_type.get("machine", "") if os_type is not None else "",
        virt_type=root.get("type", ""),
    )


def compare_cpu(target: VirtTarget, cpu: GuestCpu) -> bool | None:
    """Whether the target's hypervisor can give the guest its CPU; None when the driver
    cannot tell. Asks the hypervisor (what it can emulate or pass through), falling back to
    the host CPU comparison for drivers without that call."""
    conn = get_connection(target)
    calls = (
        lambda: conn.compareHypervisorCPU(None, cpu.arch or None, cpu.machine or None,
                                          cpu.virt_type or None, cpu.xml, 0),
        lambda: conn.compareCPU(cpu.xml, 0),
    )
    for call in calls:
        try:
            return call() in CPU_IDENTICAL_OR_SUPERSET
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT,
                                            libvirt.VIR_ERR_OPERATION_INVALID):
                raise translate(exc, target.uri, action="compare the guest's CPU") from exc
    return None
