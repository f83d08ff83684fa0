"""Guests (libvirt domains): inventory, definition and lifecycle.

Every function takes the host (a ``VirtTarget``) and the domain's UUID and returns plain
dataclasses or raises the app's VirtError family with a message naming the guest and the host.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from .connection import get_connection
from .domain_xml import (
    DiskInfo,
    DomainSpec,
    DomainXmlInfo,
    build_domain_xml,
    parse_domain_xml,
)
from .errors import VirtOperationError, host_label, translate
from .target import VirtTarget

T = TypeVar("T")

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
DOM0_NAME = "Domain-0"


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    state: str
    id: int | None
    persistent: bool
    autostart: bool
    is_privileged: bool  # Xen's Domain-0
    xml: DomainXmlInfo
    managed_save: bool = False  # a managed-save image exists: start resumes from it
    # Disks of the persistent definition a running guest does not use yet (attached for
    # its next boot where the hypervisor could not hot-plug them).
    next_boot_disks: tuple[DiskInfo, ...] = ()


@contextmanager
def _errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, action=action) from exc


def _conn(target: VirtTarget) -> libvirt.virConnect:
    return get_connection(target)


def _lookup(target: VirtTarget, uuid: str) -> libvirt.virDomain:
    with _errors(target.uri, f"find guest {uuid}"):
        return _conn(target).lookupByUUIDString(uuid)


@dataclass(frozen=True)
class _HostFacts:
    """What one bulk call per fact says about every domain of a host (by UUID), so that
    listing a host costs a handful of calls plus one XML read per domain instead of
    a round trip per fact per domain."""

    states: dict[str, int]
    autostart: frozenset[str]
    persistent: frozenset[str]
    managed_save: frozenset[str]


def _uuids(conn: libvirt.virConnect, flags: int) -> frozenset[str]:
    return frozenset(dom.UUIDString() for dom in conn.listAllDomains(flags))


def _host_facts(conn: libvirt.virConnect) -> _HostFacts | None:
    """None where the driver lacks the bulk calls (then each domain is asked)."""
    try:
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
        return _HostFacts(
            states={dom.UUIDString(): int(values.get("state.state", 0))
                    for dom, values in stats},
            autostart=_uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
            persistent=_uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT),
            managed_save=_uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE),
        )
    except libvirt.libvirtError:
        return None


def _describe(dom: libvirt.virDomain, facts: _HostFacts | None = None) -> DomainInfo:
    uuid = dom.UUIDString()
    if facts is not None and uuid in facts.states:
        state = facts.states[uuid]
        autostart, persistent = uuid in facts.autostart, uuid in facts.persistent
        managed = uuid in facts.managed_save
    else:
        state, _reason = dom.state()
        persistent = bool(dom.isPersistent())
        try:
            autostart = bool(dom.autostart())
        except libvirt.libvirtError:
            autostart = False
        try:
            managed = bool(dom.hasManagedSaveImage(0))
        except libvirt.libvirtError:
            managed = False
    dom_id = dom.ID()
    xml = parse_domain_xml(dom.XMLDesc(0))
    return DomainInfo(
        next_boot_disks=_next_boot_disks(dom, xml, persistent) if dom_id >= 0 else (),
        uuid=uuid,
        name=dom.name(),
        state=STATE_NAMES.get(state, "unknown"),
        id=dom_id if dom_id >= 0 else None,
        persistent=persistent,
        autostart=autostart,
        is_privileged=dom.name() == DOM0_NAME or (dom_id == 0 and xml.domain_type == "xen"),
        xml=xml,
        managed_save=managed,
    )


def _next_boot_disks(dom: libvirt.virDomain, live: DomainXmlInfo,
                     persistent: bool) -> tuple[DiskInfo, ...]:
    if not persistent:
        return ()
    try:
        inactive = parse_domain_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError:
        return ()
    running = {disk.source for disk in live.disks}
    return tuple(disk for disk in inactive.disks if disk.source and disk.source not in running)


def list_domains(target: VirtTarget) -> list[DomainInfo]:
    with _errors(target.uri, "list guests"):
        conn = _conn(target)
        domains = conn.listAllDomains(0)
        facts = _host_facts(conn)
        return sorted((_describe(dom, facts) for dom in domains), key=lambda d: d.name)


def get_domain(target: VirtTarget, uuid: str) -> DomainInfo:
    dom = _lookup(target, uuid)
    with _errors(target.uri, f"read guest {uuid}"):
        return _describe(dom)


def define_domain(target: VirtTarget, spec: DomainSpec) -> DomainInfo:
    xml = build_domain_xml(spec)
    with _errors(target.uri, f"define guest '{spec.name}'"):
        dom = _conn(target).defineXML(xml)
        return _describe(dom)


def _act(
    target: VirtTarget, uuid: str, verb: str, call: Callable[[libvirt.virDomain], T],
) -> T:
    dom = _lookup(target, uuid)
    with _errors(target.uri, f"{verb} guest '{dom.name()}'"):
        return call(dom)


def start(target: VirtTarget, uuid: str, *, paused: bool = False) -> None:
    flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
    _act(target, uuid, "start", lambda d: d.createWithFlags(flags))


def shutdown(target: VirtTarget, uuid: str) -> None:
    _act(target, uuid, "shut down", lambda d: d.shutdown())


def reboot(target: VirtTarget, uuid: str) -> None:
    _act(target, uuid, "reboot", lambda d: d.reboot(0))


def destroy(target: VirtTarget, uuid: str) -> None:
    _act(target, uuid, "force off", lambda d: d.destroy())


def pause(target: VirtTarget, uuid: str) -> None:
    _act(target, uuid, "pause", lambda d: d.suspend())


def resume(target: VirtTarget, uuid: str) -> None:
    _act(target, uuid, "resume", lambda d: d.resume())


def check_app_path(path: str, uri: str = "") -> str:
    """A file the app itself chose for a save image (a save volume's path, the demo host's
    save folder): absolute, normalised, outside the kernel's pseudo file systems. Only app
    code calls save/restore, and never with an operator's string; this is a last guard."""
    if (not path.startswith("/") or "\0" in path or posixpath.normpath(path) != path
            or path.split("/")[1] in ("proc", "sys", "dev")):
        raise VirtOperationError(f"Refusing the save image path {path!r}: not a file the "
                                 "app manages.", uri=uri)
    return path


def _image_flags(conn: libvirt.virConnect) -> int:
    """How the driver formats the XML it writes into a save image: QEMU in its migratable
    form (without the implicit devices), libxl and the test driver as XMLDesc(0) does."""
    return libvirt.VIR_DOMAIN_XML_MIGRATABLE if conn.getType() == "QEMU" else 0


def domain_xml(target: VirtTarget, uuid: str, *, inactive: bool = False) -> str:
    """The guest's XML as its driver writes it into a save image: running, or its
    persistent definition with `inactive`."""

    def call(dom: libvirt.virDomain) -> str:
        flags = _image_flags(dom.connect())
        return str(dom.XMLDesc(flags | (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)))

    return _act(target, uuid, "read the definition of", call)


def save(target: VirtTarget, uuid: str, path: str) -> str:
    """Save memory to `path` on the host; the guest stops. Returns the domain XML it ran
    with, as the image records it."""
    check_app_path(path, target.uri)

    def call(dom: libvirt.virDomain) -> str:
        xml = dom.XMLDesc(_image_flags(dom.connect()))
        dom.save(path)
        return str(xml)

    return _act(target, uuid, "save", call)


def managed_save(target: VirtTarget, uuid: str) -> None:
    """Save memory to the host's managed location; the next start resumes from it."""
    _act(target, uuid, "save (managed)", lambda d: d.managedSave(0))


def restore(target: VirtTarget, path: str, *, dxml: str | None = None) -> None:
    """Restore the guest saved in `path`; with `dxml`, libvirt restores it with that
    definition instead of the one in the image, where the driver can (QEMU). The caller
    has checked the image's XML (hosts.virt.save_image, guests.save_images) before: libvirt
    parses it even with `dxml`, and QEMU's driver runs the emulator it names to do so."""
    check_app_path(path, target.uri)
    with _errors(target.uri, f"restore the guest saved in {path}"):
        conn = _conn(target)
        if dxml is None:
            conn.restore(path)
            return
        try:
            conn.restoreFlags(path, dxml, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED:
                raise
            conn.restore(path)  # the test and libxl drivers take no replacement XML


def set_autostart(target: VirtTarget, uuid: str, enabled: bool) -> None:
    _act(target, uuid, "change autostart of", lambda d: d.setAutostart(int(enabled)))


def undefine(target: VirtTarget, uuid: str) -> None:
    """Remove the definition with its managed save, snapshot metadata and NVRAM."""

    def call(dom: libvirt.virDomain) -> None:
        # Drivers refuse flags they do not know (the test driver: NVRAM): drop them in turn.
        for flags in UNDEFINE_FLAG_SETS:
            try:
                dom.undefineFlags(flags)
                return
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG,
                                                libvirt.VIR_ERR_NO_SUPPORT):
                    raise
        dom.undefine()

    _act(target, uuid, "delete", call)


UNDEFINE_FLAG_SETS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
)


def wait_for_state(
    target: VirtTarget, uuid: str, states: tuple[str, ...], timeout: float,
) -> str:
    """Poll until the guest is in one of `states`; returns it or raises after `timeout`."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = get_domain(target, uuid).state
        if state in states:
            return state
        time.sleep(0.2)
    raise VirtOperationError(
        f"Guest {uuid} on {host_label(target.uri)} did not reach {'/'.join(states)} within "
        f"{timeout:g} s (it is {state})."
    )


def set_memory(target: VirtTarget, uuid: str, memory_mib: int, *, live: bool) -> None:
    """Balloon to `memory_mib` now (if running) and in the persistent definition.

    Two calls, because some drivers (the test driver) refuse LIVE|CONFIG together.
    """
    kib = memory_mib * 1024

    def call(dom: libvirt.virDomain) -> None:
        if live:
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        if dom.isPersistent():
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    _act(target, uuid, "change the memory of", call)
