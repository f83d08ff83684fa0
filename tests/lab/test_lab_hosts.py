"""The lab itself: independent libvirt hosts on one machine, live migration between
them, shared storage, and the ``python -m lab`` command line."""

from __future__ import annotations

import io
import os
import signal
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
import pytest
from defusedxml import ElementTree as SafeET

from hosts.models import Host
from hosts.virt import VirtTarget
from lab import preflight, procs
from lab.cli import run
from lab.daemons import LabHost, lab_down, lab_status, lab_up
from lab.paths import lab_dir

MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    pass


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


@contextmanager
def connect(uri: str) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        conn.close()


def bare_guest_xml(name: str, memory_mib: int = 64) -> str:
    """A TCG guest with no disk, no NIC and no kernel: it sits in SeaBIOS."""
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = "1"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "graphics", type="vnc", port="-1", listen="127.0.0.1")
    return ET.tostring(domain, encoding="unicode")


def wait_running(dom: libvirt.virDomain, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        assert time.monotonic() < deadline, f"{dom.name()} not running: {dom.state()}"
        time.sleep(0.1)


def remove_guest(uri: str, name: str) -> None:
    with connect(uri) as conn:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefine()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- (a) a lab of its own: up, status, down, nothing left ---------------------------------


def test_lab_down_leaves_no_process_and_no_mount(tmp_path: Path) -> None:
    problems = preflight.problems()
    if problems:
        pytest.skip("lab hosts cannot run on this machine: " + "; ".join(problems))
    root = tmp_path / "lab"
    marker = str(root.resolve())
    watched: list[int] = []
    namespace = ""
    try:
        hosts = lab_up(1, root=root)
        assert [host.name for host in hosts] == ["lab1"]
        host = hosts[0]
        assert host.running and host.pid and host.root.is_relative_to(root.resolve())
        assert [h.running for h in lab_status(root=root)] == [True]
        namespace = procs.mount_namespace(host.pid)
        assert namespace and namespace != procs.own_mount_namespace()
        assert marker in (Path("/proc") / str(host.pid) / "mountinfo").read_text()

        with connect(host.uri) as conn:  # a running guest too: lab_down must stop it
            guest = conn.createXML(bare_guest_xml(unique("leftover")), 0)
            wait_running(guest)
        qemu_pids = [p for p in procs.pids_in_mount_namespace(namespace) if p != host.pid]
        watched = [host.pid, *qemu_pids]
        assert any("qemu-system" in " ".join(procs.cmdline(p)) for p in qemu_pids)
    finally:
        lab_down(root=root)

    assert [h.running for h in lab_status(root=root)] == [False]
    assert [pid for pid in watched if procs.is_alive(pid)] == []
    assert procs.pids_mentioning(marker) == []
    assert procs.pids_in_mount_namespace(namespace) == []
    assert marker not in Path("/proc/self/mountinfo").read_text()
    run_dir = root / "hosts" / "lab1" / "run"
    assert list(run_dir.iterdir()) == []  # no pid files, no sockets


def test_lab_down_kills_guests_of_a_dead_libvirtd(tmp_path: Path) -> None:
    """A guest whose libvirtd died cannot be destroyed through libvirt: lab_down finds
    its QEMU in the host's mount namespace and kills it."""
    problems = preflight.problems()
    if problems:
        pytest.skip("lab hosts cannot run on this machine: " + "; ".join(problems))
    root = tmp_path / "lab"
    qemu_pids: list[int] = []
    try:
        (host,) = lab_up(1, root=root)
        assert host.pid
        with connect(host.uri) as conn:
            wait_running(conn.createXML(bare_guest_xml(unique("orphan")), 0))
        namespace = procs.mount_namespace(host.pid)
        qemu_pids = [
            pid
            for pid in procs.pids_in_mount_namespace(namespace)
            if "qemu-system" in " ".join(procs.cmdline(pid))
        ]
        assert len(qemu_pids) == 1
        os.kill(host.pid, signal.SIGKILL)
        assert procs.wait_gone([host.pid], 30.0) == []
        assert procs.is_alive(qemu_pids[0])  # libvirtd gone, its guest still runs
        assert [h.running for h in lab_status(root=root)] == [False]
    finally:
        lab_down(root=root)
    assert [pid for pid in qemu_pids if procs.is_alive(pid)] == []
    assert procs.pids_mentioning(str(root.resolve())) == []


# --- (b) distinct machines -----------------------------------------------------------------


def test_lab_hosts_are_distinct_machines(lab_hosts: list[LabHost]) -> None:
    seen = []
    for host in lab_hosts:
        with connect(host.uri) as conn:
            caps = SafeET.fromstring(conn.getCapabilities())
            seen.append((conn.getHostname(), caps.findtext("host/uuid")))
            assert {d.get("type") for d in caps.iter("domain")} == {"qemu"}  # TCG only
        assert seen[-1] == (host.hostname, host.host_uuid)
    hostnames, uuids = zip(*seen, strict=True)
    assert len(set(hostnames)) == len(lab_hosts)
    assert len(set(uuids)) == len(lab_hosts)
    assert len({host.port for host in lab_hosts}) == len(lab_hosts)
    low_a, high_a = lab_hosts[0].migration_ports
    low_b, high_b = lab_hosts[1].migration_ports
    assert high_a < low_b or high_b < low_a


# --- (c) live peer-to-peer migration -------------------------------------------------------


def test_live_migration_between_lab_hosts(lab_hosts: list[LabHost]) -> None:
    source, target = lab_hosts[0], lab_hosts[1]
    name = unique("migrant")
    try:
        with connect(source.uri) as src:
            dom = src.defineXML(bare_guest_xml(name, memory_mib=96))
            dom.create()
            wait_running(dom)
            guest_uuid = dom.UUIDString()
            dom.migrateToURI3(target.uri, {}, MIGRATE_FLAGS)
            with pytest.raises(libvirt.libvirtError):
                src.lookupByName(name)  # undefined on the source
        with connect(target.uri) as dst:
            moved = dst.lookupByName(name)
            assert moved.UUIDString() == guest_uuid
            assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
            assert moved.isPersistent()
    finally:
        remove_guest(source.uri, name)
        remove_guest(target.uri, name)


# --- (d) shared storage --------------------------------------------------------------------


def _pool_path(conn: libvirt.virConnect, pool: str) -> str:
    xml = conn.storagePoolLookupByName(pool).XMLDesc(0)
    return SafeET.fromstring(xml).findtext("target/path") or ""


def _volume_xml(name: str) -> str:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="MiB").text = "1"
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type="raw")
    return ET.tostring(volume, encoding="unicode")


def test_shared_pool_is_shared(lab_hosts: list[LabHost]) -> None:
    a, b = lab_hosts[0], lab_hosts[1]
    name = unique("shared") + ".raw"
    with connect(a.uri) as conn_a, connect(b.uri) as conn_b:
        shared = {_pool_path(conn, "lab-shared") for conn in (conn_a, conn_b)}
        assert shared == {str(lab_dir() / "shared")}
        local = {_pool_path(conn, "local") for conn in (conn_a, conn_b)}
        assert local == {str(a.root / "images"), str(b.root / "images")}
        for conn in (conn_a, conn_b):
            for pool_name in ("lab-shared", "local"):
                pool = conn.storagePoolLookupByName(pool_name)
                assert pool.isActive() and pool.autostart()

        pool_a = conn_a.storagePoolLookupByName("lab-shared")
        volume = pool_a.createXML(_volume_xml(name), 0)
        try:
            pool_b = conn_b.storagePoolLookupByName("lab-shared")
            pool_b.refresh(0)
            seen = pool_b.storageVolLookupByName(name)
            assert seen.path() == volume.path()
            assert seen.info()[1] == 1024 * 1024
        finally:
            volume.delete(0)


# --- (e) python -m lab ---------------------------------------------------------------------


def test_lab_command_status_and_register(lab_hosts: list[LabHost], db: Any) -> None:
    out = io.StringIO()
    assert run(["status"], stdout=out) == 0
    for host in lab_hosts:
        assert host.uri in out.getvalue()
        assert str(host.pid) in out.getvalue()

    out = io.StringIO()
    assert run(["up", "--hosts", str(len(lab_hosts)), "--register"], stdout=out) == 0
    rows = Host.objects.filter(uri__in=[host.uri for host in lab_hosts])
    assert sorted(rows.values_list("name", "is_lab", "allow_insecure_transport", "files_local",
                                   "hostname")) == [
        (host.name, True, True, True, host.hostname) for host in lab_hosts
    ]
    assert [h.pid for h in lab_status()][: len(lab_hosts)] == [h.pid for h in lab_hosts]
    # Registered hosts show their inventory; the lab's shared pool is known to be shared.
    for row in rows:
        pools = {pool.name: pool for pool in row.pools.all()}
        assert pools["lab-shared"].shared and not pools["local"].shared
        assert pools["lab-shared"].active

    out = io.StringIO()  # a second registration skips what is enrolled
    assert run(["up", "--hosts", str(len(lab_hosts)), "--register"], stdout=out) == 0
    assert out.getvalue().count("enrolled already") == len(lab_hosts)
    assert Host.objects.filter(is_lab=True).count() == len(lab_hosts)


def test_lab_offers_kvm_only_where_it_really_boots_linux(lab_hosts: list[LabHost]) -> None:
    """/dev/kvm is no proof of hardware virtualisation: the lab probes before offering it."""
    from hosts.virt.capabilities import host_capabilities
    from lab.kvmprobe import kvm_boots_linux

    caps = host_capabilities(VirtTarget(lab_hosts[0].uri, allow_insecure=True))
    assert caps.supports("hvm", "qemu")
    assert caps.supports("hvm", "kvm") == kvm_boots_linux()
